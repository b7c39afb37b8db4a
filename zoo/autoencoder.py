"""`autoencoder`: a convolutional denoising autoencoder, and the conv blocks the generative zoo shares.

The autoencoder squeezes a 28x28 image through a `code_dim`-float code (compression) and is trained
on (noisy, clean) pairs (denoising): the image_generation task adds Gaussian noise of the recipe's
`noise_stddev` to the inputs. `downsampler` and `upsampler` are also the VAE's and the GANs' bodies.

Generative models declare `SIGNATURES` (served name -> kind); the image_generation task builds one
serving signature per entry from the model's `encode`, `reconstruct` or `decode` methods.
"""
from __future__ import annotations

import keras
from keras import layers

from zoo.registry import register_model

IMAGE_HPARAMS = {"image_size": 28, "channels": 1}
IMAGE_INPUT = {"image": {"shape": [28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]}}


def downsampler(image_shape: tuple[int, int, int], filters: int, activation: str, name: str) -> keras.Model:
    """Two stride-2 3x3 convolutions (H -> H/4; `filters`, then twice as many), flattened."""
    return keras.Sequential([
        keras.Input(image_shape),
        layers.Conv2D(filters, 3, strides=2, padding="same", activation=activation),
        layers.Conv2D(2 * filters, 3, strides=2, padding="same", activation=activation),
        layers.Flatten(),
    ], name=name)


def upsampler(input_dim: int, image_shape: tuple[int, int, int], filters: int, activation: str,
              output_activation: str | None, name: str) -> keras.Model:
    """Dense to an H/4 grid of 2*`filters` channels, two stride-2 transposed convolutions, a 3x3 conv to the image."""
    height, width, channels = image_shape
    if height % 4 or width % 4:
        raise ValueError(f"image size must be a multiple of 4 (two stride-2 stages), got {height}x{width}")
    return keras.Sequential([
        keras.Input((input_dim,)),
        layers.Dense(height // 4 * width // 4 * 2 * filters, activation=activation),
        layers.Reshape((height // 4, width // 4, 2 * filters)),
        layers.Conv2DTranspose(2 * filters, 4, strides=2, padding="same", activation=activation),
        layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation=activation),
        layers.Conv2D(channels, 3, padding="same", activation=output_activation),
    ], name=name)


@register_model(
    "autoencoder",
    task="image_generation",
    default_dataset="fashion_mnist",
    hparams={**IMAGE_HPARAMS, "filters": 32, "code_dim": 32},
    input_spec=IMAGE_INPUT,
    train={"epochs": 10, "batch_size": 128, "learning_rate": 1e-3, "noise_stddev": 0.3},
)
class DenoisingAutoencoder(keras.Model):
    """Convolutional denoising autoencoder: noisy 28x28 image -> 32-float code -> clean image."""

    SIGNATURES = {"reconstruct": "reconstruct", "encode": "encode"}

    def __init__(self, image_size: int, channels: int, filters: int, code_dim: int, **kwargs):
        super().__init__(name=kwargs.pop("name", "autoencoder"), **kwargs)
        shape = (image_size, image_size, channels)
        self.image_shape = shape
        self.encoder = keras.Sequential([keras.Input(shape), downsampler(shape, filters, "relu", "features"),
                                         layers.Dense(code_dim)], name="encoder")
        self.decoder = upsampler(code_dim, shape, filters, "relu", "sigmoid", name="decoder")
        self.built = True  # both halves are built: weights exist before the first call (checkpoint loading)

    def call(self, images, training=False):
        return self.decoder(self.encoder(images, training=training), training=training)

    def compile(self, optimizer="adam", loss="mean_squared_error", **kwargs):
        """Keras's compile with this model's loss (MSE to the clean image) as the default."""
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def encode(self, images) -> dict:
        """Images in [0, 1] -> {"code": [N, code_dim]}."""
        return {"code": self.encoder(images, training=False)}

    def reconstruct(self, images):
        """(Noisy) images in [0, 1] -> denoised images in [0, 1]."""
        return self(images, training=False)

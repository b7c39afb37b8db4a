"""`vae`: a convolutional variational autoencoder (Kingma & Welling, 2014) for 28x28 grayscale images.

The encoder gives a diagonal Gaussian q(z|x) (mean, log-variance), the decoder Bernoulli logits
p(x|z) per pixel (grey levels in [0, 1] as the Bernoulli mean, the usual convention for
Fashion-MNIST). `train_step` minimizes the negative ELBO, reconstruction cross-entropy summed over
pixels plus KL(q(z|x) || N(0, I)), in nats per image, and reports both terms as metrics.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from zoo.autoencoder import IMAGE_HPARAMS, IMAGE_INPUT, downsampler, upsampler
from zoo.registry import register_model


@register_model(
    "vae",
    task="image_generation",
    default_dataset="fashion_mnist",
    hparams={**IMAGE_HPARAMS, "filters": 32, "latent_dim": 16},
    input_spec=IMAGE_INPUT,
    train={"epochs": 10, "batch_size": 128, "learning_rate": 1e-3},
)
class VAE(keras.Model):
    """Convolutional VAE: image -> Gaussian latent (16) -> Bernoulli pixels; trained on the negative ELBO."""

    SIGNATURES = {"sample": "sample", "decode": "decode", "encode": "encode", "reconstruct": "reconstruct"}

    def __init__(self, image_size: int, channels: int, filters: int, latent_dim: int, **kwargs):
        super().__init__(name=kwargs.pop("name", "vae"), **kwargs)
        shape = (image_size, image_size, channels)
        self.image_shape, self.latent_dim = shape, latent_dim
        self.encoder = keras.Sequential([keras.Input(shape), downsampler(shape, filters, "relu", "features"),
                                         layers.Dense(2 * latent_dim)], name="encoder")
        self.decoder = upsampler(latent_dim, shape, filters, "relu", None, name="decoder")  # logits
        self.seed_generator = keras.random.SeedGenerator(0)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        self.built = True  # both halves are built: weights exist before the first call (checkpoint loading)

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def call(self, images, training=False):
        return self.reconstruct(images)

    def encode(self, images) -> dict:
        """Images in [0, 1] -> {"mean", "log_variance"} of q(z|x), each [N, latent_dim]."""
        mean, log_variance = ops.split(self.encoder(images, training=False), 2, axis=-1)
        return {"mean": mean, "log_variance": log_variance}

    def decode(self, latent):
        """Latent vectors [N, latent_dim] -> images in [0, 1] (the Bernoulli means)."""
        return ops.sigmoid(self.decoder(latent, training=False))

    def reconstruct(self, images):
        """Images -> the decoding of their posterior mean."""
        return self.decode(self.encode(images)["mean"])

    def negative_elbo(self, images, training: bool):
        """(reconstruction, KL) per image in nats, for one reparameterized sample z ~ q(z|x)."""
        mean, log_variance = ops.split(self.encoder(images, training=training), 2, axis=-1)
        epsilon = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        logits = self.decoder(mean + ops.exp(0.5 * log_variance) * epsilon, training=training)
        cross_entropy = ops.binary_crossentropy(images, logits, from_logits=True)  # per pixel
        reconstruction = ops.sum(cross_entropy, axis=(1, 2, 3))
        kl = -0.5 * ops.sum(1.0 + log_variance - ops.square(mean) - ops.exp(log_variance), axis=-1)
        return reconstruction, kl

    def _update_metrics(self, reconstruction, kl):
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        self.loss_tracker.update_state(reconstruction + kl)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images = keras.utils.unpack_x_y_sample_weight(data)[0]
        with tf.GradientTape() as tape:
            reconstruction, kl = self.negative_elbo(images, training=True)
            loss = ops.mean(reconstruction + kl)
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        return self._update_metrics(reconstruction, kl)

    def test_step(self, data):
        images = keras.utils.unpack_x_y_sample_weight(data)[0]
        return self._update_metrics(*self.negative_elbo(images, training=False))

"""`dcgan` and `cgan`: deep convolutional GANs (Radford et al., 2016), unconditional and class-conditional.

The generator maps a latent vector (and, for `cgan`, a class label through a learned embedding
concatenated to it) to an image in [-1, 1]; the discriminator gives a real/fake logit, conditioned
for `cgan` by projection (Miyato & Koyama, 2018: the logit plus <embed(label), features>) and with
an auxiliary classifier head (Odena et al., 2017): it learns the classes of real images, and the
generator is trained to make its images classified as the requested class.
`train_step` alternates one discriminator and one generator step with the non-saturating loss and
reports both losses (`d_loss`, `g_loss`; for `cgan` each includes its class cross-entropy), so `fit`,
callbacks and TensorBoard work as for any model.
`compile` takes one optimizer; the generator gets a fresh copy of it.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from zoo.autoencoder import IMAGE_HPARAMS, downsampler, upsampler
from zoo.labels import FASHION_MNIST_LABELS
from zoo.registry import register_model

GAN_HPARAMS = {**IMAGE_HPARAMS, "filters": 32, "latent_dim": 64}
GAN_RECIPE = {"epochs": 10, "batch_size": 128, "learning_rate": 2e-4, "beta_1": 0.5}
LABEL_EMBEDDING = 16


def generator(image_shape: tuple[int, int, int], filters: int, latent_dim: int, num_classes: int) -> keras.Model:
    """latent [N, latent_dim] (and label [N] when `num_classes`) -> image [N, H, W, C] in [-1, 1]."""
    latent = keras.Input((latent_dim,), name="latent")
    inputs, x = latent, latent
    if num_classes:
        label = keras.Input((), dtype="int32", name="label")
        inputs = [latent, label]
        x = layers.Concatenate()([latent, layers.Embedding(num_classes, LABEL_EMBEDDING)(label)])
    body = upsampler(x.shape[-1], image_shape, filters, "leaky_relu", "tanh", name="upsampler")
    return keras.Model(inputs, body(x), name="generator")


def discriminator(image_shape: tuple[int, int, int], filters: int, num_classes: int) -> keras.Model:
    """image [N, H, W, C] in [-1, 1] -> real/fake logit [N, 1]; with `num_classes`, (image, label [N]) ->
    (real/fake logit, class logits [N, num_classes])."""
    image = keras.Input(image_shape, name="image")
    features = downsampler(image_shape, filters, "leaky_relu", "features")(image)
    logit = layers.Dense(1)(features)
    if not num_classes:
        return keras.Model(image, logit, name="discriminator")
    label = keras.Input((), dtype="int32", name="label")
    projection = layers.Dot(axes=1)([layers.Embedding(num_classes, features.shape[-1])(label), features])
    class_logits = layers.Dense(num_classes, name="class_logits")(features)
    return keras.Model([image, label], [layers.Add()([logit, projection]), class_logits], name="discriminator")


@register_model("dcgan", task="image_generation", default_dataset="fashion_mnist", hparams=GAN_HPARAMS,
                input_spec={"latent": {"shape": [64], "dtype": "float32", "distribution": "N(0, I)"}},
                train=GAN_RECIPE)
class DCGAN(keras.Model):
    """Deep convolutional GAN: a 64-float Gaussian latent -> a 28x28 image."""

    SIGNATURES = {"generate": "sample", "decode": "decode"}

    def __init__(self, image_size: int, channels: int, filters: int, latent_dim: int, num_classes: int = 0,
                 **kwargs):
        super().__init__(name=kwargs.pop("name", "cgan" if num_classes else "dcgan"), **kwargs)
        shape = (image_size, image_size, channels)
        self.image_shape, self.latent_dim, self.num_classes = shape, latent_dim, num_classes
        self.generator = generator(shape, filters, latent_dim, num_classes)
        self.discriminator = discriminator(shape, filters, num_classes)
        self.seed_generator = keras.random.SeedGenerator(0)
        self.cross_entropy = keras.losses.BinaryCrossentropy(from_logits=True)
        self.class_cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.built = True  # both networks are built: weights exist before the first call (checkpoint loading)

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def compile(self, optimizer="adam", **kwargs):
        """Keras's compile; `optimizer` trains the discriminator and a copy of it the generator."""
        optimizer = keras.optimizers.get(optimizer)
        super().compile(optimizer=optimizer, **kwargs)
        self.generator_optimizer = optimizer.__class__.from_config(optimizer.get_config())
        # Built now, each on its own network's weights, so that a checkpoint (--run-id resume) restores both.
        self.optimizer.build(self.discriminator.trainable_variables)
        self.generator_optimizer.build(self.generator.trainable_variables)

    def _conditioned(self, x, labels):
        return [x, ops.cast(labels, "int32")] if self.num_classes else x

    def call(self, latent, labels=None, training=False):
        return self.generator(self._conditioned(latent, labels), training=training)

    def decode(self, latent, labels=None):
        """Latent vectors [N, latent_dim] (and labels [N] for `cgan`) -> images in [0, 1]."""
        return (self(latent, labels) + 1.0) / 2.0

    def losses_on(self, images, labels, training: bool):
        """(discriminator loss, generator loss) on a batch of real images in [0, 1] and fresh fakes."""
        real = images * 2.0 - 1.0
        latent = keras.random.normal((ops.shape(real)[0], self.latent_dim), seed=self.seed_generator)
        fake = self.generator(self._conditioned(latent, labels), training=training)
        real_out = self.discriminator(self._conditioned(real, labels), training=training)
        fake_out = self.discriminator(self._conditioned(fake, labels), training=training)
        # cgan's discriminator also gives class logits: (real/fake logit, class logits)
        (real_logits, real_classes), (fake_logits, fake_classes) = (
            (real_out, fake_out) if self.num_classes else ((real_out, None), (fake_out, None)))
        d_loss = (self.cross_entropy(ops.ones_like(real_logits), real_logits)
                  + self.cross_entropy(ops.zeros_like(fake_logits), fake_logits))
        g_loss = self.cross_entropy(ops.ones_like(fake_logits), fake_logits)  # non-saturating
        if self.num_classes:  # the auxiliary classifier learns on real images; fakes must match their label
            d_loss += self.class_cross_entropy(labels, real_classes)
            g_loss += self.class_cross_entropy(labels, fake_classes)
        return d_loss, g_loss

    def train_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            d_loss, _ = self.losses_on(images, labels, training=True)
        weights = self.discriminator.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights, strict=True))
        with tf.GradientTape() as tape:
            _, g_loss = self.losses_on(images, labels, training=True)
        weights = self.generator.trainable_weights
        self.generator_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights, strict=True))
        return self._update_metrics(d_loss, g_loss)

    def test_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update_metrics(*self.losses_on(images, labels, training=False))

    def _update_metrics(self, d_loss, g_loss):
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}


@register_model("cgan", task="image_generation", default_dataset="fashion_mnist",
                hparams={**GAN_HPARAMS, "num_classes": len(FASHION_MNIST_LABELS)},
                input_spec={"latent": {"shape": [64], "dtype": "float32", "distribution": "N(0, I)"},
                            "label": {"shape": [], "dtype": "int32", "range": [0, 9]}},
                labels=FASHION_MNIST_LABELS, train=GAN_RECIPE)
class ConditionalGAN(DCGAN):
    """Class-conditional DCGAN: a Fashion-MNIST class and a 64-float Gaussian latent -> a 28x28 image."""

    SIGNATURES = {"generate": "sample_label", "generate_by_name": "sample_class_name"}

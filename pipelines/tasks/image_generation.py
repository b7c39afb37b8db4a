"""Image generation: data, optimizer, TensorBoard extras and serving signatures of the generative zoo.

One task for `autoencoder`, `vae`, `dcgan` and `cgan`. Each model brings its loss (its `compile`
defaults or its `train_step`) and declares `SIGNATURES`, served name -> kind; the kinds, built here
around the model's `encode`, `reconstruct` and `decode` methods:

  reconstruct        image float32 [N, H, W, C] in [0, 1]   -> images, png_bytes
  encode             image float32 [N, H, W, C] in [0, 1]   -> the model's codes (code | mean, log_variance)
  decode             latent float32 [N, latent_dim]         -> images, png_bytes
  sample             count int32 [], seed int64 []          -> images, png_bytes
  sample_label       label int32 [], count, seed            -> images, png_bytes of class `label`
  sample_class_name  class_name string [], count, seed      -> the same, the class by name (case-insensitive)

`images` are float32 [N, H, W, C] in [0, 1]; `png_bytes` string [N], PNG files (base64 over REST).
Sampling draws latent ~ N(0, I) with stateless random ops seeded by `seed`: the same seed gives the
same images. A request yields 1 to MAX_COUNT images. Bad input (count out of range, unknown label or
class name, latent of the wrong size, more than MAX_COUNT rows) fails in-graph: INVALID_ARGUMENT
with a message that says what is allowed.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override

from pipelines import data, fid
from pipelines.tasks.base import VALIDATION_SPLIT, Splits, Task, WarmupRequests
from pipelines.tasks.common import EpochSummaries, grid, to_pixels, to_unit_range

MAX_COUNT = 256  # images per request: bounds a request's memory
SUMMARY_IMAGES = 2000  # validation images behind the per-epoch FD-cnn (and its generated counterpart)
GRID_ROWS = 8


def add_noise(images: tf.Tensor, stddev: float, training: bool) -> tf.Tensor:
    """Gaussian noise, clipped to [0, 1]: fresh in training, else seeded by the batch's pixels (reproducible)."""
    if training:
        noise = tf.random.normal(tf.shape(images), stddev=stddev)
    else:
        seed = tf.stack([tf.reduce_sum(tf.cast(to_pixels(images), tf.int64)), 0])
        noise = tf.random.stateless_normal(tf.shape(images), seed, stddev=stddev)
    return tf.clip_by_value(images + noise, 0.0, 1.0)


def generates(model: keras.Model | type) -> bool:
    """Whether a model (or model class) decodes latents into images: the VAE and the GANs."""
    return hasattr(model, "decode")


def decode_in_batches(model: keras.Model, latent: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """The model's `decode` on many latents (and labels for a conditional model), MAX_COUNT at a time."""
    chunks = range(0, len(latent), MAX_COUNT)
    return np.concatenate([np.asarray(model.decode(latent[i:i + MAX_COUNT],
                                                   *([] if labels is None else [labels[i:i + MAX_COUNT]])))
                           for i in chunks])


class GenerativeSummaries(EpochSummaries):
    """Per epoch, in TensorBoard: reconstructions of validation images and samples from a fixed latent batch;
    FD-cnn of as many samples as validation images against them (and, conditional, the class accuracy)."""

    def __init__(self, log_dir: str, sample_batch, classifier: fid.Classifier | None):
        super().__init__(log_dir)
        self.inputs, self.targets = (np.asarray(t) for t in sample_batch)  # (noisy, clean) or (images, labels)
        self.classifier = classifier

    @override
    def on_train_begin(self, logs=None):
        model = self.model
        if not generates(model):
            return
        self.conditional = bool(getattr(model, "num_classes", 0))
        self.columns = model.num_classes if self.conditional else GRID_ROWS  # conditional: column k is class k
        self.grid_latent = np.asarray(tf.random.stateless_normal([GRID_ROWS * self.columns, model.latent_dim], [0, 0]))
        self.grid_labels = np.arange(GRID_ROWS * self.columns) % self.columns if self.conditional else None
        self.latent = np.asarray(tf.random.stateless_normal([len(self.inputs), model.latent_dim], [1, 0]))
        self.labels = self.targets.astype(np.int32) if self.conditional else None
        if self.classifier is not None:
            self.real_features = self.classifier(self.inputs)[0]

    @override
    def summarize(self):
        model = self.model
        if hasattr(model, "reconstruct"):
            shown = self.inputs[:GRID_ROWS * 2]
            tf.summary.image("reconstructions", grid(np.concatenate([shown, model.reconstruct(shown)])),
                             description="rows 1-2: inputs; rows 3-4: their reconstructions")
        if generates(model):
            samples = decode_in_batches(model, self.grid_latent, self.grid_labels)
            tf.summary.image("samples", grid(samples, columns=self.columns),
                             description="the same latent batch every epoch"
                             + ("; column k is class k" if self.conditional else ""))
            if self.classifier is not None:
                for name, value in self.quality(model).items():
                    tf.summary.scalar(f"epoch_{name}", value)
                    self.logs[f"val_{name}"] = value

    def quality(self, model: keras.Model) -> dict[str, float]:
        """FD-cnn of generated images against the validation images (and the class accuracy, conditional)."""
        features, predicted = self.classifier(decode_in_batches(model, self.latent, self.labels))
        result = {"fd_cnn": fid.frechet_distance(features, self.real_features)}
        if self.conditional:
            result["class_accuracy"] = float(np.mean(predicted == self.labels))
        return result


def image_outputs(images: tf.Tensor) -> dict[str, tf.Tensor]:
    """{"images": float [N, H, W, C] in [0, 1], "png_bytes": string [N]}."""
    pngs = tf.map_fn(tf.io.encode_png, to_pixels(images), fn_output_signature=tf.string)
    return {"images": images, "png_bytes": pngs}


def checked(tensor: tf.Tensor, condition: tf.Tensor, message: str) -> tf.Tensor:
    """`tensor`, computed only after `condition` held (else INVALID_ARGUMENT with `message`)."""
    with tf.control_dependencies([tf.debugging.Assert(condition, [message])]):
        return tf.identity(tensor)


def latent_batch(model: keras.Model, count: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`count` latents ~ N(0, I), a function of `seed` alone; count must lie in [1, MAX_COUNT]."""
    count = checked(count, tf.logical_and(count >= 1, count <= MAX_COUNT),
                    f"count must be between 1 and {MAX_COUNT} (images per request, capped to bound memory): "
                    "send several requests, with different seeds, for more")
    return tf.random.stateless_normal(tf.stack([count, model.latent_dim]), tf.stack([seed, tf.constant(0, tf.int64)]))


def image_spec(model: keras.Model) -> tf.TensorSpec:
    """Input `image`: float32 [N, H, W, C] in [0, 1]."""
    return tf.TensorSpec([None, *model.image_shape], tf.float32, name="image")


COUNT_SEED = [tf.TensorSpec([], tf.int32, name="count"), tf.TensorSpec([], tf.int64, name="seed")]


def reconstruct_signature(model: keras.Model):
    """image -> images, png_bytes."""

    def reconstruct(image):
        return image_outputs(model.reconstruct(image))

    return tf.function(reconstruct, input_signature=[image_spec(model)])


def encode_signature(model: keras.Model):
    """image -> the model's codes."""
    return tf.function(model.encode, input_signature=[image_spec(model)])


def decode_signature(model: keras.Model):
    """latent [N, latent_dim] (N <= MAX_COUNT) -> images, png_bytes."""
    size = model.latent_dim

    def decode(latent):
        rows, columns = tf.shape(latent)[0], tf.shape(latent)[1]
        latent = checked(latent, tf.equal(columns, size),
                         f"latent must be [N, {size}]: {size} values per row (this model's latent_dim)")
        latent = checked(latent, rows <= MAX_COUNT, f"at most {MAX_COUNT} latent rows per request")
        return image_outputs(model.decode(tf.ensure_shape(latent, [None, size])))

    return tf.function(decode, input_signature=[tf.TensorSpec([None, None], tf.float32, name="latent")])


def sample_signature(model: keras.Model):
    """count, seed -> images, png_bytes."""

    def sample(count, seed):
        return image_outputs(model.decode(latent_batch(model, count, seed)))

    return tf.function(sample, input_signature=COUNT_SEED)


def conditional_sample(model: keras.Model, names: tuple[str, ...], label: tf.Tensor, count, seed) -> dict:
    """`count` images of class `label` from `seed`."""
    label = checked(label, tf.logical_and(label >= 0, label < model.num_classes),
                    f"label must be a class id in [0, {model.num_classes}): "
                    + ", ".join(f"{i} {name}" for i, name in enumerate(names)))
    latent = latent_batch(model, count, seed)
    return image_outputs(model.decode(latent, tf.fill(tf.shape(latent)[:1], label)))


def sample_label_signature(model: keras.Model, labels: tuple[str, ...]):
    """label, count, seed -> images, png_bytes."""

    def sample_label(label, count, seed):
        return conditional_sample(model, labels, label, count, seed)

    return tf.function(sample_label, input_signature=[tf.TensorSpec([], tf.int32, name="label"), *COUNT_SEED])


def sample_class_name_signature(model: keras.Model, labels: tuple[str, ...]):
    """class_name, count, seed -> images, png_bytes."""
    names = tf.constant([name.lower() for name in labels])

    def sample_class_name(class_name, count, seed):
        matches = tf.where(tf.equal(names, tf.strings.lower(class_name)))[:, 0]
        matches = checked(matches, tf.size(matches) > 0, "unknown class_name; one of: " + ", ".join(labels))
        return conditional_sample(model, labels, tf.cast(matches[0], tf.int32), count, seed)

    return tf.function(sample_class_name, input_signature=[tf.TensorSpec([], tf.string, name="class_name"),
                                                           *COUNT_SEED])


CONDITIONAL_KINDS = {"sample_label", "sample_class_name"}  # their builders also take the class names
SIGNATURE_BUILDERS = {
    "reconstruct": reconstruct_signature,
    "encode": encode_signature,
    "decode": decode_signature,
    "sample": sample_signature,
    "sample_label": sample_label_signature,
    "sample_class_name": sample_class_name_signature,
}


def generate_served(fn, count: int, *, labels: int | None = None, seed: int = 0) -> np.ndarray:
    """`count` images from a served sampling signature, MAX_COUNT per call (seeds seed, seed+1, ...)."""
    chunks = []
    for i, start in enumerate(range(0, count, MAX_COUNT)):
        inputs = {"count": tf.constant(min(MAX_COUNT, count - start)), "seed": tf.constant(seed + i, tf.int64)}
        if labels is not None:
            inputs["label"] = tf.constant(labels)
        chunks.append(fn(**inputs)["images"].numpy())
    return np.concatenate(chunks)


class ImageGeneration(Task):
    """The generative zoo: the models bring their losses; summaries, FD-cnn and signatures (module doc)."""

    name = "image_generation"
    # noise_stddev: the autoencoder's denoising noise; beta_1: Adam's (0.5 for the GANs); fd_classifier: the
    # cnn run (or checkpoint) FD-cnn is measured with ("" : $TFZOO_FD_CLASSIFIER, else FD-cnn is off).
    recipe_defaults = {"noise_stddev": 0.0, "beta_1": 0.9, "fd_classifier": ""}

    def __init__(self, run):
        super().__init__(run)
        self._classifier: fid.Classifier | None = None
        self._classifier_named = False

    @property
    def classifier(self) -> fid.Classifier | None:
        """The named FD-cnn classifier of this run (models that generate only), loaded once."""
        if not self._classifier_named and generates(self.run.spec.builder):
            self._classifier = fid.named_classifier(self.recipe["fd_classifier"])
            self._classifier_named = True
        return self._classifier

    @override
    def preprocess(self, training: bool):
        """uint8 images -> float32 in [0, 1]; with the recipe's `noise_stddev` (autoencoder): (noisy, clean)."""
        stddev = self.recipe["noise_stddev"]

        def fn(images, labels):
            images = to_unit_range(images)
            return (add_noise(images, stddev, training), images) if stddev else (images, labels)

        return fn

    @override
    def load_splits(self, data_dir) -> Splits:
        """The default splits, with SUMMARY_IMAGES validation images as the sample batch (grids, FD-cnn)."""
        splits = super().load_splits(data_dir)
        summary = data.load(self.run.dataset, VALIDATION_SPLIT, batch_size=SUMMARY_IMAGES, data_dir=data_dir,
                            cache=False, preprocess=self.preprocess(training=False))
        return dataclasses.replace(splits, sample_batch=next(iter(summary)))

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:
        """Adam at the recipe's learning rate and beta_1; the model brings its loss (constant rate: the GAN
        recipes of DCGAN's paper; no schedule needs the run's length)."""
        optimizer = keras.optimizers.Adam(self.recipe["learning_rate"], beta_1=self.recipe["beta_1"])
        model.compile(optimizer=optimizer, jit_compile=bool(self.recipe["jit_compile"]))

    @override
    def callbacks(self, run_dir, sample_batch) -> list[keras.callbacks.Callback]:
        """TensorBoard extras: reconstruction and sample grids; FD-cnn when a classifier is named."""
        if self.classifier is None and generates(self.run.spec.builder):
            print("FD-cnn per epoch is off: name a trained cnn run with --set fd_classifier=runs/cnn/<run-id> "
                  f"(or ${fid.CLASSIFIER_ENV})", flush=True)
        return [GenerativeSummaries(f"{run_dir}/validation", sample_batch, self.classifier)]

    @override
    def signatures(self, model: keras.Model) -> dict:
        """One serving signature per entry of the model's `SIGNATURES` (served name -> kind)."""
        return {name: SIGNATURE_BUILDERS[kind](model, *([self.run.labels] if kind in CONDITIONAL_KINDS else []))
                for name, kind in model.SIGNATURES.items()}

    @override
    def warmup_requests(self, sample_batch) -> WarmupRequests:
        """Real requests for every signature (the run's `latent_dim` gives decode's latent size)."""
        images = np.asarray(sample_batch[0][:4], np.float32)
        latent = np.random.default_rng(0).standard_normal((4, self.hparams.get("latent_dim", 0))).astype(np.float32)
        count_seed = {"count": np.int32(4), "seed": np.int64(0)}
        first_class = self.run.labels[0].encode() if self.run.labels else b""  # only conditional models have labels
        by_kind = {
            "reconstruct": {"image": images},
            "encode": {"image": images},
            "decode": {"latent": latent},
            "sample": count_seed,
            "sample_label": {"label": np.int32(0), **count_seed},
            "sample_class_name": {"class_name": np.array(first_class, object), **count_seed},
        }
        return [(name, by_kind[kind]) for name, kind in self.run.spec.builder.SIGNATURES.items()]

    @override
    def model_card(self, model: keras.Model) -> dict:
        """The FD-cnn classifier the run was measured with (checkpoint path and SHA-256), if any."""
        return {"fd_classifier": self.classifier.describe()} if self.classifier is not None else {}

    @classmethod
    @override
    def evaluate_export(cls, loaded, ds, card: Mapping) -> dict:
        """Through the exported signatures on raw (uint8 image, label) batches: reconstruction MSE of the clean
        images (`reconstruct`); FD-cnn of as many samples as images (`sample`/`generate`, with the images' class
        counts for a conditional model) and the share classified as the requested class, with the classifier
        the model card names ($TFZOO_FD_CLASSIFIER overrides it)."""
        images, labels = (np.concatenate(t) for t in zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True))
        images = np.asarray(to_unit_range(images))
        result = {"examples": len(images)}
        if "reconstruct" in loaded.signatures:
            reconstruct = loaded.signatures["reconstruct"]
            reconstructed = np.concatenate([reconstruct(image=tf.constant(images[i:i + MAX_COUNT]))["images"].numpy()
                                            for i in range(0, len(images), MAX_COUNT)])
            result["reconstruction_mse_clean"] = float(np.mean((reconstructed - images) ** 2))
        sampler = next((loaded.signatures[n] for n in ("generate", "sample") if n in loaded.signatures), None)
        if sampler is None:
            return result
        recorded = (card or {}).get("fd_classifier")
        classifier = fid.named_classifier(None) or (fid.recorded_classifier(recorded) if recorded else None)
        if classifier is None:
            return {**result, "fd_cnn": None,
                    "fd_cnn_missing": f"the model card names no FD-cnn classifier: set {fid.CLASSIFIER_ENV}"}
        if "label" in sampler.structured_input_signature[1]:
            classes = np.unique(labels)
            generated = [generate_served(sampler, int(np.sum(labels == k)), labels=int(k)) for k in classes]
            requested = np.concatenate([np.full(len(g), k) for g, k in zip(generated, classes, strict=True)])
            features, predicted = classifier(np.concatenate(generated))
            result["class_accuracy"] = float(np.mean(predicted == requested))
        else:
            features = classifier(generate_served(sampler, len(images)))[0]
        result["fd_cnn"] = fid.frechet_distance(features, classifier(images)[0])
        result["fd_classifier"] = classifier.describe()
        return result

"""Image classification: sparse cross-entropy, accuracy, image summaries, and two serving signatures.

Signatures (see `signatures`):
  serving_default   image float32 [N, H, W, C] in [0, 1]  ->  probabilities float32 [N, classes]
  encoded_image     image_bytes string [N] (PNG/JPEG/GIF/BMP, any size; converted to C channels and
                    resized to H x W inside the graph)  ->  top_k_labels, top_k_scores, top_k_ids

Transfer recipe (models with a frozen pretrained `backbone`, see zoo.applications, and a recipe with
`fine_tune_epochs`): the head trains alone, then for the last `fine_tune_epochs` the top
`fine_tune_layers` backbone layers train too at `fine_tune_rate` times the learning rate, in the same
`fit` (the `FineTune` callback unfreezes them; the optimizer has their slots from the start).
"""
from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override

from pipelines.errors import UserError
from pipelines.metrics import ClassifierCurves
from pipelines.tasks.base import Splits, Task, WarmupRequests
from pipelines.tasks.common import (
    ClassifierSummaries,
    Embedding,
    EpochSummaries,
    Projector,
    grid,
    image_calibration,
    label_distribution,
    to_pixels,
    to_unit_range,
    warmup_cosine,
)
from zoo.applications import BACKBONE

TOP_K = 3
SAMPLE_IMAGES = 16
PROJECTOR_IMAGES = 512  # validation images behind the projector's penultimate features


class FineTuneSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`head` for the first `switch` steps, then `tune` (counted from the switch): the two phases of transfer."""

    def __init__(self, head, tune, switch: int):
        self.head, self.tune, self.switch = head, tune, switch

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        return keras.ops.where(step < self.switch, self.head(step), self.tune(keras.ops.maximum(step - self.switch, 0)))

    def get_config(self):
        return {"head": self.head.get_config(), "tune": self.tune.get_config(), "switch": self.switch}


def optimizer(recipe: Mapping, steps_per_epoch: int, fine_tune: bool = False) -> keras.optimizers.Optimizer:
    """AdamW (or, with `optimizer: "sgd"`, SGD with Nesterov momentum 0.9), linear warmup then cosine decay
    over the run; with `fine_tune`, a second cosine at `fine_tune_rate` times the rate over the last
    `fine_tune_epochs`. Weight decay is decoupled (Keras multiplies it by the learning rate) for both."""
    total = max(1, recipe["epochs"] * steps_per_epoch)
    warmup = int(recipe["warmup_epochs"] * steps_per_epoch)
    schedule = warmup_cosine(recipe["learning_rate"], total, warmup_steps=warmup)
    if fine_tune:
        switch = max(0, recipe["epochs"] - recipe["fine_tune_epochs"]) * steps_per_epoch
        schedule = FineTuneSchedule(warmup_cosine(recipe["learning_rate"], switch, warmup_steps=warmup),
                                    warmup_cosine(recipe["learning_rate"] * recipe["fine_tune_rate"], total - switch),
                                    switch)
    kind = recipe["optimizer"]
    if kind == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=recipe["weight_decay"])
    if kind != "adamw":
        raise UserError(f"recipe optimizer must be 'adamw' or 'sgd', got {kind!r}")
    return keras.optimizers.AdamW(schedule, weight_decay=recipe["weight_decay"])


def frozen_backbone(model: keras.Model) -> keras.Model | None:
    """The model's frozen (pretrained) backbone, the layer zoo.applications names BACKBONE, if it has one."""
    layer = next((layer for layer in model.layers if layer.name == BACKBONE), None)
    return layer if layer is not None and not layer.trainable else None


def fine_tuned_layers(backbone: keras.Model, count: int) -> list:
    """The top `count` layers of `backbone` that fine-tuning trains (its BatchNorm layers stay frozen)."""
    return [layer for layer in backbone.layers[-count:]
            if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]


class FineTune(keras.callbacks.Callback):
    """From epoch `start`, trains the top `count` layers of a frozen backbone too (the schedule lowers the rate)."""

    def __init__(self, start: int, count: int):
        super().__init__()
        self.start, self.count = start, count

    @override
    def on_epoch_begin(self, epoch, logs=None):
        backbone = frozen_backbone(self.model)
        if backbone is None or epoch < self.start:
            return
        tuned = fine_tuned_layers(backbone, self.count)
        backbone.trainable = True
        for layer in backbone.layers:
            layer.trainable = layer in tuned
        self.model.make_train_function(force=True)  # retrace with the new trainable variables


class SampleImages(EpochSummaries):
    """Logs a grid of validation images with their true and predicted labels, once per epoch."""

    def __init__(self, log_dir: str, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...]):
        super().__init__(log_dir)
        self.images, self.labels, self.names = images, labels, names

    @override
    def summarize(self):
        # A direct call, not model.predict: predict builds a tf.data pipeline per call, and tearing it down
        # costs a pause at every epoch boundary.
        predicted = np.argmax(keras.ops.convert_to_numpy(self.model(self.images, training=False)), axis=-1)
        tf.summary.image(
            "samples", self.images, max_outputs=len(self.images),
            description=" | ".join(f"{i}: true {self.names[t]}, predicted {self.names[p]}"
                                   for i, (t, p) in enumerate(zip(self.labels, predicted, strict=False))))
        tf.summary.image("sample_grid", grid(self.images))


def classifier(model: keras.Model, test_time_flip: bool):
    """images -> probabilities; with `test_time_flip`, the mean of the image's and its mirror image's
    (test-time augmentation: twice the compute for about +0.3 points on Fashion-MNIST; only for models
    trained with flip augmentation)."""

    def classify(images):
        probabilities = model(images, training=False)
        if test_time_flip:
            probabilities = (probabilities + model(tf.image.flip_left_right(images), training=False)) / 2.0
        return probabilities

    return classify


def decode_images(image_bytes: tf.Tensor, height: int, width: int, channels: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Encoded images (PNG/JPEG/GIF/BMP, any size) -> float32 [N, height, width, channels] in [0, 1], and each
    image's original (height, width) as int32 [N, 2]. Grayscale/RGBA convert to `channels`; bytes that are not
    an image raise InvalidArgumentError (a server answers INVALID_ARGUMENT)."""

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return tf.image.resize(to_unit_range(image), [height, width]), tf.shape(image)[:2]

    return tf.map_fn(decode, image_bytes, fn_output_signature=(
        tf.TensorSpec([height, width, channels], tf.float32), tf.TensorSpec([2], tf.int32)))


class ImageTask(Task):
    """What the image tasks share: uint8 images scaled to [0, 1] (flips and shifts when the recipe says
    `augment`), the warmup/cosine AdamW or SGD optimizer, and warmup requests of real images for both the
    float (`serving_default`) and the encoded (`encoded_image`) signature."""

    recipe_defaults = {"weight_decay": 1e-4, "warmup_epochs": 0, "optimizer": "adamw", "augment": False}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) the model takes."""
        return self.hparams["image_size"], self.hparams["image_size"], self.hparams["channels"]

    @override
    def preprocess(self, training: bool):
        """Batch mapper: uint8 images -> float32 in [0, 1]; light flip/shift augmentation if the recipe asks."""
        augment = training and self.recipe["augment"]
        shift = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant") if augment else None

        def fn(images, labels):
            images = to_unit_range(images)
            if augment:
                images = shift(tf.image.random_flip_left_right(images), training=True)
            return images, labels

        return fn

    def optimizer(self, steps_per_epoch: int, fine_tune: bool = False) -> keras.optimizers.Optimizer:
        return optimizer(self.recipe, steps_per_epoch, fine_tune)

    @classmethod
    @override
    def calibration_inputs(cls, dataset: str, *, count: int, data_dir=None) -> list[dict[str, np.ndarray]]:
        return image_calibration(cls, dataset, count, data_dir)

    @override
    def warmup_requests(self, sample_batch) -> WarmupRequests:
        """Real examples for both signatures, replayed by the server before a version goes AVAILABLE."""
        images = np.asarray(sample_batch[0][:4], dtype=np.float32)
        encoded = np.array([tf.io.encode_png(to_pixels(im)).numpy() for im in images], dtype=object)
        return [("serving_default", {"image": images}), ("encoded_image", {"image_bytes": encoded})]


class ImageClassification(ImageTask):
    """Sparse cross-entropy (optionally label-smoothed), accuracy, a sample grid, two signatures (module doc)."""

    name = "image_classification"
    label_distribution: dict | None = None  # of the train split, set by load_splits
    validation: tf.data.Dataset | None = None  # the projector's images, set by load_splits
    recipe_defaults = {**ImageTask.recipe_defaults, "label_smoothing": 0.0, "test_time_flip": False,
                       "fine_tune_epochs": 0, "fine_tune_layers": 0, "fine_tune_rate": 0.1}

    @property
    def class_names(self) -> list[str]:
        """The model's labels, or the class indices as text when it has none."""
        return list(self.run.labels) or [str(i) for i in range(self.hparams["num_classes"])]

    @override
    def load_splits(self, data_dir) -> Splits:
        """The default splits; the train split's label shares are kept for the model card."""
        splits = super().load_splits(data_dir)
        self.label_distribution = label_distribution(self.run.dataset, splits.names["train"], self.class_names,
                                                     data_dir)
        self.validation = splits.validation if splits.validation is not None else splits.test
        return splits

    @override
    def model_card(self, model: keras.Model) -> dict:
        """The train split's label shares (what the served predictions are compared with)."""
        return {"label_distribution": self.label_distribution} if self.label_distribution else {}

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:
        """`optimizer` (two-phase with a frozen backbone and `fine_tune_epochs`); sparse CE (+ smoothing); accuracy."""
        recipe = self.recipe
        backbone = frozen_backbone(model) if recipe["fine_tune_epochs"] else None
        smoothing = recipe["label_smoothing"]
        if smoothing:
            num_classes = model.output_shape[-1]

            def loss(y_true, y_pred):
                y = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), num_classes)
                return keras.losses.categorical_crossentropy(y, y_pred, label_smoothing=smoothing)
        else:
            loss = keras.losses.SparseCategoricalCrossentropy()
        self.curves = ClassifierCurves(model.output_shape[-1])
        model.compile(optimizer=self.optimizer(steps_per_epoch, fine_tune=backbone is not None), loss=loss,
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"), self.curves],
                      jit_compile=bool(recipe["jit_compile"]))
        if backbone is not None:  # slots for the variables fine-tuning will train, so that no recompile is needed
            tuned = [v for layer in fine_tuned_layers(backbone, recipe["fine_tune_layers"]) for v in layer.weights]
            model.optimizer.build(model.trainable_variables + tuned)

    @override
    def callbacks(self, run_dir, sample_batch) -> list[keras.callbacks.Callback]:
        """TensorBoard extras: a sample grid with true and predicted labels, the validation confusion matrix and
        per-class PR curves of each epoch, the penultimate features of validation images in the projector at the
        end; the fine-tuning switch if any."""
        images, labels = sample_batch
        names = self.class_names
        extras = [SampleImages(f"{run_dir}/validation", np.asarray(images[:SAMPLE_IMAGES]),
                               np.asarray(labels[:SAMPLE_IMAGES]), self.run.labels),
                  ClassifierSummaries(f"{run_dir}/validation", self.curves, names),
                  Projector(f"{run_dir}/embeddings", lambda model: self.features(model, names))]
        if self.recipe["fine_tune_epochs"]:
            extras.append(FineTune(self.recipe["epochs"] - self.recipe["fine_tune_epochs"],
                                   self.recipe["fine_tune_layers"]))
        return extras

    def features(self, model: keras.Model, names: list[str]) -> Embedding:
        """The input of the model's last layer (its penultimate features) for up to PROJECTOR_IMAGES validation
        images, labelled with their true and predicted class, the images as the sprite."""
        images, labels = [], []
        for x, y in self.validation:
            images.append(np.asarray(x))
            labels.append(np.asarray(y).reshape(-1))
            if sum(map(len, images)) >= PROJECTOR_IMAGES:
                break
        images, labels = np.concatenate(images)[:PROJECTOR_IMAGES], np.concatenate(labels)[:PROJECTOR_IMAGES]
        penultimate = keras.Model(model.inputs, [model.layers[-1].input, model.outputs[0]])
        outputs = [penultimate([images[i:i + 128]], training=False) for i in range(0, len(images), 128)]
        vectors, probabilities = (np.concatenate([keras.ops.convert_to_numpy(o[k]) for o in outputs]) for k in (0, 1))
        predicted = np.argmax(probabilities, axis=-1)
        return Embedding(vectors.reshape(len(images), -1),
                         [f"{names[t]}\t{names[p]}" for t, p in zip(labels, predicted, strict=True)],
                         header="label\tpredicted", sprite=images)

    @override
    def signatures(self, model: keras.Model) -> dict:
        """`serving_default` (float images -> probabilities) and `encoded_image` (bytes -> top-k labels); both
        average over a horizontal flip when the recipe sets `test_time_flip`."""
        height, width, channels = self.image_shape
        labels = tf.constant(list(self.run.labels) or [str(i) for i in range(model.output_shape[-1])])
        k = min(TOP_K, int(labels.shape[0]))
        classify = classifier(model, bool(self.recipe["test_time_flip"]))

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="image")])
        def serving_default(image):
            return {"probabilities": classify(image)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def encoded_image(image_bytes):
            images, _ = decode_images(image_bytes, height, width, channels)
            scores, ids = tf.math.top_k(classify(images), k=k)
            return {"top_k_labels": tf.gather(labels, ids), "top_k_scores": scores, "top_k_ids": ids}

        return {"serving_default": serving_default, "encoded_image": encoded_image}

    @classmethod
    @override
    def evaluate_export(cls, loaded, ds, card) -> dict:
        """Accuracy of an exported classifier's `serving_default` on raw (uint8 image, label) batches."""
        fn = loaded.signatures["serving_default"]
        correct = total = 0
        for images, labels in ds:
            probabilities = fn(image=to_unit_range(images))["probabilities"]
            correct += int(tf.reduce_sum(tf.cast(tf.argmax(probabilities, -1) == labels, tf.int32)))
            total += int(tf.shape(labels)[0])
        return {"accuracy": correct / max(total, 1), "examples": total}

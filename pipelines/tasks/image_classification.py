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

import keras
import numpy as np
import tensorflow as tf

from zoo import ModelSpec
from zoo.applications import BACKBONE

TOP_K = 3
SAMPLE_IMAGES = 16


def image_shape(spec: ModelSpec, hparams: dict) -> tuple[int, int, int]:
    """(height, width, channels) the model takes."""
    return hparams["image_size"], hparams["image_size"], hparams["channels"]


def preprocess(spec: ModelSpec, recipe: dict, training: bool):
    """Batch mapper: uint8 images -> float32 in [0, 1]; light flip/shift augmentation if the recipe asks."""
    augment = training and recipe.get("augment")
    shift = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant") if augment else None

    def fn(images, labels):
        images = tf.cast(images, tf.float32) / 255.0
        if augment:
            images = tf.image.random_flip_left_right(images)
            images = shift(images, training=True)
        return images, labels

    return fn


def cosine(learning_rate: float, steps: int, warmup: int = 0) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warmup over `warmup` steps to `learning_rate`, then cosine decay to 0 at `steps`."""
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else learning_rate,
        decay_steps=max(1, steps - warmup),
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )


class FineTuneSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`head` for the first `switch` steps, then `tune` (counted from the switch): the two phases of transfer."""

    def __init__(self, head, tune, switch: int):
        self.head, self.tune, self.switch = head, tune, switch

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        return keras.ops.where(step < self.switch, self.head(step), self.tune(keras.ops.maximum(step - self.switch, 0)))

    def get_config(self):
        return {"head": self.head.get_config(), "tune": self.tune.get_config(), "switch": self.switch}


def optimizer(recipe: dict, steps_per_epoch: int, fine_tune: bool = False) -> keras.optimizers.Optimizer:
    """AdamW (or, with `optimizer: "sgd"`, SGD with Nesterov momentum 0.9), linear warmup then cosine decay
    over the run; with `fine_tune`, a second cosine at `fine_tune_rate` times the rate over the last
    `fine_tune_epochs`. Weight decay is decoupled (Keras multiplies it by the learning rate) for both."""
    total = max(1, recipe["epochs"] * steps_per_epoch)
    warmup = int(recipe["warmup_epochs"] * steps_per_epoch)
    schedule = cosine(recipe["learning_rate"], total, warmup)
    if fine_tune:
        switch = max(0, recipe["epochs"] - recipe["fine_tune_epochs"]) * steps_per_epoch
        schedule = FineTuneSchedule(cosine(recipe["learning_rate"], switch, warmup),
                                    cosine(recipe["learning_rate"] * recipe["fine_tune_rate"], total - switch), switch)
    kind = recipe.get("optimizer", "adamw")
    if kind == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=recipe["weight_decay"])
    if kind != "adamw":
        raise ValueError(f"recipe optimizer must be 'adamw' or 'sgd', got {kind!r}")
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

    def on_epoch_begin(self, epoch, logs=None):
        backbone = frozen_backbone(self.model)
        if backbone is None or epoch < self.start:
            return
        tuned = fine_tuned_layers(backbone, self.count)
        backbone.trainable = True
        for layer in backbone.layers:
            layer.trainable = layer in tuned
        self.model.make_train_function(force=True)  # retrace with the new trainable variables


def compile(model: keras.Model, spec: ModelSpec, recipe: dict, steps_per_epoch: int) -> None:
    """`optimizer` (two-phase with a frozen backbone and `fine_tune_epochs`); sparse CE (+ smoothing); accuracy."""
    backbone = frozen_backbone(model) if recipe.get("fine_tune_epochs") else None
    smoothing = recipe["label_smoothing"]
    if smoothing:
        num_classes = model.output_shape[-1]

        def loss(y_true, y_pred):
            y = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), num_classes)
            return keras.losses.categorical_crossentropy(y, y_pred, label_smoothing=smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(
        optimizer=optimizer(recipe, steps_per_epoch, fine_tune=backbone is not None),
        loss=loss,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=bool(recipe["jit_compile"]),
    )
    if backbone is not None:  # slots for the variables fine-tuning will train, so that no recompile is needed
        tuned = [v for layer in fine_tuned_layers(backbone, recipe["fine_tune_layers"]) for v in layer.weights]
        model.optimizer.build(model.trainable_variables + tuned)


class SampleImages(keras.callbacks.Callback):
    """Logs a grid of validation images with their true and predicted labels, once per epoch."""

    def __init__(self, log_dir: str, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...]):
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.images, self.labels, self.names = images, labels, names

    def on_epoch_end(self, epoch, logs=None):
        predicted = np.argmax(self.model.predict(self.images, verbose=0), axis=-1)
        with self.writer.as_default():
            tf.summary.image(
                "samples", self.images, step=epoch, max_outputs=len(self.images),
                description=" | ".join(
                    f"{i}: true {self.names[t]}, predicted {self.names[p]}"
                    for i, (t, p) in enumerate(zip(self.labels, predicted, strict=False))
                ),
            )
            tf.summary.image("sample_grid", grid(self.images), step=epoch)
        self.writer.flush()


def grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """Tile [N, H, W, C] images into one [1, rows*H, columns*W, C] image."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    canvas = np.zeros((rows * h, columns * w, c), dtype=images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        canvas[r * h : (r + 1) * h, col * w : (col + 1) * w] = image
    return canvas[None]


def callbacks(spec: ModelSpec, run_dir: str, sample_batch) -> list[keras.callbacks.Callback]:
    """TensorBoard extras: a sample grid with true and predicted labels; the fine-tuning switch if any."""
    images, labels = sample_batch
    extras = [SampleImages(f"{run_dir}/validation", np.asarray(images[:SAMPLE_IMAGES]),
                           np.asarray(labels[:SAMPLE_IMAGES]), spec.labels)]
    if spec.train.get("fine_tune_epochs"):
        extras.append(FineTune(spec.train["epochs"] - spec.train["fine_tune_epochs"], spec.train["fine_tune_layers"]))
    return extras


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


def signatures(model: keras.Model, spec: ModelSpec, hparams: dict) -> dict:
    """`serving_default` (float images -> probabilities) and `encoded_image` (bytes -> top-k labels); both
    average over a horizontal flip when the recipe sets `test_time_flip`."""
    height, width, channels = image_shape(spec, hparams)
    labels = tf.constant(list(spec.labels) or [str(i) for i in range(model.output_shape[-1])])
    k = min(TOP_K, int(labels.shape[0]))
    classify = classifier(model, bool(spec.train.get("test_time_flip")))

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="image")])
    def serving_default(image):
        return {"probabilities": classify(image)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def encoded_image(image_bytes):
        images, _ = decode_images(image_bytes, height, width, channels)
        scores, ids = tf.math.top_k(classify(images), k=k)
        return {"top_k_labels": tf.gather(labels, ids), "top_k_scores": scores, "top_k_ids": ids}

    return {"serving_default": serving_default, "encoded_image": encoded_image}


def decode_images(image_bytes: tf.Tensor, height: int, width: int, channels: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Encoded images (PNG/JPEG/GIF/BMP, any size) -> float32 [N, height, width, channels] in [0, 1], and each
    image's original (height, width) as int32 [N, 2]. Grayscale/RGBA convert to `channels`; bytes that are not
    an image raise InvalidArgumentError (a server answers INVALID_ARGUMENT)."""

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        resized = tf.image.resize(tf.cast(image, tf.float32) / 255.0, [height, width])
        return resized, tf.shape(image)[:2]

    return tf.map_fn(decode, image_bytes, fn_output_signature=(
        tf.TensorSpec([height, width, channels], tf.float32), tf.TensorSpec([2], tf.int32)))


def warmup_requests(spec: ModelSpec, sample_batch) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Real examples for both signatures, replayed by the server before a version goes AVAILABLE."""
    images = np.asarray(sample_batch[0][:4], dtype=np.float32)
    encoded = np.array([tf.io.encode_png(tf.cast(im * 255.0, tf.uint8)).numpy() for im in images], dtype=object)
    return [("serving_default", {"image": images}), ("encoded_image", {"image_bytes": encoded})]


def evaluate_export(loaded, ds) -> dict:
    """Accuracy of an exported classifier's `serving_default` on raw (uint8 image, label) batches."""
    fn = loaded.signatures["serving_default"]
    correct = total = 0
    for images, labels in ds:
        probabilities = fn(image=tf.cast(images, tf.float32) / 255.0)["probabilities"]
        correct += int(tf.reduce_sum(tf.cast(tf.argmax(probabilities, -1) == labels, tf.int32)))
        total += int(tf.shape(labels)[0])
    return {"accuracy": correct / max(total, 1), "examples": total}

"""A class-conditional generator judged by classifiers it never trained against (bench/generative.py runs it).

Class consistency: the share of samples a classifier assigns to the class they were requested for. `cgan`'s
auxiliary classifier head is in its loss, and the FD `cnn` was the judge its recipe was tuned against (the
head was added when that cnn counted 73% of a projection-only cgan's samples in their class), so neither can
judge it fairly. The independent judge is a different network, the zoo's `resnet`, trained on the real
train split only, after the cgan was trained and exported, with settings fixed before it judged any sample.

Classification Accuracy Score (CAS; Ravuri & Vinyals, 2019): the zoo `cnn` trained only on generated images,
labelled with the class each was requested for, then tested on the real test split; beside it the same
classifier (recipe, epochs, seed, number of images) trained on real train images. Samples that a judge finds
in their class but that cover only part of each class (few modes) give a CAS well below the real accuracy.
Both classifiers are trained by `fit_classifier`, one code path: the cnn's task (optimizer, schedule, loss)
fed uint8 images in batches shuffled as `pipelines.data.load` shuffles them.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipelines import config, data, fid, paths, tasks
from pipelines.tasks.common import to_pixels
from pipelines.tasks.image_generation import generate_served

CAS_CLASSIFIER = "cnn"
SHUFFLE_BUFFER = 10_000  # pipelines.data.load's buffer: the real train split is shuffled this way in the trainer
FIRST_CAS_SEED = 10_000  # CAS images start at this seed, apart from the seeds 0, 1, ... the evaluation draws
SEEDS_PER_CLASS = 1_000  # each class's images use seeds first, first + 1, ...: one per 256 images


def generate(sampler, labels: np.ndarray, first_seed: int, seeds_per_class: int = SEEDS_PER_CLASS) -> np.ndarray:
    """Images [N, H, W, C] in [0, 1] from a conditional `generate` signature, image i of class labels[i]; class
    k's come from seeds first_seed + seeds_per_class * k, + 1, ... (`evaluate_export` draws every class from
    seeds 0, 1, ...: first_seed=0, seeds_per_class=0 give its images)."""
    images = None
    for k in np.unique(labels):
        where = np.flatnonzero(labels == k)
        chunk = generate_served(sampler, len(where), labels=int(k), seed=first_seed + seeds_per_class * int(k))
        if images is None:
            images = np.empty((len(labels), *chunk.shape[1:]), np.float32)
        images[where] = chunk
    return images


def predicted_classes(model: keras.Model | fid.Classifier, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Class ids a classifier (a Keras model giving probabilities, or a `fid.Classifier`) predicts for images
    in [0, 1]."""
    if isinstance(model, fid.Classifier):
        return model(images, batch_size)[1]
    return np.concatenate([np.argmax(model(images[i:i + batch_size], training=False), axis=-1)
                           for i in range(0, len(images), batch_size)])


def auxiliary_head_classes(run_dir: Path, images: np.ndarray, requested: np.ndarray,
                           batch_size: int = 500) -> np.ndarray:
    """Class ids the cgan's own auxiliary classifier head (in its loss) predicts for images in [0, 1], from the
    run's last checkpoint."""
    cgan = config.RunConfig.from_json(json.loads((run_dir / "config.json").read_text())).build()
    checkpoints = paths.checkpoints(run_dir)
    cgan.load_weights(str(checkpoints[max(checkpoints)]))
    outputs = [cgan.discriminator([images[i:i + batch_size] * 2.0 - 1.0, requested[i:i + batch_size].astype(np.int32)],
                                 training=False)
               for i in range(0, len(images), batch_size)]
    return np.concatenate([np.argmax(class_logits, axis=-1) for _, class_logits in outputs])


def shares(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, list[float]]:
    """(share of predictions equal to their label, the same per label class): accuracy and per-class recall."""
    hits = predicted == labels
    return float(np.mean(hits)), [float(np.mean(hits[labels == k])) for k in range(num_classes)]


def as_pixels(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] -> uint8, as a served PNG carries them and as the real splits are stored."""
    return np.asarray(to_pixels(images))


def fit_classifier(images: np.ndarray, labels: np.ndarray, dataset: str, epochs: int,
                   data_dir=None) -> tuple[keras.Model, float]:
    """The zoo `cnn` with its recipe and `epochs`, trained on uint8 `images` [N, 28, 28, 1] with `labels` and
    validated on the real validation split; (the model, its last validation accuracy)."""
    run = config.resolve(CAS_CLASSIFIER, dataset=dataset, recipe={"epochs": epochs})
    task = tasks.get(run.task)(run)
    keras.utils.set_random_seed(run.seed)  # as pipelines.train.train: the same initial weights for every set
    batch_size = run.recipe["batch_size"]
    order = np.random.default_rng(run.seed).permutation(len(images))  # generated images come class by class
    train = (tf.data.Dataset.from_tensor_slices((images[order], labels[order])).cache()
             .shuffle(SHUFFLE_BUFFER, seed=run.seed, reshuffle_each_iteration=True).batch(batch_size)
             .map(task.preprocess(training=True), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    validation = data.load(dataset, tasks.VALIDATION_SPLIT, batch_size=batch_size, data_dir=data_dir,
                           preprocess=task.preprocess(training=False))
    model = run.build()
    task.compile(model, int(train.cardinality()))
    history = model.fit(train, validation_data=validation, epochs=epochs, shuffle=False, verbose=2)
    return model, float(history.history["val_accuracy"][-1])

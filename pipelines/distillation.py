"""Knowledge distillation (Hinton et al. 2015), as keras-io's `Distiller`: a student learns the labels and the
teacher's temperature-softened class probabilities.

    loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T))

The teacher is an exported classifier (its SavedModel's `serving_default`, exactly what a server answers), so
any version of any zoo classifier teaches; its logits are recovered from its probabilities as log p (softmax is
invariant to the constant that differs). The student is a zoo model trained with its own recipe (epochs,
batch, optimizer and schedule), so "the same student alone" is `tfzoo train <student>` with the same seed.

Where the student's recipe does not augment (its train batches are fixed images), the teacher answers each
train image once, before training (`with_teacher`: "offline" distillation, the same numbers as asking it at
every step for a tenth of the compute); with augmentation it answers every augmented batch in the train step.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from typing_extensions import override

from pipelines import data

EPSILON = 1e-7
TEACHER_BATCH = 512


class Distiller(keras.Model):
    """The student, trained by `compute_loss` against the labels and the teacher; `call` is the student's.

    A train batch's x is the images, or (images, the teacher's probabilities) when they were computed before
    training (`with_teacher`); validation batches are images."""

    def __init__(self, student: keras.Model, teacher, *, temperature: float, alpha: float):
        super().__init__()
        self.student, self.teacher = student, teacher  # teacher: images -> class probabilities
        self.temperature, self.alpha = temperature, alpha
        self.student_loss = keras.losses.SparseCategoricalCrossentropy()
        self.distillation_loss = keras.losses.KLDivergence()

    @override
    def call(self, x, training=False):
        images = x[0] if isinstance(x, (tuple, list)) else x
        return self.student(images, training=training)

    @override
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del sample_weight, training
        t = self.temperature
        probabilities = x[1] if isinstance(x, (tuple, list)) else self.teacher(x)
        teacher = tf.nn.softmax(tf.math.log(tf.stop_gradient(probabilities) + EPSILON) / t)
        student = tf.nn.softmax(tf.math.log(y_pred + EPSILON) / t)
        return (self.alpha * self.student_loss(y, y_pred)
                + (1 - self.alpha) * t * t * self.distillation_loss(teacher, student))


def exported_teacher(version_dir) -> callable:
    """The teacher's `serving_default` as a function of float images (what the student is fed)."""
    loaded = tf.saved_model.load(str(version_dir))
    signature = loaded.signatures["serving_default"]
    name = next(iter(signature.structured_input_signature[1]))

    def teach(images):
        return signature(**{name: images})["probabilities"]

    teach.loaded = loaded  # the signature's variables live as long as the loaded object
    return teach


def with_teacher(task, teacher, data_dir) -> tf.data.Dataset:
    """The repeating train pipeline of `task` (no augmentation) with the teacher's probabilities beside each
    image: batches ((images, probabilities), labels), the teacher run once over the split in file order, then
    cached, shuffled, batched and repeated as `pipelines.data.load` does for training."""
    from pipelines.tasks import TRAIN_SPLIT

    if task.recipe.get("augment"):
        raise ValueError("with_teacher needs fixed train images; an augmenting recipe asks the teacher every step")
    run = task.run
    ordered = data.load(run.dataset, TRAIN_SPLIT, batch_size=TEACHER_BATCH, preprocess=task.preprocess(True),
                        data_dir=data_dir, cache=False, example_fn=task.example_fn)
    examples = ordered.map(lambda x, y: ((x, teacher(x)), y)).unbatch().cache()
    examples = examples.shuffle(data.SHUFFLE_BUFFER, seed=run.seed, reshuffle_each_iteration=True)
    return examples.batch(task.recipe["batch_size"]).repeat().prefetch(tf.data.AUTOTUNE)

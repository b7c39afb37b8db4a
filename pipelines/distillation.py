"""Knowledge distillation (Hinton et al. 2015), as keras-io's `Distiller`: a student learns the labels and the
teacher's temperature-softened class probabilities.

    loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T))

The teacher is an exported classifier (its SavedModel's `serving_default`, exactly what a server answers), so
any version of any zoo classifier teaches; its logits are recovered from its probabilities as log p (softmax is
invariant to the constant that differs). The student is a zoo model trained with its own recipe (epochs,
batch, optimizer and schedule), so "the same student alone" is `tfzoo train <student>` with the same seed.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from typing_extensions import override

EPSILON = 1e-7


class Distiller(keras.Model):
    """The student, trained by `compute_loss` against the labels and the teacher; `call` is the student's."""

    def __init__(self, student: keras.Model, teacher, *, temperature: float, alpha: float):
        super().__init__()
        self.student, self.teacher = student, teacher  # teacher: images -> class probabilities
        self.temperature, self.alpha = temperature, alpha
        self.student_loss = keras.losses.SparseCategoricalCrossentropy()
        self.distillation_loss = keras.losses.KLDivergence()

    @override
    def call(self, x, training=False):
        return self.student(x, training=training)

    @override
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del sample_weight, training
        t = self.temperature
        teacher = tf.nn.softmax(tf.math.log(tf.stop_gradient(self.teacher(x)) + EPSILON) / t)
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

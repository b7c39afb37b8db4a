"""What every peer server shares: load a SavedModel's serving_default and call it on a JSON batch."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


class Signature:
    """serving_default of a SavedModel, called the way a naive server calls it: once per request."""

    def __init__(self, path: str):
        self.fn = tf.saved_model.load(path).signatures["serving_default"]
        (self.input_name, spec), = self.fn.structured_input_signature[1].items()
        self.dtype = spec.dtype.as_numpy_dtype

    def predict(self, instances) -> list:
        """{"instances": ...} -> the single output as nested lists."""
        outputs = self.fn(**{self.input_name: tf.constant(np.asarray(instances, dtype=self.dtype))})
        return next(iter(outputs.values())).numpy().tolist()

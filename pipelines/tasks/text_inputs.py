"""In-graph checks of raw string inputs, shared by the text signatures: clear INVALID_ARGUMENT errors."""
from __future__ import annotations

import tensorflow as tf


def checked_text(text: tf.Tensor, *, max_chars: int | None = None, name: str = "text") -> tf.Tensor:
    """`text` [N] once every string is valid UTF-8, not blank and (if given) at most `max_chars` characters."""
    codepoints = tf.strings.unicode_decode(text, "UTF-8", errors="replace", replacement_char=-1)
    checks = [
        tf.debugging.assert_equal(tf.reduce_all(codepoints.flat_values >= 0), True,
                                  message=f"{name}: every string must be valid UTF-8"),
        tf.debugging.assert_positive(tf.strings.length(tf.strings.strip(text)),
                                     message=f"{name}: strings must not be empty or blank"),
    ]
    if max_chars is not None:
        checks.append(tf.debugging.assert_less_equal(
            codepoints.row_lengths(), tf.constant(max_chars, tf.int64),
            message=f"{name}: strings must have at most {max_chars} characters"))
    with tf.control_dependencies(checks):
        return tf.identity(text)

"""What the text tasks share: raw strings straight into the model, and in-graph checks of string inputs."""
from __future__ import annotations

import tensorflow as tf


def checked_text(text: tf.Tensor, *, max_chars: int | None = None, name: str = "text") -> tf.Tensor:
    """`text` [N] once every string is valid UTF-8, not blank and (if given) at most `max_chars` characters."""
    # Valid UTF-8 is exactly what transcoding leaves unchanged (bad bytes become U+FFFD).
    repaired = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
    checks = [
        tf.debugging.assert_equal(tf.reduce_all(repaired == text), True,
                                  message=f"{name}: every string must be valid UTF-8"),
        tf.debugging.assert_positive(tf.strings.length(tf.strings.strip(text)),
                                     message=f"{name}: strings must not be empty or blank"),
    ]
    if max_chars is not None:
        checks.append(tf.debugging.assert_less_equal(
            tf.strings.length(repaired, unit="UTF8_CHAR"), max_chars,
            message=f"{name}: strings must have at most {max_chars} characters"))
    with tf.control_dependencies(checks):
        return tf.identity(text)


def preprocess(spec, recipe: dict, training: bool) -> None:
    """None: text tasks feed the model raw strings (tokenization is part of the model)."""
    return None

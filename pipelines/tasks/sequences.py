"""What the text and sequence tasks share: raw strings in, checked in the graph; the optimizer; exact counts.

Text tasks feed the model raw strings (tokenization is part of the model): no preprocess hook."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import keras
import tensorflow as tf

from pipelines.tasks.common import warmup_cosine


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


def cosine_adamw(recipe: Mapping, steps_per_epoch: int, **kwargs) -> keras.optimizers.AdamW:
    """AdamW at the recipe's learning rate and weight decay, cosine-decayed to 0 over the run."""
    return keras.optimizers.AdamW(warmup_cosine(recipe["learning_rate"], max(1, recipe["epochs"] * steps_per_epoch)),
                                  weight_decay=recipe["weight_decay"], **kwargs)


def share_right(ds: tf.data.Dataset, predict: Callable[[tf.Tensor], tf.Tensor]) -> dict:
    """{"share": the share of (x, y) examples where predict(x) == y, "examples": how many} over batches `ds`."""
    right = total = 0
    for x, y in ds:
        right += int(tf.reduce_sum(tf.cast(predict(x) == y, tf.int32)))
        total += int(tf.shape(y)[0])
    return {"share": right / max(total, 1), "examples": total}

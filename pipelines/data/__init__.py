"""Datasets as TFDS builders, and their batched, prefetched `tf.data` pipelines.

A tfzoo dataset name `x` means tfzoo's offline builder `tfzoo_x` when there is one, else the TFDS
catalog's `x` (which downloads, where the machine can). `tfds:x` always means the catalog's `x`.
Every module of this package is searched for builders named `tfzoo_*`: a new offline dataset
appears by adding its file.
"""
from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from pathlib import Path

import filelock
import tensorflow as tf
import tensorflow_datasets as tfds

from pipelines import paths
from pipelines.data.fashion_mnist import MissingDataError
from pipelines.errors import UserError

PREFIX = "tfzoo_"


def _offline_builders() -> dict[str, type[tfds.core.DatasetBuilder]]:
    """tfzoo name -> builder class, for every `tfzoo_*` builder defined in this package."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, tfds.core.DatasetBuilder) and cls.__module__ == module.__name__
                    and cls.name.startswith(PREFIX)):
                found[cls.name[len(PREFIX):]] = cls
    return found


OFFLINE_BUILDERS = _offline_builders()

__all__ = ["MissingDataError", "OFFLINE_BUILDERS", "builder", "load", "list_datasets"]


def list_datasets() -> list[str]:
    """tfzoo's offline dataset names (any TFDS catalog name works too, with a network)."""
    return sorted(OFFLINE_BUILDERS)


def builder(name: str, data_dir: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
    """The TFDS builder behind tfzoo dataset `name`, prepared (built and cached) in the data dir."""
    data_dir = str(paths.data_dir(data_dir))
    if name in OFFLINE_BUILDERS:
        b = OFFLINE_BUILDERS[name](data_dir=data_dir)
    else:
        try:
            b = tfds.builder(name.removeprefix("tfds:"), data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise UserError(f"unknown dataset {name!r}: tfzoo's offline datasets are {', '.join(list_datasets())}; "
                            "with a network, any TFDS catalog name (tfds:<name>)") from None
    # One preparer at a time: workers of a multi-worker run, or parallel jobs, sharing a data dir.
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(Path(data_dir) / f".{name.replace(':', '_')}.prepare.lock")):
        b.download_and_prepare()
    return b


SHUFFLE_BUFFER = 10_000  # examples a training pipeline shuffles among


def load(
    name: str,
    split: str,
    *,
    batch_size: int,
    preprocess=None,
    shuffle: bool = False,
    data_dir: str | os.PathLike | None = None,
    cache: bool = True,
    seed: int = 0,
    example_fn=None,
) -> tf.data.Dataset:
    """Batched, prefetched (x, y) pipeline of `split`, mapped through `preprocess` per batch.

    `example_fn` maps each TFDS example (its feature dict) to (x, y); by default the supervised keys do.
    """
    # Files shuffled in the seed's order: the same on every worker of a multi-worker run (their shards of one order).
    ds = builder(name, data_dir).as_dataset(split=split, as_supervised=example_fn is None, shuffle_files=shuffle,
                                            read_config=tfds.ReadConfig(shuffle_seed=seed))
    if example_fn is not None:
        ds = ds.map(example_fn, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if preprocess is not None:
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

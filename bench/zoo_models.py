"""Zoo models exported once for the serving benchmarks (bench/mixed_load.py, bench/soak.py), as cheaply as possible.

    from zoo_models import ensure_models, write_config
    models_dir = ensure_models(["cnn", "gpt"])          # bench/.models/<name>/<version>, cached across runs
    write_config(path, {name: models_dir / name for name in ("cnn", "gpt")})

Serving cost does not depend on the weights, so each model trains for one epoch (a few steps for the language
models) on a small offline dataset; the architecture stays the zoo's default for cnn, resnet, unet and gpt (and every
other model but the Keras applications), so what a server spends per request is the real figure. bench/serving.py's
`ensure_cnn` exports cnn the same way to the same place, so the two share one export.

Every model of `zoo.list_models()` exports here (about 15 minutes on a busy 2-core machine, once), with one departure
from the defaults: the Keras applications (mobilenet_v2, efficientnet_b0, resnet50, vgg16, inception_v3) have random
weights (ImageNet's need a network) and run their backbone at its smallest input (32x32; inception_v3 75x75) instead
of 96x96, so their serving cost here is a lower bound.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from google.protobuf import text_format

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from pipelines import train  # noqa: E402
from serving.config import ModelServerConfig  # noqa: E402

MODELS_DIR = BENCH / ".models"
RUNS_DIR = BENCH / ".runs"

_IMAGES = "synthetic_fashion_mnist"  # 600 synthetic 28x28 images: the image models' quick dataset
_LANGUAGE = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "warmup_steps": 1, "eval_batches": 1,
             "jit_compile": False}
_SMALLEST_INPUT = {"mobilenet_v2": 32, "efficientnet_b0": 32, "resnet50": 32, "vgg16": 32, "inception_v3": 75}

# name -> (dataset, hyperparameter overrides, recipe overrides): seconds of training each.
RECIPES: dict[str, tuple[str, dict, dict]] = {
    "cnn": (_IMAGES, {}, {"epochs": 1}),  # as bench/serving.py's ensure_cnn: one export serves both
    "resnet": (_IMAGES, {}, {"epochs": 1}),
    "unet": ("shapes_small", {}, {"epochs": 1, "batch_size": 32}),
    "detector": ("shapes_small", {}, {"epochs": 1, "batch_size": 32}),
    **{name: (_IMAGES, {"backbone_size": size, "weights": "none"}, {"epochs": 1, "fine_tune_epochs": 0})
       for name, size in _SMALLEST_INPUT.items()},
    **{name: (_IMAGES, {}, {"epochs": 1, "batch_size": 64}) for name in ("autoencoder", "vae", "dcgan", "cgan")},
    "gpt": ("shakespeare_char", {}, _LANGUAGE),
    "char_rnn": ("shakespeare_char", {}, _LANGUAGE),
    "text_classifier": ("shakespeare_plays", {}, {"epochs": 1, "batch_size": 256}),
    "seq2seq": ("dates_small", {}, {"epochs": 1}),
    "seq2seq_transformer": ("dates_small", {}, {"epochs": 1}),
    "forecaster": ("co2", {}, {"epochs": 1}),
}


def exported(name: str) -> bool:
    """Whether bench/.models/<name> holds at least one integer version."""
    return any(p.name.isdigit() for p in (MODELS_DIR / name).glob("*"))


def ensure_models(names: list[str] | tuple[str, ...]) -> Path:
    """Export each of `names` not exported yet under bench/.models/<name>/<version>; return bench/.models."""
    for name in names:
        if not exported(name):
            export(name)
    return MODELS_DIR


def export(name: str) -> Path:
    """Train zoo model `name` for its RECIPES entry and export it as the next version; return that version."""
    dataset, hparams, recipe = RECIPES[name]
    print(f"exporting the zoo's {name} (quick training on {dataset}) ...", flush=True)
    run = train.train(name, dataset=dataset, overrides=hparams, recipe_overrides=recipe, models_dir=MODELS_DIR,
                      runs_dir=RUNS_DIR, verbose=0)
    return run.export_dir


def write_config(path: Path, models: dict[str, Path]) -> Path:
    """Write a TF Serving models.config for `models` (name -> base path), atomically; return its path."""
    config = ModelServerConfig()
    config.model_config_list.SetInParent()
    for name, base_path in models.items():
        config.model_config_list.config.add(name=name, base_path=str(Path(base_path).resolve()),
                                            model_platform="tensorflow")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text_format.MessageToString(config))
    os.replace(tmp, path)  # a server polling the file never reads half of it
    return path


if __name__ == "__main__":
    ensure_models(sys.argv[1:] or list(RECIPES))
    print(MODELS_DIR)

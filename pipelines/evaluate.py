"""Evaluate an exported SavedModel version (exactly what a server serves) on a dataset split."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines import export as exporter
from pipelines import paths, tasks
from pipelines.errors import UserError


def latest_version_dir(model_dir: Path, version: int | None = None) -> Path:
    """`model_dir/<version>`, the newest when `version` is None; a clear error if there is none."""
    found = exporter.versions(model_dir)
    if not found:
        raise UserError(f"no exported version under {model_dir}: run `tfzoo train {model_dir.name}` first")
    if version is None:
        return model_dir / str(found[-1])
    if version not in found:
        raise UserError(f"{model_dir} has no version {version}; it has {found}")
    return model_dir / str(version)


def evaluate(version_dir: Path, *, dataset: str | None = None, split: str = "test", batch_size: int = 256,
             data_dir=None) -> dict:
    """Metrics of the exported model in `version_dir` on `split`, computed through its signatures."""
    from pipelines import compress

    card = exporter.read_model_card(version_dir)
    task = tasks.get(card["task"])
    loaded = compress.load_for_evaluation(version_dir)  # model.tflite for a TFLite compression
    ds = task.load_evaluation(dataset or card["dataset"], split, batch_size=batch_size, data_dir=data_dir)
    return {"version_dir": str(version_dir), "split": split, **task.evaluate_export(loaded, ds, card)}


def run(args: argparse.Namespace) -> int:
    """`tfzoo evaluate` from parsed arguments."""
    version_dir = latest_version_dir(paths.models_dir(args.models_dir) / args.model, args.version)
    result = evaluate(version_dir, dataset=args.dataset, split=args.split, batch_size=args.batch_size,
                      data_dir=args.data_dir)
    print(json.dumps(result, indent=2))
    return 0

"""Quality of the text and sequence models (text_classifier, seq2seq, forecaster); writes bench/results/text_models.md.

    nice -n 15 .venv/bin/python bench/text_models.py                 # all three, their default recipes
    nice -n 15 .venv/bin/python bench/text_models.py --models seq2seq --set seq2seq:epochs=1

Each model is trained by `pipelines.train.train` on its default dataset with its default recipe, exported,
and evaluated through the exported SavedModel's signature on the test split (`pipelines.evaluate`),
beside a baseline: the majority class (text_classifier), the seasonal-naive forecast (forecaster). CPU
time is this process's (all threads; `time.process_time`) for training (fit + test evaluation + export).
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from pipelines import data, evaluate, train
from zoo import registry

RESULTS = Path(__file__).resolve().parent / "results" / "text_models.md"
MODELS = ("text_classifier", "seq2seq", "forecaster")
SEQ2SEQ_TARGET = 0.99


def majority_accuracy(dataset: str, split: str = "test") -> tuple[str, float]:
    """The most frequent class of `split` and its share: the accuracy of always predicting it."""
    builder = data.builder(dataset)
    counts = collections.Counter(int(y) for _, y in builder.as_dataset(split=split, as_supervised=True)
                                 .as_numpy_iterator())
    label, count = counts.most_common(1)[0]
    names = builder.info.features[builder.info.supervised_keys[1]].names
    return names[label], count / sum(counts.values())


def bench(model: str, recipe: dict, workdir: Path) -> dict:
    """Train, export and evaluate `model`; return the figures behind its row."""
    spec = registry.get(model)
    cpu, wall = time.process_time(), time.perf_counter()
    run = train.train(model, recipe_overrides=recipe, runs_dir=workdir / "runs", models_dir=workdir / "models",
                      verbose=2)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result = evaluate.evaluate(run.export_dir)
    figures = {"model": model, "dataset": spec.default_dataset, "cpu_minutes": cpu / 60, "wall_minutes": wall / 60,
               "recipe": {**spec.train, **recipe}, "hparams": spec.hparams, "run_metrics": run.metrics,
               "export": result}
    if model == "text_classifier":
        figures["baseline"] = majority_accuracy(spec.default_dataset)
    return figures


def row(f: dict) -> str:
    """One markdown table row: the figure, its baseline or target, and the cost behind it."""
    e, epochs = f["export"], f["recipe"]["epochs"]
    cost = f"{f['cpu_minutes']:.1f} | {f['wall_minutes']:.1f} | {epochs}"
    if f["model"] == "text_classifier":
        label, share = f["baseline"]
        return (f"| text_classifier | {f['dataset']} | test accuracy **{e['accuracy']:.3f}** ({e['examples']} lines "
                f"of 8 unseen plays) | majority class ({label}): {share:.3f} | {cost} |")
    if f["model"] == "seq2seq":
        verdict = "MET" if e["exact_match"] >= SEQ2SEQ_TARGET else "NOT MET"
        return (f"| seq2seq | {f['dataset']} | exact match **{e['exact_match']:.4f}** ({e['examples']} dates in "
                f"held-out phrasings, greedy `translate`) | target >= {SEQ2SEQ_TARGET}: {verdict} | {cost} |")
    verdict = "MET" if e["beats_seasonal_naive"] else "NOT MET"
    return (f"| forecaster | {f['dataset']} | test MAE **{e['mae']:.3f}** ppm ({e['windows']} windows, "
            f"{e['horizon']} weeks ahead) | seasonal-naive MAE {e['seasonal_naive_mae']:.3f}; beats it: {verdict} "
            f"| {cost} |")


def write(figures: list[dict], command: str) -> None:
    """bench/results/text_models.md: the table, then every run's configuration and metrics."""
    lines = [
        "# Text and sequence models: quality",
        "",
        f"Command: `{command}` (under `nice -n 15`, 2 shared CPU cores, {platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "Each model trained by `pipelines.train` with its default recipe on its default dataset, exported, and",
        "evaluated through the exported SavedModel's signature on the test split (`tfzoo evaluate`). CPU minutes:",
        "process CPU time (all threads) of training + test evaluation + export; the machine was shared with other",
        "jobs, so wall minutes are an upper bound.",
        "",
        "| model | dataset | result (test split) | baseline / target | CPU min | wall min | epochs |",
        "|---|---|---|---|---|---|---|",
        *[row(f) for f in figures],
        "",
        "Data: `shakespeare_plays` = spoken lines of the 36 First Folio plays, test = 8 whole plays never seen in",
        "training (pipelines/data/plays.py); `dates` = 60,000 train / 5,000 test procedural English dates -> ISO 8601,",
        "the test phrasings (1 in 5 combinations of template and day/month/year styles) never occur in training",
        "(pipelines/data/translation.py); `co2` = Mauna Loa weekly CO2 1958-2001 (statsmodels), chronological",
        "70/15/15 split, 104 weeks of history -> the next 13 (pipelines/data/timeseries.py).",
        "",
        "## Runs",
        "",
    ]
    for f in figures:
        lines += [f"### {f['model']}", "", "```json",
                  json.dumps({k: f[k] for k in ("hparams", "recipe", "run_metrics", "export")}, indent=1, default=str),
                  "```", ""]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Bench the chosen models and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--set", action="append", default=[], metavar="MODEL:KEY=VALUE",
                        help="override a recipe entry of one model, e.g. seq2seq:epochs=1 (repeatable)")
    args = parser.parse_args(argv)
    recipes: dict[str, dict] = {m: {} for m in args.models.split(",")}
    for item in args.set:
        model, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        recipes[model][key] = registry.coerce(value, registry.get(model).train[key])
    command = " ".join(["python bench/text_models.py", *(argv if argv is not None else sys.argv[1:])])
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-text-") as workdir:
        for model, recipe in recipes.items():
            figures.append(bench(model, recipe, Path(workdir)))
            write(figures, command)  # after each model: a later failure keeps the figures measured so far
    print(RESULTS.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

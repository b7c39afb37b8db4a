"""Quality of the text and sequence models (text_classifier, seq2seq(_transformer), forecaster).

Writes bench/results/text_models.md.

    nice -n 15 .venv/bin/python bench/text_models.py                 # every case, default recipes
    nice -n 15 .venv/bin/python bench/text_models.py --cases seq2seq --set seq2seq:epochs=1

Each case (`CASES`: a model, its dataset and overrides) is trained by `pipelines.train.train`, exported,
and evaluated through the exported SavedModel's signature on the test split (`pipelines.evaluate`),
beside a baseline: the majority class (text_classifier), the seasonal-naive forecast (forecaster). CPU
time is this process's (all threads; `time.process_time`) for training (fit + test evaluation + export).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from provenance import git_commit  # bench/, the script's directory, is on sys.path

from pipelines import data, evaluate, train
from pipelines.data import timeseries
from zoo import registry

RESULTS = Path(__file__).resolve().parent / "results" / "text_models.md"
CASES = {  # name -> (model, dataset (None: the model's default), hyperparameters, recipe)
    "text_classifier": ("text_classifier", None, {}, {}),
    "seq2seq": ("seq2seq", None, {}, {}),
    "seq2seq_transformer": ("seq2seq_transformer", None, {}, {}),
    "forecaster": ("forecaster", None, {}, {}),
    "forecaster_sunspots": ("forecaster", "sunspots", {"input_length": 44, "horizon": 11}, {"batch_size": 16}),
}
SEQ2SEQ_TARGET = 0.99


def majority_accuracy(dataset: str, split: str = "test") -> tuple[str, float]:
    """The most frequent class of `split` and its share: the accuracy of always predicting it."""
    builder = data.builder(dataset)
    counts = collections.Counter(int(y) for _, y in builder.as_dataset(split=split, as_supervised=True)
                                 .as_numpy_iterator())
    label, count = counts.most_common(1)[0]
    names = builder.info.features[builder.info.supervised_keys[1]].names
    return names[label], count / sum(counts.values())


def bench(case: str, recipe_overrides: dict, workdir: Path) -> dict:
    """Train, export and evaluate one case; return the figures behind its row."""
    model, dataset, hparams, recipe = CASES[case]
    spec = registry.get(model)
    dataset, recipe = dataset or spec.default_dataset, {**recipe, **recipe_overrides}
    cpu, wall = time.process_time(), time.perf_counter()
    run = train.train(model, dataset=dataset, overrides=hparams, recipe_overrides=recipe, runs_dir=workdir / "runs",
                      models_dir=workdir / "models", verbose=2)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    figures = {"case": case, "model": model, "dataset": dataset, "cpu_minutes": cpu / 60, "wall_minutes": wall / 60,
               "recipe": dict(run.config.recipe), "hparams": dict(run.config.hparams),
               "run_metrics": run.metrics, "export": evaluate.evaluate(run.export_dir, dataset=dataset)}
    if model == "text_classifier":
        figures["baseline"] = majority_accuracy(dataset)
    return figures


def row(f: dict) -> str:
    """One markdown table row: the figure, its baseline or target, and the cost behind it."""
    e, epochs = f["export"], f["recipe"]["epochs"]
    cost = f"{f['cpu_minutes']:.1f} | {f['wall_minutes']:.1f} | {epochs}"
    if f["model"] == "text_classifier":
        label, share = f["baseline"]
        return (f"| text_classifier | {f['dataset']} | test accuracy **{e['accuracy']:.3f}** ({e['examples']} lines "
                f"of 8 unseen plays; validation, other lines of the training plays: "
                f"{f['run_metrics']['val_accuracy']:.3f}) | majority class ({label}): {share:.3f} | {cost} |")
    if f["model"].startswith("seq2seq"):
        verdict = "MET" if e["exact_match"] >= SEQ2SEQ_TARGET else "NOT MET"
        return (f"| {f['model']} | {f['dataset']} | exact match **{e['exact_match']:.4f}** ({e['examples']} dates in "
                f"held-out phrasings, greedy `translate`) | target >= {SEQ2SEQ_TARGET}: {verdict} | {cost} |")
    verdict = "MET" if e["beats_seasonal_naive"] else "NOT MET"
    step = timeseries.load_series(f["dataset"]).step
    return (f"| forecaster | {f['dataset']} | test MAE **{e['mae']:.3f}** ({e['windows']} windows: "
            f"{e['input_length']} {step}s -> the next {e['horizon']}) | seasonal-naive MAE "
            f"{e['seasonal_naive_mae']:.3f} (period {e['period']}); beats it: {verdict} | {cost} |")



def write(figures: list[dict], command: str) -> None:
    """bench/results/text_models.md: the table, then every run's configuration and metrics."""
    lines = [
        "# Text and sequence models: quality",
        "",
        f"Command: `{command}` · commit {git_commit()}",
        f"({os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average at the end {os.getloadavg()[0]:.1f}).",
        "Each case trained by `pipelines.train` with the model's default recipe (overrides: its run below), exported,",
        "and evaluated through the exported SavedModel's signature on the test split (`tfzoo evaluate`). CPU minutes:",
        "process CPU time (all threads) of training + test evaluation + export; other jobs on the machine lengthen",
        "the wall minutes, not the results.",
        "",
        "| model | dataset | result (test split) | baseline / target | CPU min | wall min | epochs |",
        "|---|---|---|---|---|---|---|",
        *[row(f) for f in figures],
        "",
        "Data: `shakespeare_plays` = spoken lines of the 36 First Folio plays, test = 8 whole plays never seen in",
        "training (pipelines/data/plays.py); `dates` = 60,000 train / 5,000 test procedural English dates -> ISO 8601,",
        "the test phrasings (1 in 5 combinations of template and day/month/year styles) never occur in training",
        "(pipelines/data/translation.py); `co2` = Mauna Loa weekly CO2 1958-2001 (statsmodels), chronological",
        "70/15/15 split, MAE in ppm; `sunspots` = yearly mean sunspot numbers 1700-2008 (statsmodels), the same split",
        "(pipelines/data/timeseries.py).",
        "",
        "## Runs",
        "",
    ]
    for f in figures:
        lines += [f"### {f['case']}", "", "```json",
                  json.dumps({k: f[k] for k in ("hparams", "recipe", "run_metrics", "export")}, indent=1, default=str),
                  "```", ""]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Bench the chosen models and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--set", action="append", default=[], metavar="CASE:KEY=VALUE",
                        help="override a recipe entry of one case, e.g. seq2seq:epochs=1 (repeatable)")
    args = parser.parse_args(argv)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {', '.join(CASES)}")
    recipes: dict[str, dict] = {c: {} for c in args.cases.split(",")}
    for item in args.set:
        case, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        recipes[case][key] = value  # typed and checked by pipelines.config.resolve
    command = " ".join(["python bench/text_models.py", *(argv if argv is not None else sys.argv[1:])])
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-text-") as workdir:
        for case, recipe in recipes.items():
            figures.append(bench(case, recipe, Path(workdir)))
            write(figures, command)  # after each case: a later failure keeps the figures measured so far
    print(RESULTS.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

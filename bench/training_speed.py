"""Training speed: tfzoo's trainer beside a plain-Keras script training the same model, recipe and data.

For each model (cnn, resnet, gpt) two sides run, each in its own process, interleaved (ref, tfzoo, ref, ...):

  tfzoo   `pipelines.train.train(model, export=False)`: its tf.data pipelines, callbacks (TensorBoard, HParams,
          checkpoints, BackupAndRestore, the task's extras) and the test evaluation after `fit`.
  ref     what a competent Keras user writes: the same model (`zoo.build`), compiled by the same task's `compile`
          hook (optimizer, schedule, loss, metrics, XLA as the recipe says), the same data as numpy arrays fed
          through `Dataset.from_tensor_slices(...).shuffle().batch().map().prefetch()` with the same preprocessing,
          `model.fit(..., validation_data=...)` with the default callbacks, then `model.evaluate` on the test split.
  ref-spe only where tfzoo's recipe sets `steps_per_execution` above Keras's default of 1 (gpt): the reference
          with that setting too, reported beside the others (not judged), to show what of tfzoo's speed it is.

Both sides run with verbose=2 and one extra callback, `Timeline`, which records the wall-clock time of every
train and validation batch's *begin* and of every epoch and validation begin/end (begin hooks only: Keras calls
them synchronously, and a callback that leaves the batch-end hooks alone keeps Keras's asynchronous batch-end
dispatch as it would be without it). From the timeline:

  examples/s       batch size / the median train step of the epochs after the first (the time from one call's
                   begin to the next's, divided by the steps between them: `steps_per_execution` steps a call)
  boundary pauses  per epoch k, each beyond its expected compute time: `train->val` (last train step begin to
                   first validation step begin, minus a median train step), `val tail` (last validation step
                   begin to validation end, minus a median validation step), `after val` (validation end to the
                   second train step begin of epoch k+1, minus a median train step: the epoch-end callbacks, the
                   next epoch's first batch); the largest of these over the run is judged. With several steps a
                   call, "a step" in these is a call's steps (the trainer refuses epochs of part of a call)
  fit end          the last epoch's end to `on_train_end` (Keras drops the cached validation iterator there)
  wall             fit() alone, and the whole process (start to exit, measured by this script)

    .venv/bin/python bench/training_speed.py                      # cnn, resnet, gpt; 2 repeats each (~25 min quiet)
    .venv/bin/python bench/training_speed.py --models cnn --repeats 3
    .venv/bin/python bench/training_speed.py --resume /tmp/training-speed-XXXX --repeats cnn=2,resnet=1,gpt=2

Every run is recorded in the work directory's runs.json as it finishes (the timelines and logs beside it), so a
stopped invocation continues with --resume; the report covers every recorded run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import git_commit  # bench/, the script's directory, is on sys.path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
REPORT = BENCH / "results" / "training-speed.md"
PAUSE_LIMIT_S = 0.5
JUDGED = ("train->val", "val tail", "after val")  # the boundary segments the pause target applies to
sys.path.insert(0, str(REPO))

# The zoo recipe of each model, shortened to a few epochs (both sides read the same RunConfig).
RECIPES = {
    "cnn": {"epochs": 4},
    "resnet": {"epochs": 2},
    "gpt": {"epochs": 2, "steps_per_epoch": 250},
}
SHUFFLE_BUFFER = 10_000  # tfzoo's (pipelines.data.load); the reference uses the same


# --- the child processes -----------------------------------------------------------------------------------------

def make_timeline():
    """A Keras callback recording (event, index, time.time()) for fit's events (see the module doc)."""
    import keras

    class Timeline(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.events: list[tuple[str, int, float]] = []

        def mark(self, kind: str, index: int = -1):
            self.events.append((kind, index, time.time()))

        def on_train_begin(self, logs=None):
            self.mark("train_begin", self.model.steps_per_execution)  # batch hooks run once per that many steps

        def on_epoch_begin(self, epoch, logs=None):
            self.mark("epoch_begin", epoch)

        def on_train_batch_begin(self, batch, logs=None):
            self.mark("batch", batch)

        def on_test_begin(self, logs=None):
            self.mark("test_begin")

        def on_test_batch_begin(self, batch, logs=None):
            self.mark("test_batch", batch)

        def on_test_end(self, logs=None):
            self.mark("test_end")

        def on_epoch_end(self, epoch, logs=None):
            self.mark("epoch_end", epoch)

        def on_train_end(self, logs=None):
            self.mark("train_end")

    return Timeline()


def run_tfzoo(model: str, workdir: Path) -> dict:
    """tfzoo's trainer, as `tfzoo train MODEL --no-export` runs it."""
    from pipelines import train

    timeline = make_timeline()
    result = train.train(model, recipe_overrides=RECIPES[model], runs_dir=workdir / "runs", export=False,
                         extra_callbacks=(timeline,), verbose=2)
    return {"events": timeline.events, "fit_seconds": result.metrics["train_seconds"],
            "batch_size": result.config.recipe["batch_size"], "test": {k: v for k, v in result.metrics.items()
                                                                         if k.startswith("test_")}}


def image_arrays(run) -> dict:
    """(uint8 images, labels) numpy arrays of the train, validation and test splits, read from the TFDS build."""
    import tensorflow_datasets as tfds

    from pipelines import data, tasks

    builder = data.builder(run.dataset)
    return {name: tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
            for name, split in (("train", tasks.TRAIN_SPLIT), ("validation", tasks.VALIDATION_SPLIT),
                                ("test", tasks.TEST_SPLIT))}


def image_datasets(run):
    """The reference's image pipelines: arrays -> from_tensor_slices -> shuffle -> batch -> map -> prefetch."""
    import keras
    import tensorflow as tf

    arrays, batch_size = image_arrays(run), run.recipe["batch_size"]
    shift = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant")

    def scale(images, labels):
        return tf.cast(images, tf.float32) / 255.0, labels

    def augment(images, labels):
        images, labels = scale(images, labels)
        return shift(tf.image.random_flip_left_right(images), training=True), labels

    def pipeline(name, training):
        ds = tf.data.Dataset.from_tensor_slices(arrays[name])
        if training:
            ds = ds.shuffle(SHUFFLE_BUFFER, seed=run.seed)
        ds = ds.batch(batch_size).map(augment if training and run.recipe["augment"] else scale,
                                      num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    steps = -(-len(arrays["train"][0]) // batch_size)
    return pipeline("train", True), pipeline("validation", False), pipeline("test", False), steps


def text_datasets(run):
    """The reference's gpt data: one epoch of random train windows drawn in numpy (reshuffled each epoch), the
    same 20 fixed validation batches as tfzoo's, every non-overlapping window of the validation text as test."""
    import numpy as np
    import tensorflow as tf

    from pipelines import data
    from pipelines.data.shakespeare import split_text
    from pipelines.tasks.language_modelling import encode

    recipe, chars = run.recipe, "".join(run.labels)
    length, batch_size, steps = recipe["sequence_length"], recipe["batch_size"], recipe["steps_per_epoch"]
    builder = data.builder(run.dataset)
    train_ids = encode(split_text(builder, "train"), chars)
    validation_ids = encode(split_text(builder, "validation"), chars)

    def windows(ids, starts):
        tokens = ids[starts[:, None] + np.arange(length + 1)]
        return tokens[:, :-1], tokens[:, 1:]

    train_starts = np.random.default_rng(run.seed).integers(0, len(train_ids) - length, steps * batch_size)
    validation_starts = np.random.default_rng(run.seed + 1).integers(
        0, len(validation_ids) - length, recipe["eval_batches"] * batch_size)
    test_starts = np.arange(0, len(validation_ids) - length, length)
    train = tf.data.Dataset.from_tensor_slices(windows(train_ids, train_starts)).shuffle(SHUFFLE_BUFFER, seed=run.seed)
    validation = tf.data.Dataset.from_tensor_slices(windows(validation_ids, validation_starts))
    test = tf.data.Dataset.from_tensor_slices(windows(validation_ids, test_starts))
    return (*(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE) for ds in (train, validation, test)), steps)


def run_reference(model: str, steps_per_execution: bool = False) -> dict:
    """The plain-Keras reference (see the module doc); with `steps_per_execution`, that of tfzoo's recipe (Keras's
    default, 1, without)."""
    import keras

    from pipelines import config, tasks

    run = config.resolve(model, recipe=RECIPES[model])
    keras.utils.set_random_seed(run.seed)
    train, validation, test, steps = (text_datasets if run.task == "language_modelling" else image_datasets)(run)
    net = run.build()
    tasks.get(run.task)(run).compile(net, steps)
    if steps_per_execution:
        net.steps_per_execution = run.recipe["steps_per_execution"]  # as compile(steps_per_execution=...) sets it
    timeline = make_timeline()
    start = time.perf_counter()
    net.fit(train, validation_data=validation, epochs=run.recipe["epochs"], callbacks=[timeline], verbose=2)
    fit_seconds = time.perf_counter() - start
    test_metrics = net.evaluate(test, return_dict=True, verbose=0)
    return {"events": timeline.events, "fit_seconds": round(fit_seconds, 2), "batch_size": run.recipe["batch_size"],
            "test": {f"test_{k}": float(v) for k, v in test_metrics.items()}}


def prepare() -> None:
    """Build the datasets (TFDS, once) and warm the file cache, so that no measured run pays for either; print
    each model's steps_per_execution (its recipe's, as tfzoo trains it) as JSON."""
    from pipelines import config, data
    from zoo import get

    for model in RECIPES:
        data.builder(get(model).default_dataset)
    print(json.dumps({model: config.resolve(model, recipe=RECIPES[model]).recipe["steps_per_execution"]
                      for model in RECIPES}))


def child(side: str, model: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="training-speed-") as workdir:
        result = (run_tfzoo(model, Path(workdir)) if side == "tfzoo"
                  else run_reference(model, steps_per_execution=side == "ref-spe"))
    result["done"] = time.time()
    out.write_text(json.dumps(result))


# --- measuring ---------------------------------------------------------------------------------------------------

def timeline_path(workdir: Path, model: str, side: str, index: int) -> Path:
    """Where a run's child process writes its timeline and figures."""
    return workdir / f"{model}-{side}-{index}.json"


def launch(side: str, model: str, workdir: Path, index: int) -> dict:
    """One side in its own process: its timeline and figures, whole-process wall time and CPU time."""
    out = timeline_path(workdir, model, side, index)
    log = workdir / f"{model}-{side}-{index}.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    started = time.time()
    with log.open("w") as f:
        process = subprocess.Popen([sys.executable, __file__, "--child", side, model, str(out)], cwd=REPO, env=env,
                                   stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    exited = time.time()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{model} {side} exited {process.returncode}; see {log}")
    record = json.loads(out.read_text())
    return {**analyse(record), "side": side, "model": model, "started": started, "process_seconds": exited - started,
            "cpu_seconds": usage.ru_utime + usage.ru_stime, "exit_seconds": exited - record["done"],
            "test": record["test"], "log": str(log)}


def analyse(record: dict) -> dict:
    """Steady-state examples/s and the pauses at each epoch boundary, from a run's timeline."""
    epochs, train_begin, train_end, per_call = [], None, None, 1
    for kind, index, t in record["events"]:
        if kind == "train_begin":
            train_begin, per_call = t, max(1, index)  # -1 in timelines recorded before steps_per_execution
        elif kind == "epoch_begin":
            epochs.append({"begin": t, "batches": [], "test_batches": []})
        elif kind == "batch":
            epochs[-1]["batches"].append((index, t))
        elif kind == "test_batch":
            epochs[-1]["test_batches"].append((index, t))
        elif kind in ("test_begin", "test_end"):
            epochs[-1][kind] = t
        elif kind == "epoch_end":
            epochs[-1]["end"] = t
        elif kind == "train_end":
            train_end = t

    def steps(begins):
        """Seconds per step between consecutive calls' begins (a call runs `per_call` steps, so many batches)."""
        return [(tb - ta) / (ib - ia) for (ia, ta), (ib, tb) in zip(begins, begins[1:], strict=False)]

    steady = epochs[1:] or epochs
    step = statistics.median(d for e in steady for d in steps(e["batches"]))
    val_step = statistics.median(d for e in steady for d in steps(e["test_batches"]))
    boundaries = []
    for k, e in enumerate(epochs):
        boundary = {"epoch": k, "train->val": e["test_batches"][0][1] - e["batches"][-1][1] - per_call * step,
                    "val tail": e["test_end"] - e["test_batches"][-1][1] - per_call * val_step,
                    "epoch-end callbacks": e["end"] - e["test_end"]}
        if k + 1 < len(epochs):
            (first, _), (second, begun) = epochs[k + 1]["batches"][:2]
            boundary["after val"] = begun - e["test_end"] - (second - first) * step
        boundaries.append(boundary)
    pause, segment, epoch = max((b[key], key, b["epoch"]) for b in boundaries for key in JUDGED if key in b)
    return {"examples_per_second": record["batch_size"] / step, "step_ms": step * 1e3, "val_step_ms": val_step * 1e3,
            "steps_per_execution": per_call,
            "boundaries": boundaries, "largest_pause": pause, "largest_pause_at": f"`{segment}` of epoch {epoch}",
            "fit_end_seconds": train_end - epochs[-1]["end"], "fit_seconds": record["fit_seconds"],
            "outside_callbacks_seconds": record["fit_seconds"] - (train_end - train_begin)}


# --- the report --------------------------------------------------------------------------------------------------

def spread(values: list[float], digits: int = 1) -> str:
    """median (min-max)"""
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def versions() -> str:
    out = subprocess.run([sys.executable, "-c", "import keras, tensorflow as tf; print(tf.__version__, "
                          "keras.__version__)"], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout.split()
    return f"TensorFlow {out[0]}, Keras {out[1]}" if len(out) == 2 else "versions unknown"


def model_section(model: str, runs: list[dict]) -> tuple[list[str], list[str]]:
    """The model's table rows (one per side) and its target lines."""
    sides = {side: [r for r in runs if r["side"] == side] for side in ("ref", "tfzoo", "ref-spe")}
    per_call = max((r.get("steps_per_execution", 1) for r in sides["tfzoo"]), default=1)
    names = {"ref": "plain Keras", "tfzoo": "tfzoo" + (f" (steps_per_execution={per_call})" if per_call > 1 else ""),
             "ref-spe": f"plain Keras, steps_per_execution={per_call}"}
    rows = []
    for side, rs in sides.items():
        if not rs:
            continue
        rows.append(
            f"| {model} | {names[side]} | {len(rs)} "
            f"| {spread([r['examples_per_second'] for r in rs], 0)} | {spread([r['step_ms'] for r in rs], 2)} "
            f"| {spread([r['largest_pause'] for r in rs], 2)} | {spread([r['fit_end_seconds'] for r in rs], 2)} "
            f"| {spread([r['outside_callbacks_seconds'] for r in rs], 2)} "
            f"| {spread([r['fit_seconds'] for r in rs])} | {spread([r['process_seconds'] for r in rs])} "
            f"| {spread([r['exit_seconds'] for r in rs], 2)} "
            f"| {spread([r['cpu_seconds'] / 60 for r in rs], 2)} |")
    ref, ours = sides["ref"], sides["tfzoo"]
    if not ref or not ours:
        return rows, []

    def median(rs, key):
        return statistics.median(r[key] for r in rs)

    speed = median(ours, "examples_per_second") / median(ref, "examples_per_second")
    worst = max(ours, key=lambda r: r["largest_pause"])
    pause, paused = worst["largest_pause"], "MET" if worst["largest_pause"] <= PAUSE_LIMIT_S else "NOT MET"
    worst_ref = max(ref, key=lambda r: r["largest_pause"])
    wall = median(ours, "process_seconds") / median(ref, "process_seconds")
    targets = [
        f"- {model}, steady-state examples/s ≥ the reference's: **{'MET' if speed >= 1 else 'NOT MET'}** "
        f"(tfzoo {spread([r['examples_per_second'] for r in ours], 0)} vs "
        f"{spread([r['examples_per_second'] for r in ref], 0)}: {speed:.3f}x the median)",
        f"- {model}, no epoch-boundary pause above {PAUSE_LIMIT_S} s: **{paused}** (tfzoo's largest over "
        f"{len(ours)} runs: {pause:.2f} s, {worst['largest_pause_at']} of run {worst['index']}; the reference's: "
        f"{worst_ref['largest_pause']:.2f} s, {worst_ref['largest_pause_at']} of run {worst_ref['index']})",
        f"- {model}, whole-run wall time ≤ the reference's: **{'MET' if wall <= 1 else 'NOT MET'}** (tfzoo "
        f"{spread([r['process_seconds'] for r in ours])} s vs {spread([r['process_seconds'] for r in ref])} s: "
        f"{wall:.3f}x the median)",
    ]
    if same := sides["ref-spe"]:  # not judged: where tfzoo's gain over the plain script comes from
        targets.append(
            f"- {model}, not a target: plain Keras given the same steps_per_execution={per_call} as tfzoo's "
            f"recipe runs {median(same, 'examples_per_second') / median(ref, 'examples_per_second'):.3f}x the "
            f"plain reference's examples/s; tfzoo runs "
            f"{median(ours, 'examples_per_second') / median(same, 'examples_per_second'):.3f}x its examples/s and "
            f"{median(ours, 'process_seconds') / median(same, 'process_seconds'):.3f}x its whole-run wall time")
    return rows, targets


def boundary_lines(runs: list[dict]) -> list[str]:
    """Every run's pauses, epoch by epoch, in seconds."""
    keys = ("train->val", "val tail", "epoch-end callbacks", "after val")
    lines = ["| model | side | run | epoch | " + " | ".join(keys) + " | fit end |",
             "|---|---|---|---|" + "---|" * (len(keys) + 1)]
    for r in runs:
        for b in r["boundaries"]:
            last = b["epoch"] == len(r["boundaries"]) - 1
            cells = " | ".join(f"{b[k]:.3f}" if k in b else "-" for k in keys)
            lines.append(f"| {r['model']} | {r['side']} | {r['index']} | {b['epoch']} | {cells} "
                         f"| {r['fit_end_seconds']:.3f} |" if last else
                         f"| {r['model']} | {r['side']} | {r['index']} | {b['epoch']} | {cells} | |")
    return lines


def run_lines(runs: list[dict]) -> list[str]:
    """One line per run, in the order they ran, with the machine's load average around it."""
    lines = ["| model | side | run | started (UTC) | commit | load average (start, end) | examples/s "
             "| largest pause s | fit() s | whole process s | CPU min | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    for r in sorted(runs, key=lambda r: r["started"]):
        load = f"{r['load'][0]:.1f}, {r['load'][1]:.1f}" if r.get("load") else "-"
        if r.get("note") and r["note"] not in notes:
            notes.append(r["note"])
        note = f"({notes.index(r['note']) + 1})" if r.get("note") else ""
        lines.append(f"| {r['model']} | {r['side']} | {r['index']} "
                     f"| {time.strftime('%H:%M:%S', time.gmtime(r['started']))} | {r.get('commit', '-')} | {load} "
                     f"| {r['examples_per_second']:,.0f} | {r['largest_pause']:.2f} | {r['fit_seconds']:.1f} "
                     f"| {r['process_seconds']:.1f} | {r['cpu_seconds'] / 60:.2f} | {note} |")
    return lines + [""] + [f"({i}) {note}." for i, note in enumerate(notes, 1)]


def render(runs: list[dict], argv: list[str], started: float, machine: str) -> str:
    cpu_minutes = sum(r["cpu_seconds"] for r in runs) / 60
    process_minutes = sum(r["process_seconds"] for r in runs) / 60
    rows, targets = [], []
    for model in dict.fromkeys(r["model"] for r in runs):
        model_rows, model_targets = model_section(model, [r for r in runs if r["model"] == model])
        rows += model_rows
        targets += model_targets
    recipes = "; ".join(f"{m} {json.dumps(r)}" for m, r in RECIPES.items() if any(x["model"] == m for x in runs))
    return "\n".join([
        "# Training speed: tfzoo's trainer beside plain Keras", "",
        f"Command: `.venv/bin/python bench/training_speed.py{''.join(' ' + a for a in argv)}` · commit "
        f"{git_commit()} (each run's in the last table) · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · "
        f"machine: {machine} · "
        f"{len(runs)} runs, {process_minutes:.1f} min wall and {cpu_minutes:.1f} CPU minutes in all (this "
        f"invocation: {(time.perf_counter() - started) / 60:.1f} min; the load average around each run is in "
        "the last table).", "",
        "Method: `bench/training_speed.py`'s docstring. Each side runs in its own process, interleaved (ref, tfzoo, "
        "ref, tfzoo, ...), both with verbose=2 and the same timing callback. Where tfzoo's recipe runs several "
        "steps per call into TensorFlow (`steps_per_execution`, gpt), a third side, plain Keras with the same "
        "setting, runs interleaved with them and is reported beside them, not judged: the targets compare tfzoo "
        "with plain Keras as a plain script runs it (Keras's default of 1). Data: cnn and resnet on Fashion-MNIST "
        "(train `train[:90%]`, 54,000 images; validation `train[90%:]`, 6,000; test `test`, 10,000); the reference "
        "reads the same TFDS build as numpy arrays. gpt on shakespeare_char: tfzoo draws random train windows of 64 "
        "characters each step, the reference one epoch's worth (250 x 12) once, reshuffled each epoch; both "
        "validate on the same 20 fixed batches and test on every non-overlapping window of the validation text "
        f"(1 example = one 64-character window). Recipes: the zoo's, with {recipes}. Figures: median (min-max) "
        "over runs. `fit() outside callbacks`: the part of `fit()` before `on_train_begin` and after "
        "`on_train_end` (where Keras drops the train iterator). Whole process: start to exit, of which `exit s` "
        "after the results were written. CPU minutes: the process's user + system time.", "",
        "| model | side | runs | examples/s (steady) | step ms | largest boundary pause s | fit end s "
        "| fit() outside callbacks s | fit() s | whole process s | exit s | CPU min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows, "",
        "## Targets", "",
        *targets, "",
        "## Pauses at each epoch boundary (seconds beyond the expected compute)", "",
        "`train->val`: the last train step's begin to the first validation step's, minus a median train step. "
        "`val tail`: the last validation step's begin to the end of validation, minus a median validation step. "
        "`epoch-end callbacks`: the end of validation to this timing callback's `on_epoch_end` (tfzoo's "
        "checkpoints, TensorBoard and sample summaries run before it; the reference's History and progress "
        "line after it, inside `after val`). `after val`: the end of validation to the second train step's begin "
        "of the next epoch, minus a median train step. `fit end`: the last epoch's end to `on_train_end`. "
        "Judged: the largest `train->val`, `val tail` or `after val` of a run.", "",
        *boundary_lines(runs), "",
        "## Runs, in the order they ran", "",
        *run_lines(runs), "",
    ])


def parse_repeats(text: str, models: list[str]) -> dict[str, int]:
    """`2` (every model) or `cnn=2,resnet=1,gpt=2` -> runs of each side per model."""
    if "=" not in text:
        return dict.fromkeys(models, int(text))
    counts = {name: int(count) for name, _, count in (item.partition("=") for item in text.split(","))}
    return {model: counts.get(model, 0) for model in models}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(RECIPES), help="comma-separated, of " + ",".join(RECIPES))
    parser.add_argument("--repeats", default="2", help="runs of each side per model: N, or MODEL=N,... (default 2)")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="a previous invocation's work directory: keep "
                        "its recorded runs (runs.json), run only the missing ones, report all")
    parser.add_argument("--output", type=Path, default=REPORT)
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "MODEL", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], Path(args.child[2]))
        return 0
    if args.prepare:
        prepare()
        return 0
    argv = sys.argv[1:] if argv is None else argv
    started = time.perf_counter()
    models = args.models.split(",")
    repeats = parse_repeats(args.repeats, models)
    machine = f"{os.cpu_count()} cores ({cpu_model()}), {platform.machine()}, {versions()}"
    prepared = subprocess.run([sys.executable, __file__, "--prepare"], cwd=REPO, capture_output=True, text=True)
    if prepared.returncode:
        sys.exit(f"preparing the datasets failed:\n{prepared.stderr[-3000:]}")
    per_call = json.loads(prepared.stdout.strip().splitlines()[-1])
    workdir = args.resume or Path(tempfile.mkdtemp(prefix="training-speed-"))
    record = workdir / "runs.json"
    runs = json.loads(record.read_text()) if args.resume and record.exists() else []
    for r in runs:  # re-analysed from their timelines, so that every run is read by the same code
        r.update(analyse(json.loads(timeline_path(workdir, r["model"], r["side"], r["index"]).read_text())))
    done = {(r["model"], r["side"], r["index"]) for r in runs}
    print(f"logs and timelines: {workdir} ({len(runs)} runs recorded)", flush=True)
    for model in models:
        for index in range(repeats[model]):
            # A third side where tfzoo runs several steps per call: plain Keras with the same steps_per_execution.
            for side in ("ref", "tfzoo", *(["ref-spe"] if per_call[model] > 1 else [])):
                if (model, side, index) in done:
                    continue
                load = os.getloadavg()[0]
                run = {**launch(side, model, workdir, index), "index": index, "load": [load, os.getloadavg()[0]],
                       "commit": git_commit()}
                runs.append(run)
                record.write_text(json.dumps(runs, indent=1))
                print(f"{model} {side} #{index}: {run['examples_per_second']:,.0f} examples/s, largest pause "
                      f"{run['largest_pause']:.2f} s, fit {run['fit_seconds']:.1f} s, process "
                      f"{run['process_seconds']:.1f} s", flush=True)
    order = {model: i for i, model in enumerate(RECIPES)}
    runs.sort(key=lambda r: (order[r["model"]], r["index"], r["side"]))
    args.output.write_text(render(runs, argv, started, machine))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

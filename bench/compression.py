"""Compression: every method beside its float source, in one run, on real data.

Trains the sources through the command line (`tfzoo train`: cnn with seeds 0-2, resnet, gpt), compresses them
(`tfzoo compress`), and measures each version: file size, the quality its card recorded (the source's own
evaluation code and split: Fashion-MNIST `test`, the character corpus' validation text for gpt), in-process
latency at batch 1 and examples/s at batch 32 (SavedModel signature call, or LiteRT with one interpreter of as
many threads as cores), and the served p50 at concurrency 1 over gRPC (tfzoo-model-server with
--prefer_tflite_model). Distillation: a resnet teaches two students, the cnn and a narrow cnn (width=0.25: 8,
16 and 16 units, 1/14 of its weights), seeds 0-2, each beside the same student trained alone with the same recipe
and seeds (the narrow student with the teacher, temperature and alpha chosen for the cnn student). Two teachers
are trained: resnet's own recipe (label smoothing 0.1, the float resnet every method compresses) and the same
without label smoothing.

Settings are chosen on validation (train[90%:]), the test split read only by the chosen ones: pruning's
epochs and learning rate, and distillation's teacher, temperature and alpha (seed 0), each from a small grid run with
`tfzoo compress --no-test` into work/choice/; the chosen setting is then run (3 seeds for distillation) and
tested. Then each student's length, for each side on its own validation: the student's recipe (10 epochs) or three
times as long, distilled (the chosen teacher, temperature and alpha) and alone (alpha=1: the same pipeline with
the labels' loss only). The distilled student is judged against the student alone trained as long (the same
recipe and budget: `tfzoo train cnn --epochs E`, 3 seeds), and, where the alone side chose another length on
its validation, against that too.

Each step records the commit it ran at in work/steps.json; rerun with the same --work to resume (finished steps
are kept, the measurements are repeated).

    .venv/bin/python bench/compression.py --resnet-epochs 30      # ~210 CPU minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.append(str(BENCH))  # after the repository: bench/serving.py must not shadow the serving package
from provenance import children_cpu, git_commit  # noqa: E402

RESULTS = BENCH / "results" / "compression.md"
RECORD = BENCH / "results" / "compression.json"
SEEDS = (0, 1, 2)


PRUNE_GRID = [*({"prune_epochs": e, "prune_learning_rate": lr} for e in (4, 10) for lr in (2e-4, 1e-3)),
              {"prune_epochs": 10, "prune_learning_rate": 2e-3}, {"prune_epochs": 20, "prune_learning_rate": 1e-3}]
# keras-io's setting (T=10, alpha=0.1), Hinton et al.'s lower temperatures, and an even mix with the labels;
# each with two teachers: resnet's recipe (label smoothing 0.1: version 1) and the same without label smoothing
# (version 2), as Mueller et al. (2019, "When does label smoothing help?") found smoothed teachers distill worse.
SETTINGS = [{"temperature": t, "alpha": a} for t, a in ((10.0, 0.1), (4.0, 0.1), (4.0, 0.5), (2.0, 0.5))]
DISTILL_GRID = SETTINGS + [{**s, "teacher": "no_smoothing"} for s in SETTINGS]
TEACHER_VERSIONS = {"label_smoothing": 1, "no_smoothing": 2}  # each teacher's resnet version in work/models
DEFAULT_TEACHER = "label_smoothing"  # a setting without a `teacher` key
NARROW = "width=0.25"  # the narrow student: the cnn with a quarter of its units
# Each student's epochs, chosen on validation for each side: its recipe's (None) or three times as long.
# Distillation is "patient" (Beyer et al. 2022, "Knowledge distillation: a good teacher is patient and
# consistent"): a student matching its teacher can go on improving where one fitting the labels has converged.
LENGTHS = (None, 30)
ALONE = {"alpha": 1.0}  # distill's pipeline with the labels' loss only: the student alone, for choosing its length


def tfzoo(*args: str, work: Path) -> float:
    """Run a tfzoo command with `work`'s models and runs dirs; its CPU minutes."""
    before = children_cpu()
    subprocess.run([sys.executable, "-m", "pipelines.cli", *args, "--models-dir", str(work / "models"),
                    "--runs-dir", str(work / "runs")], cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return round((children_cpu() - before) / 60, 2)


class Steps:
    """The bench's tfzoo commands, each run once per work dir: work/steps.json records its command, CPU minutes
    and the commit it ran at (a resumed bench keeps the finished ones)."""

    def __init__(self, work: Path):
        self.work, self.path = work, work / "steps.json"
        self.done = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def __call__(self, key: str, *command: str, work: Path | None = None) -> None:
        if key in self.done:
            return
        minutes = tfzoo(*command, work=work or self.work)
        self.done[key] = {"command": "tfzoo " + " ".join(command), "cpu_minutes": minutes, "commit": git_commit()}
        self.path.write_text(json.dumps(self.done, indent=2))
        print(key, minutes, "CPU min", flush=True)

    def version(self, key: str, model_dir: Path) -> int:
        """The version step `key` wrote under `model_dir` (the newest there when it first asks), recorded."""
        version = self.done[key].setdefault("version", max(int(p.name) for p in model_dir.iterdir()
                                                           if p.name.isdigit()))
        self.path.write_text(json.dumps(self.done, indent=2))
        return version


def settings_args(settings: dict) -> list[str]:
    """`--set key=value` for each setting (a distillation `teacher` is in the command: distill_command)."""
    return [arg for key, value in settings.items() if key != "teacher" for arg in ("--set", f"{key}={value}")]


def distill_command(settings: dict) -> list[str]:
    """`tfzoo compress resnet --method distill` from the resnet version of the teacher the setting names."""
    version = TEACHER_VERSIONS[settings.get("teacher", DEFAULT_TEACHER)]
    return ["compress", "resnet", "--method", "distill", "--version", str(version)]


def at_length(settings: dict, epochs: int | None) -> dict:
    """A distillation setting with its student trained `epochs` epochs (None: the student's recipe)."""
    if epochs is None:
        return settings
    student_set = ",".join(filter(None, (settings.get("student_set", ""), f"epochs={epochs}")))
    return {**settings, "student_set": student_set}


def length_of(settings: dict) -> int | None:
    """The student's epochs a setting names (None: the student's recipe)."""
    found = [int(item.split("=")[1]) for item in settings.get("student_set", "").split(",")
             if item.startswith("epochs=")]
    return found[0] if found else None


def length_key(epochs: int | None) -> str:
    return "recipe" if epochs is None else str(epochs)


def choose(steps: Steps, name: str, grid: list[dict], command) -> tuple[dict, list[dict]]:
    """Run `command(setting)` (a `tfzoo compress ...`, then `--no-test` and the setting's `--set`s) for each
    setting of `grid` into work/choice/ (sources linked from work/models); the setting of the highest validation
    accuracy, and every setting's."""
    from pipelines import export

    choice = steps.work / "choice"
    (choice / "models").mkdir(parents=True, exist_ok=True)
    model = command(grid[0])[1]
    if not (choice / "models" / model).exists():
        (choice / "models" / model).symlink_to(steps.work / "models" / model)
    tried = []
    for settings in grid:
        key = f"{name} choice {json.dumps(settings, sort_keys=True)}"
        argv = command(settings)
        steps(key, *argv, "--no-test", *settings_args(settings), work=choice)
        out = choice / "models" / f"{model}_{argv[3]}"
        card = export.read_model_card(out / str(steps.version(key, out)))
        assert not card["metrics"], "a choice run must not read the test split"
        tried.append({**settings, "validation_accuracy": card["compression"]["validation_metrics"]["accuracy"]})
    best = max(tried, key=lambda t: t["validation_accuracy"])
    return {k: v for k, v in best.items() if k != "validation_accuracy"}, tried


def newest(work: Path, model: str) -> Path:
    root = work / "models" / model
    return root / str(max(int(p.name) for p in root.iterdir() if p.name.isdigit()))


def runner(version: Path, batch: int):
    """(call(inputs), inputs) of a version's serving_default (gpt: `score`, one forward pass) at `batch`."""
    import numpy as np
    import tensorflow as tf

    from pipelines import export

    card = export.read_model_card(version)
    if card.get("compression", {}).get("format") == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(version / "model.tflite"), num_threads=os.cpu_count())
        run = interpreter.get_signature_runner("serving_default")
        name = next(iter(run.get_input_details()))
        return (lambda x: run(**{name: x})), np.random.default_rng(0).random((batch, 28, 28, 1), np.float32)
    loaded = tf.saved_model.load(str(version))
    signature = loaded.signatures["score" if "score" in loaded.signatures else "serving_default"]  # gpt: a forward
    name, spec = next(iter(signature.structured_input_signature[1].items()))
    if spec.dtype == tf.string:
        inputs = tf.constant([b"ROMEO:\nWhat light"] * batch)
    else:
        inputs = tf.constant(np.random.default_rng(0).random((batch, *spec.shape[1:]), np.float32))
    call = (lambda x, s=signature: s(**{name: x}))
    call.keep = loaded
    return call, inputs


def latency(version: Path, rounds: int = 3) -> dict:
    """Median batch-1 latency (ms) and batch-32 examples/s, each the median of `rounds` rounds."""
    one, x1 = runner(version, 1)
    many, x32 = runner(version, 32)
    for _ in range(20):
        one(x1), many(x32)
    ms, throughput = [], []
    for _ in range(rounds):
        times = []
        for _ in range(200):
            started = time.perf_counter()
            one(x1)
            times.append(time.perf_counter() - started)
        ms.append(1000 * statistics.median(times))
        started = time.perf_counter()
        for _ in range(30):
            many(x32)
        throughput.append(30 * 32 / (time.perf_counter() - started))
    return {"batch1_ms": round(statistics.median(ms), 3), "batch1_ms_range": [round(min(ms), 3), round(max(ms), 3)],
            "batch32_per_s": round(statistics.median(throughput)),
            "batch32_range": [round(min(throughput)), round(max(throughput))]}


def served_p50(work: Path, names: list[str], requests: int = 300) -> dict:
    """gRPC p50 (ms) at concurrency 1 for one batch-1 request of each model's serving_default."""
    import numpy as np

    from serving import config
    from serving.client import GrpcClient
    from serving.launch import ModelServerProcess

    result = {}
    with ModelServerProcess(embedded=True, extra_args=[
            f"--model_config_file={config.write_models_config(work / 'models')}", "--prefer_tflite_model"]) as server:
        client = GrpcClient("127.0.0.1", server.grpc_port)
        for name in names:
            inputs = ({"text": np.array([b"ROMEO:\nWhat light"], dtype=object)} if name.startswith("gpt")
                      else {"image": np.random.default_rng(0).random((1, 28, 28, 1), np.float32)})
            signature = "score" if name.startswith("gpt") else None
            for _ in range(20):
                client.predict(name, inputs, signature_name=signature)
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                client.predict(name, inputs, signature_name=signature)
                times.append(time.perf_counter() - started)
            result[name] = round(1000 * statistics.median(times), 3)
        client.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resnet-epochs", type=int, default=30,
                        help="the teacher's and resnet source's epochs (default: 30, resnet's own recipe)")
    parser.add_argument("--work", type=Path, help="work dir (default: a new temporary one; reuse to resume)")
    parser.add_argument("--steps-only", action="store_true",
                        help="run the training and compression steps, not the measurements (measure later, alone on "
                             "the machine, by running again with the same --work)")
    args = parser.parse_args(argv)
    from pipelines import compress, export

    started, commit = time.perf_counter(), git_commit()  # the measurements' code; each step records its own
    work = args.work or Path(tempfile.mkdtemp(prefix="tfzoo-compression-bench-"))
    step = Steps(work)

    for seed in SEEDS:  # the students alone; cnn seed 0 is also the float cnn every method compresses
        step(f"cnn seed {seed}", "train", "cnn", "--seed", str(seed))
        step(f"cnn {NARROW} seed {seed}", "train", "cnn", "--set", NARROW, "--seed", str(seed), work=work / "narrow")
    step("resnet", "train", "resnet", "--epochs", str(args.resnet_epochs))
    step("resnet no_smoothing", "train", "resnet", "--epochs", str(args.resnet_epochs), "--set", "label_smoothing=0.0")
    step("gpt", "train", "gpt")
    # Compress the float sources: cnn seed 0 (version 1), resnet, gpt.
    for method in ("tflite_dynamic", "tflite_float16", "tflite_int8", "keras_int8"):
        step(f"cnn {method}", "compress", "cnn", "--method", method, "--version", "1")
    for method in ("tflite_dynamic", "tflite_int8"):
        step(f"resnet {method}", "compress", "resnet", "--method", method, "--version", "1")
    step("gpt keras_int8", "compress", "gpt", "--method", "keras_int8")
    prune, prune_tried = choose(step, "cnn prune", PRUNE_GRID,
                                lambda _: ["compress", "cnn", "--method", "prune", "--version", "1"])
    step(f"cnn prune {json.dumps(prune, sort_keys=True)}", "compress", "cnn", "--method", "prune", "--version", "1",
         *settings_args(prune))
    students = {}
    for student, narrow, alone_dir in (("cnn", False, work), (f"cnn {NARROW}", True, work / "narrow")):
        if student == "cnn":  # teacher, temperature and alpha at the student's recipe
            name = "distill"
            chosen, tried = choose(step, name, DISTILL_GRID, distill_command)
        else:  # the narrow student: the cnn student's teacher, temperature and alpha, not tuned again
            name = f"distill {NARROW}"
            chosen, tried = {**students["cnn"]["chosen"], "student_set": NARROW}, []
        # The length, for each side on its own validation (the recipe's length of the cnn student was run above).
        chosen, tried_lengths = choose(step, name, [at_length(chosen, epochs) for epochs in LENGTHS],
                                       distill_command)
        alone = {**ALONE, **({"student_set": NARROW} if narrow else {})}
        alone_chosen, alone_tried = choose(step, f"{student} alone", [at_length(alone, e) for e in LENGTHS],
                                           distill_command)
        versions = []
        for seed in SEEDS:
            key = f"{name} seed {seed} {json.dumps(chosen, sort_keys=True)}"
            step(key, *distill_command(chosen), "--seed", str(seed), *settings_args(chosen))
            versions.append(step.version(key, work / "models" / "resnet_distill"))
        alone_dirs = {}  # the student alone, 3 seeds, at the distilled side's length and at its own
        for epochs in dict.fromkeys((length_of(chosen), length_of(alone_chosen))):
            alone_dirs[epochs] = alone_dir if epochs is None else alone_dir / f"epochs-{epochs}"
            for seed in SEEDS:
                if epochs is not None:
                    step(f"{student} epochs {epochs} seed {seed}", "train", "cnn", "--seed", str(seed), "--epochs",
                         str(epochs), *(["--set", NARROW] if narrow else []), work=alone_dirs[epochs])
        students[student] = {"chosen": chosen, "tried": tried + [t for t in tried_lengths if t not in tried],
                             "alone_chosen": alone_chosen, "alone_tried": alone_tried, "versions": versions,
                             "alone_dirs": alone_dirs}

    if args.steps_only:
        return 0
    rows = []
    for model in ("cnn", "resnet", "gpt"):
        source = work / "models" / model / "1"
        versions = [("float", source)] + [(d.name.removeprefix(f"{model}_"), newest(work, d.name))
                                          for d in sorted((work / "models").iterdir())
                                          if d.name.startswith(f"{model}_") and d.name != "resnet_distill"]
        for method, version in versions:
            card = export.read_model_card(version)
            compression = card.get("compression", {})
            size = (compression.get("bytes", {}).get("tflite") or compression.get("bytes", {}).get("variables")
                    or sum(f.stat().st_size for f in (version / "variables").glob("*") if f.is_file()))
            metrics = card["metrics"] if compression else _source_metrics(version)
            stored = [version / "model.tflite"] if compression.get("format") == "tflite" else [version / "variables"]
            rows.append({"model": model, "method": method, "version": str(version.relative_to(work)),
                         "bytes": size, "zipped_bytes": sum(map(compress.zipped_bytes, stored)), "metrics": metrics,
                         "sparsity": compression.get("sparsity_reached"), **latency(version)})
            print(json.dumps(rows[-1]), flush=True)
    served = served_p50(work, [f"{r['model']}" if r["method"] == "float" else f"{r['model']}_{r['method']}"
                               for r in rows])
    for r in rows:
        r["served_p50_ms"] = served[r["model"] if r["method"] == "float" else f"{r['model']}_{r['method']}"]
    for found in students.values():
        found["distilled"] = [export.read_model_card(work / "models" / "resnet_distill" / str(v))["metrics"][
            "accuracy"] for v in found.pop("versions")]
        found["alone"] = {length_key(epochs): [_source_metrics(where / "models" / "cnn" / str(seed + 1))["accuracy"]
                                        for seed in SEEDS] for epochs, where in found.pop("alone_dirs").items()}
    meta = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "minutes": round((time.perf_counter() - started) / 60, 1), "steps": step.done, "work": str(work),
            "resnet_epochs": args.resnet_epochs, "prune": {"chosen": prune, "tried": prune_tried},
            "teachers": {teacher: export.read_model_card(work / "models" / "resnet" / str(v))[
                "metrics"]["test_accuracy"] for teacher, v in TEACHER_VERSIONS.items()}}
    RECORD.write_text(json.dumps({"rows": rows, "distill": students, **meta}, indent=2))
    RESULTS.write_text(report(rows, students, meta))
    print(RESULTS.read_text())
    return 0


def _source_metrics(version: Path) -> dict:
    """A float source's quality by the same evaluation and split as its compressions (`tfzoo evaluate`)."""
    from pipelines import evaluate, tasks

    task_split = tasks.get(json.loads((version / "assets.extra" / "model_card.json").read_text())["task"])
    result = evaluate.evaluate(version, split=task_split.evaluation_split)
    return {k: v for k, v in result.items() if k not in ("version_dir", "split")}


def quality(metrics: dict) -> tuple[str, float]:
    return ("accuracy", metrics["accuracy"]) if "accuracy" in metrics else ("loss", metrics["loss"])


def report(rows: list[dict], students: dict, meta: dict) -> str:
    import zoo

    lines = ["# Compression: quantized, pruned and distilled zoo models beside their float sources", "",
             f"Command: `.venv/bin/python bench/compression.py --resnet-epochs {meta['resnet_epochs']}` · "
             f"measured at commit {meta['commit']} (each step's commit below) · {meta['date']} · "
             f"{os.cpu_count()} cores · this invocation took {meta['minutes']} min (a resumed work dir: the steps "
             "below ran in earlier invocations, at the commits listed)", "",
             "Quality: the source's own evaluation (`tfzoo evaluate`): Fashion-MNIST `test` (10,000 images) for "
             "cnn and resnet, accuracy; the character corpus' validation text for gpt, loss in nats per "
             "character. Size: the TFLite file, or the SavedModel's variables/. Latency in-process: the "
             "SavedModel's serving_default (TensorFlow), or LiteRT with one interpreter of 2 threads; median of "
             "3 rounds (200 calls at batch 1, 30 at batch 32). Served: tfzoo-model-server with "
             "--prefer_tflite_model, gRPC, one batch-1 request at a time, p50 of 300.", "",
             "Zipped: the same file(s) deflated, where pruning's zeros show.", "",
             "| model | method | size | x smaller | zipped | x smaller zipped | quality | vs float | sparsity | "
             "batch-1 ms (range) | batch-32 examples/s (range) | served p50 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    floats = {r["model"]: r for r in rows if r["method"] == "float"}
    for r in rows:
        base = floats[r["model"]]
        name, value = quality(r["metrics"])
        delta = value - quality(base["metrics"])[1]
        lines.append(f"| {r['model']} | {r['method']} | {r['bytes'] / 1e6:.3f} MB | {base['bytes'] / r['bytes']:.2f} | "
                     f"{r['zipped_bytes'] / 1e6:.3f} MB | {base['zipped_bytes'] / r['zipped_bytes']:.2f} | "
                     f"{name} {value:.4f} | {delta:+.4f} | {r['sparsity'] or '-'} | {r['batch1_ms']} "
                     f"({r['batch1_ms_range'][0]}-{r['batch1_ms_range'][1]}) | {r['batch32_per_s']:,} "
                     f"({r['batch32_range'][0]:,}-{r['batch32_range'][1]:,}) | {r['served_p50_ms']} |")
    lines += ["", "## Targets (issue 17)", ""]

    def row(model, method):
        return next((r for r in rows if r["model"] == model and r["method"] == method), None)

    for model in ("cnn", "resnet"):
        r, base = row(model, "tflite_int8"), floats[model]
        if r:
            ratio = base["bytes"] / r["bytes"]
            delta = 100 * (r["metrics"]["accuracy"] - base["metrics"]["accuracy"])
            lines += [f"- {model} tflite_int8: {ratio:.2f}x smaller than the float variables (target >= 3.5x): "
                      f"{'MET' if ratio >= 3.5 else 'NOT MET'}; accuracy {delta:+.2f} points (target within 0.5): "
                      f"{'MET' if abs(delta) <= 0.5 or delta > 0 else 'NOT MET'}; batch-1 latency "
                      f"{r['batch1_ms']} ms vs float {base['batch1_ms']} ms (target no slower): "
                      f"{'MET' if r['batch1_ms'] <= base['batch1_ms'] else 'NOT MET'}"]
    r = row("gpt", "keras_int8")
    if r:
        ratio, delta = floats["gpt"]["bytes"] / r["bytes"], r["metrics"]["loss"] - floats["gpt"]["metrics"]["loss"]
        lines.append(f"- gpt keras_int8: weights {ratio:.2f}x smaller (target >= 3x): "
                     f"{'MET' if ratio >= 3 else 'NOT MET'}; validation loss {delta:+.4f} (target within 0.03): "
                     f"{'MET' if delta <= 0.03 else 'NOT MET'}")
    r = row("cnn", "prune")
    if r:
        delta = 100 * (r["metrics"]["accuracy"] - floats["cnn"]["metrics"]["accuracy"])
        lines.append(f"- cnn prune ({settings_text(meta['prune']['chosen'])}): sparsity {r['sparsity']} (target "
                     f">= 0.8): {'MET' if r['sparsity'] >= 0.8 else 'NOT MET'}; accuracy {delta:+.2f} points (target "
                     f"within 1): {'MET' if delta >= -1 else 'NOT MET'}; zipped "
                     f"{floats['cnn']['zipped_bytes'] / r['zipped_bytes']:.2f}x smaller")
    if "teachers" in meta:
        lines.append("- teachers (resnet, " + ", ".join(f"{name}: test accuracy {accuracy:.4f} as its training "
                                                        "run measured it" for name, accuracy in
                                                        meta["teachers"].items()) + ")")
    for student, found in students.items():
        distilled, length = found["distilled"], length_of(found["chosen"])
        comparisons = [(length, "trained as long (the same recipe and budget)")]
        if length_of(found["alone_chosen"]) != length:
            comparisons.append((length_of(found["alone_chosen"]), "at the length its own validation chose"))
        for epochs, how in comparisons:
            alone = found["alone"][length_key(epochs)]
            gain = 100 * (statistics.fmean(distilled) - statistics.fmean(alone))
            lines.append(f"- distill (resnet teaches {student}, {settings_text(found['chosen'])}): distilled "
                         f"{', '.join(f'{a:.4f}' for a in distilled)} (mean {statistics.fmean(distilled):.4f}) vs "
                         f"{student} alone {how}, {epochs or zoo.get('cnn').train['epochs']} epochs: "
                         f"{', '.join(f'{a:.4f}' for a in alone)} (mean {statistics.fmean(alone):.4f}), seeds 0-2: "
                         f"{gain:+.2f} points (target >= +0.5): {'MET' if gain >= 0.5 else 'NOT MET'}")
    lines += ["", "## Settings chosen on validation", "",
              "Each setting of the grid run once (seed 0) with `--no-test`: the validation accuracy (train[90%:]) "
              "of its last epoch; the highest is chosen, then run and tested (distillation: seeds 0-2).", ""]
    grids = [("prune", meta["prune"]["tried"], [meta["prune"]["chosen"]])]
    for student, found in students.items():
        grids += [(f"distill to {student}", found["tried"], [found["chosen"]]),
                  (f"{student} alone (distill's pipeline, alpha=1)", found["alone_tried"], [found["alone_chosen"]])]
    for name, grid, chosen in grids:
        for tried in grid:  # marked: the chosen setting, and the first stage's setting it grew from
            setting = {k: v for k, v in tried.items() if k != "validation_accuracy"}
            mark = " (chosen)" if setting in chosen or ("student_set" not in setting and setting in [
                {k: v for k, v in c.items() if k != "student_set"} for c in chosen]) else ""
            lines.append(f"- {name} {settings_text(tried)}: validation accuracy {tried['validation_accuracy']:.4f}"
                         f"{mark}")
    lines += ["", "## Commands, CPU minutes and the commit each ran at", ""]
    for key, done in meta["steps"].items():
        lines.append(f"- `{done['command']}`: {done['cpu_minutes']} CPU min, {done['commit']} ({key})")
    return "\n".join(lines) + "\n"


def settings_text(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items() if k != "validation_accuracy")


if __name__ == "__main__":
    sys.exit(main())

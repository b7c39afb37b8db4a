"""Language models benchmark: gpt at nanoGPT's CPU configuration, char_rnn at the same CPU budget, served generation.

Sections (each one's figures go to bench/results/language.json; every run rewrites bench/results/language.md
from all sections measured so far):
  gpt          nanoGPT's CPU recipe through `pipelines.train.train` (the zoo's defaults: 4 layers, 4 heads,
               128 embedding, block 64, batch 12, 2000 iterations, AdamW lr 1e-3, 100 warmup iterations,
               cosine decay to 1e-4, no dropout, jit_compile=True; export included, as `tfzoo train gpt`)
               against bench/nanogpt_reference.py (nanoGPT's model and training loop in PyTorch, the same
               settings) on the same text, split and vocabulary, each run in its own process, interleaved
               (reference, tfzoo) GPT_REPEATS times: ms/iteration, whole-run wall and CPU time, validation loss
               (tfzoo's 20 random batches, both models), test loss (every window of the validation text).
               Needs PyTorch: pip install -e '.[bench]'.
  step_time    ms/iteration of the same training step with jit_compile=False, and with
               keras.layers.MultiHeadAttention instead of the zoo's keras.ops attention (XLA on).
  char_rnn     char_rnn (the zoo's defaults) trained until it has used the CPU time of the gpt run.
  budget       the gpt configuration that 30 CPU minutes of training serve best: BUDGET_CONFIGS trained at
               once, each in its own process with one TensorFlow thread, each stopped at 30 CPU minutes; a
               40-step probe first sets the iterations (and so the cosine schedule) to end inside the budget.
  generation   a block-256 gpt (4 layers, 4 heads, 128 embedding; untrained weights: speed only) exported and
               served by tfzoo-model-server: tokens/s of `generate` (key/value cache) and `generate_no_cache`
               (recomputing the context each step), one prompt character + 255 new tokens (up to the block
               size), and 1024 new tokens (past the block: re-prefill on the last 128 tokens every 128 tokens).

    .venv/bin/python bench/language.py                 # all sections
    .venv/bin/python bench/language.py --only generation
CPU time is the process's (time.process_time: all its threads), or the server process's for generation.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
RAW = RESULTS / "language.json"
REFERENCE = BENCH / "nanogpt_reference.py"
# gpt against the PyTorch reference of the same run: ms/iteration at most this share of the reference's (the
# whole run and the validation loss: at most the reference's); served generation: the cache's speedup.
TARGETS = {"ms_per_iteration_ratio": 0.8, "cache_speedup": 5.0}
GPT_REPEATS = int(os.environ.get("GPT_REPEATS", 3))  # runs of each side; fewer for a smoke run
SECTIONS = ("gpt", "step_time", "char_rnn", "budget", "generation")
BUDGET_CPU_MINUTES = float(os.environ.get("BUDGET_CPU_MINUTES", 30))  # the budget; smaller for a smoke run
# name -> (hyperparameter overrides, recipe overrides): the zoo's default gpt with more iterations; the
# same width with 4x the context; a deeper, wider model (2.7M parameters) with dropout at block 128.
BUDGET_CONFIGS = {
    "4x128, block 64, batch 12": ({}, {}),
    "4x128, block 256, batch 16": ({"block_size": 256}, {"sequence_length": 256, "batch_size": 16}),
    "6x192, block 128, batch 16, dropout 0.1": ({"n_layer": 6, "n_head": 6, "n_embd": 192, "block_size": 128,
                                                 "dropout": 0.1}, {"sequence_length": 128, "batch_size": 16}),
}
REQUESTS = 5  # per signature, protocol and length: the median is reported

sys.path.insert(0, str(REPO))
from provenance import git_commit  # noqa: E402  (bench/, the script's directory, is on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def step_timer():
    """A Keras callback recording the wall and process CPU time at the end of every call of training steps (one
    step, or `steps_per_execution` steps: Keras calls the batch hooks once per call)."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends: list[list[tuple[float, float, int]]] = []  # (wall, CPU, steps done in the epoch)
            self.train_begin = self.train_end = 0.0  # time.time() stamps

        def on_train_begin(self, logs=None):
            self.train_begin = time.time()

        def on_train_end(self, logs=None):
            self.train_end = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self.ends.append([])

        def on_train_batch_end(self, batch, logs=None):
            self.ends[-1].append((time.perf_counter(), time.process_time(), batch + 1))

        @property
        def iterations(self) -> int:
            return sum(epoch[-1][2] for epoch in self.ends if epoch)

        def ms_per_iteration(self, clock: int = 0, skip: int = 10, statistic=statistics.fmean) -> float:
            """Mean (or `statistic`) wall (clock 0) or CPU (clock 1) time per step between consecutive calls'
            ends inside epochs (a gap divided by the steps it ran), after the first `skip` steps of the run
            (compilation)."""
            gaps, done = [], 0
            for epoch in self.ends:
                for a, b in zip(epoch, epoch[1:], strict=False):
                    if done + a[2] > skip:
                        gaps.append((b[clock] - a[clock]) / (b[2] - a[2]))
                done += epoch[-1][2] if epoch else 0
            return 1000 * statistic(gaps)

    return StepTimer()


def cpu_budget(seconds: float):
    """A Keras callback that stops training once the process has used `seconds` of CPU time."""
    import keras

    class CPUBudget(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.start = time.process_time()
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if time.process_time() - self.start >= seconds:
                self.model.stop_training = True

    return CPUBudget()


def run_training(model: str, recipe: dict | None = None, budget_s: float | None = None,
                 hparams: dict | None = None, export: bool = False, seed: int = 0) -> dict:
    """Train `model` with the zoo's recipe (+ `recipe`, `hparams`) through pipelines.train; figures of the run."""
    from pipelines import train

    timer = step_timer()
    extra = [timer] + ([cpu_budget(budget_s)] if budget_s else [])
    cpu, wall = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train.train(model, overrides=hparams, recipe_overrides=recipe, runs_dir=tmp, models_dir=tmp,
                             export=export, extra_callbacks=tuple(extra), seed=seed, verbose=2)
    iterations = timer.iterations
    return {"val_loss": result.metrics["val_loss"], "test_loss": result.metrics["test_loss"],
            "train_loss": result.metrics["loss"], "iterations": iterations,
            "ms_per_iteration": timer.ms_per_iteration(), "cpu_ms_per_iteration": timer.ms_per_iteration(clock=1),
            "ms_per_iteration_median": timer.ms_per_iteration(statistic=statistics.median),
            "cpu_ms_per_iteration_median": timer.ms_per_iteration(clock=1, statistic=statistics.median),
            "cpu_minutes": (time.process_time() - cpu) / 60,
            "wall_minutes": (time.perf_counter() - wall) / 60, "test_split": result.metrics["test_split"],
            "stamps": {"train_begin": timer.train_begin, "train_end": timer.train_end, "end": time.time()}}


def mha_gpt(**hparams):
    """The zoo's gpt with keras.layers.MultiHeadAttention (causal mask) in every block: training step only."""
    import keras

    import zoo
    from zoo import gpt

    class KerasAttention(keras.layers.Layer):
        def __init__(self, n_embd, n_head, **kwargs):
            super().__init__(**kwargs)
            self.mha = keras.layers.MultiHeadAttention(n_head, n_embd // n_head, use_bias=False)

        def call(self, x, training=False):
            return self.mha(x, x, use_causal_mask=True, training=training), None, None

    spec = zoo.get("gpt")
    h = spec.resolve_hparams(hparams)
    model = gpt.GPT(**h, name="gpt_mha")
    for block in model.blocks:
        block.attn = KerasAttention(h["n_embd"], h["n_head"])  # replaced before any weight exists
    model(np.zeros((1, h["block_size"]), "int32"))
    return model


def time_steps(build, jit_compile: bool, steps: int = 300, recipe: dict | None = None) -> dict:
    """ms/iteration of `steps` training steps of the gpt recipe (+ `recipe`; model from `build()`), and CPU
    minutes."""
    from pipelines import config, tasks

    run = config.resolve("gpt", recipe={**(recipe or {}), "jit_compile": jit_compile, "epochs": 1,
                                        "steps_per_epoch": steps})
    task = tasks.get(run.task)(run)
    splits = task.load_splits(None)
    model = build()
    task.compile(model, steps)
    timer = step_timer()
    cpu = time.process_time()
    model.fit(splits.train, steps_per_epoch=steps, epochs=1, callbacks=[timer], verbose=0)
    return {"ms_per_iteration": timer.ms_per_iteration(), "cpu_ms_per_iteration": timer.ms_per_iteration(clock=1),
            "steps": steps,
            "cpu_minutes": (time.process_time() - cpu) / 60}


def gpt_run(seed: int) -> dict:
    """One `tfzoo train gpt` (run in a child process, `--gpt-run SEED`): run_training's figures, export included."""
    from pipelines import train  # noqa: F401  (importing TensorFlow is part of the whole run: stamped)

    imported = time.time()
    run = run_training("gpt", export=True, seed=seed)
    return {**run, "seed": seed, "stamps": {"imported": imported, **run["stamps"]}}


def reference_config(run) -> list[str]:
    """bench/nanogpt_reference.py's command-line settings from a gpt run's hyperparameters and recipe."""
    h, r = run.hparams, run.recipe
    if r["sequence_length"] != h["block_size"]:
        raise SystemExit("nanoGPT trains on windows of its block size: the gpt recipe's sequence_length "
                         f"({r['sequence_length']}) must equal block_size ({h['block_size']})")
    iterations = r["epochs"] * r["steps_per_epoch"]
    config = {**{k: h[k] for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias")},
              "batch_size": r["batch_size"], "learning_rate": r["learning_rate"], "min_lr": r["min_learning_rate"],
              "warmup_iters": r["warmup_steps"], "max_iters": iterations, "lr_decay_iters": iterations,
              "weight_decay": r["weight_decay"], "beta2": r["beta_2"], "grad_clip": r["clipnorm"],
              "eval_interval": r["steps_per_epoch"], "eval_iters": r["eval_batches"]}
    return [f"--{k}={v}" for k, v in config.items()]


def reference_data(directory: Path, seeds: range) -> dict:
    """nanoGPT's train.bin / val.bin from tfzoo's corpus, split and vocabulary, and for each seed the windows
    tfzoo's run with that seed scores (its validation batches, every test window) in eval-SEED.npz."""
    from pipelines import config, data, tasks
    from pipelines.data.shakespeare import split_text
    from pipelines.tasks.language_modelling import encode

    run = config.resolve("gpt")  # `tfzoo train gpt`'s settings
    builder = data.builder(run.dataset)
    tokens = {}
    for split, name in (("train", "train"), ("validation", "val")):
        ids = encode(split_text(builder, split), "".join(run.labels)).astype(np.uint16)
        ids.tofile(directory / f"{name}.bin")
        tokens[split] = len(ids)
    for seed in seeds:
        splits = tasks.get(run.task)(config.resolve("gpt", seed=seed)).load_splits(None)
        windows = {}
        for split, join in (("validation", np.stack), ("test", np.concatenate)):
            batches = [(x.numpy(), y.numpy()) for x, y in getattr(splits, split)]
            windows[f"{split}_x"], windows[f"{split}_y"] = join([x for x, _ in batches]), join([y for _, y in batches])
        np.savez(directory / f"eval-{seed}.npz", **windows)
    return {"tokens": tokens, "splits": splits.names, "config": reference_config(run)}


def child_run(argv: list[str], log: Path) -> dict:
    """Run a training process to its exit; its last output line (JSON) with the whole run's wall and CPU time
    (user + system, from its rusage) and the wall time of its phases."""
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    with open(log, "w") as out:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode
    exited = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code:
        raise SystemExit(f"{' '.join(argv)} failed ({code}):\n" + "\n".join(log.read_text().splitlines()[-30:]))
    run = json.loads(log.read_text().strip().splitlines()[-1])
    stamps = run.pop("stamps")
    run["whole_wall_s"] = exited - spawned
    run["load_average_1m"] = os.getloadavg()[0]  # at its exit: other work on the machine slows both sides
    run["whole_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    run["phases_s"] = {"start and imports": stamps["imported"] - spawned,
                       "data, model, compile": stamps["train_begin"] - stamps["imported"],
                       "training and its evaluations": stamps["train_end"] - stamps["train_begin"],
                       "after training, to exit": exited - stamps["train_end"]}
    return run


FIGURES = ("ms_per_iteration_median", "ms_per_iteration", "cpu_ms_per_iteration_median", "whole_wall_s",
           "whole_cpu_s", "val_loss", "test_loss", "train_loss")


def summary(runs: list[dict]) -> dict:
    """Median, min and max of each figure (and of each phase) over repeated runs."""
    values = {f: [r[f] for r in runs] for f in FIGURES}
    values.update({f"phase {p}": [r["phases_s"][p] for r in runs] for p in runs[0]["phases_s"]})
    return {"runs": runs, **{stat: {f: fn(v) for f, v in values.items()}
                             for stat, fn in (("median", statistics.median), ("min", min), ("max", max))}}


def section_gpt(raw: dict) -> dict:
    """`tfzoo train gpt` and the PyTorch reference, interleaved, GPT_REPEATS times each; figures and targets."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise SystemExit("the gpt section measures a PyTorch reference in the same run, and PyTorch is not "
                         "installed: pip install -e '.[bench]' (the CPU wheel is enough)")
    seeds = range(GPT_REPEATS)
    runs: dict[str, list[dict]] = {"reference": [], "tfzoo": []}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = reference_data(Path(tmp), seeds)
        for seed in seeds:
            log = Path(tmp) / f"reference-{seed}.log"
            runs["reference"].append(child_run(
                [sys.executable, str(REFERENCE), f"--data={tmp}", f"--eval={tmp}/eval-{seed}.npz",
                 f"--out_dir={tmp}/reference-{seed}", f"--seed={1337 + seed}", *prepared["config"]], log))
            print("reference", {k: runs["reference"][-1][k] for k in FIGURES}, flush=True)
            log = Path(tmp) / f"tfzoo-{seed}.log"
            runs["tfzoo"].append(child_run([sys.executable, __file__, "--gpt-run", str(seed)], log))
            print("tfzoo", {k: runs["tfzoo"][-1][k] for k in FIGURES}, flush=True)
    out = {side: summary(r) for side, r in runs.items()}
    ours, theirs = out["tfzoo"]["median"], out["reference"]["median"]
    limits = {"ms_per_iteration_median": TARGETS["ms_per_iteration_ratio"] * theirs["ms_per_iteration_median"],
              "whole_wall_s": theirs["whole_wall_s"], "val_loss": theirs["val_loss"]}
    out["targets"] = {f: {"limit": limit, "met": ours[f] <= limit} for f, limit in limits.items()}
    reference = runs["reference"][0]
    out.update(repeats=GPT_REPEATS, tokens=prepared["tokens"], splits=prepared["splits"],
               reference_command=["bench/nanogpt_reference.py", *prepared["config"]], torch=reference["torch"],
               threads=reference["threads"], parameters=reference["parameters"],
               cpu_minutes=sum(r["whole_cpu_s"] for side in runs.values() for r in side) / 60)
    return out


def section_step_time(raw: dict) -> dict:
    import zoo

    return {"own_xla": time_steps(lambda: zoo.build("gpt"), True),
            "own_no_xla": time_steps(lambda: zoo.build("gpt"), False),
            "keras_mha_xla": time_steps(mha_gpt, True)}


def budget_run(name: str) -> dict:
    """One configuration of the budget sweep (run in a child process): probe, then train within the budget."""
    import tensorflow as tf

    import zoo

    tf.config.threading.set_intra_op_parallelism_threads(1)  # the configurations share the machine's cores
    tf.config.threading.set_inter_op_parallelism_threads(1)
    hparams, recipe = BUDGET_CONFIGS[name]
    spec = zoo.get("gpt")
    probe = time_steps(lambda: zoo.build("gpt", **hparams), True, steps=40, recipe=recipe)
    budget_s = BUDGET_CPU_MINUTES * 60
    # 0.9: other processes' load varies through the run; evaluation and summaries cost CPU too.
    iterations = int(0.9 * budget_s * 1000 / probe["cpu_ms_per_iteration"])
    steps = spec.train["steps_per_epoch"]
    recipe = {**recipe, "epochs": max(1, iterations // steps)}
    run = run_training("gpt", recipe, budget_s=budget_s, hparams=hparams)
    params = zoo.build("gpt", **hparams).count_params()
    return {**run, "hparams": hparams, "recipe": recipe, "parameters": params,
            "probe_cpu_ms_per_iteration": probe["cpu_ms_per_iteration"], "probe_cpu_minutes": probe["cpu_minutes"]}


def section_budget(raw: dict) -> dict:
    """Every BUDGET_CONFIGS entry at once, one child process each (`--budget-run NAME`)."""
    import subprocess

    logs = {name: BENCH / f".language-budget-{i}.log" for i, name in enumerate(BUDGET_CONFIGS)}
    children = {}
    for name, log in logs.items():
        with open(log, "w") as out:
            children[name] = subprocess.Popen([sys.executable, __file__, "--budget-run", name], stdout=out,
                                              stderr=subprocess.STDOUT)
        print(f"{name}: pid {children[name].pid}, log {log}", flush=True)
    runs = {}
    for name, child in children.items():
        if child.wait():
            raise SystemExit(f"budget run {name!r} failed ({child.returncode}); see {logs[name]}")
        runs[name] = json.loads(logs[name].read_text().strip().splitlines()[-1])
    return {"runs": runs, "best": budget_best(runs), "budget_cpu_minutes": BUDGET_CPU_MINUTES}


def budget_best(runs: dict) -> str:
    """The configuration of the lowest validation loss (the 20 fixed batches); the all-windows loss reads the same
    validation text (the corpus has no test split), so it is reported, not chosen by."""
    return min(runs, key=lambda n: runs[n]["val_loss"])


def section_char_rnn(raw: dict) -> dict:
    if "tfzoo" not in raw.get("gpt", {}):
        raise SystemExit("char_rnn runs at the gpt run's CPU budget: run the gpt section first")
    budget = statistics.median(r["cpu_minutes"] for r in raw["gpt"]["tfzoo"]["runs"]) * 60
    # Enough epochs that the budget, not the recipe, ends the run; the schedule decays over 20k steps.
    return {**run_training("char_rnn", {"epochs": 80}, budget_s=budget), "budget_cpu_minutes": budget / 60}


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def section_generation(raw: dict) -> dict:
    """Served generation: cached vs recomputed decoding, and the cached step with and without XLA (the default
    export has none: stock TF Serving would not compile it; `--set serve_xla=true` opts in)."""
    import keras

    from pipelines import config, export, tasks
    from serving.client import GrpcClient, RestClient
    from serving.launch import ModelServerProcess

    block = 256
    out: dict = {"block_size": block, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        bases = {}
        for xla in (False, True):
            run = config.resolve("gpt", hparams={"block_size": block},
                                 recipe={"sequence_length": block, "eval_batches": 1, "serve_xla": xla})
            keras.utils.set_random_seed(0)  # the same untrained weights in both exports
            model = run.build()
            task = tasks.get(run.task)(run)
            sample_batch = task.load_splits(None).sample_batch
            name = "gpt_xla" if xla else "gpt"
            version = export.export_model(model, task, sample_batch, Path(tmp) / name,
                                          {"dataset": run.dataset, "note": "untrained weights: speed only"})
            bases[name] = version.parent
            out["hparams"] = dict(run.hparams)
        cases = [("gpt", "generate", False), ("gpt_xla", "generate", True), ("gpt", "generate_no_cache", False)]
        for name, signature, xla in cases:
            # A 1,024-token request without the cache takes longer than TF Serving's 30 s REST default.
            with ModelServerProcess(model_name=name, model_base_path=str(bases[name]), embedded=True,
                                    extra_args=["--rest_api_timeout_in_ms=300000"]) as server:
                clients = {"grpc": GrpcClient("127.0.0.1", server.grpc_port, timeout=300),
                           "rest": RestClient("127.0.0.1", server.rest_port, timeout=300)}
                for new_tokens in (block - 1, 1024):
                    for protocol, client in clients.items():
                        inputs = {"prompt": np.array([b"\n"], dtype=object),
                                  "max_new_tokens": np.array([new_tokens], np.int32),
                                  "temperature": np.array([1.0], np.float32), "top_k": np.array([0], np.int32),
                                  "seed": np.array([0], np.int64)}
                        client.predict(name, inputs, signature_name=signature)  # XLA compiles on first use
                        seconds, cpu = [], server_cpu_seconds(server.process.pid)
                        for seed in range(REQUESTS):
                            inputs["seed"][0] = seed + 1
                            start = time.perf_counter()
                            answer = client.predict(name, inputs, signature_name=signature)
                            seconds.append(time.perf_counter() - start)
                            assert len(answer["generated"][0]) == new_tokens
                        result = {"signature": signature, "xla": xla, "protocol": protocol, "new_tokens": new_tokens,
                                  "requests": len(seconds), "median_s": statistics.median(seconds),
                                  "tokens_per_s": new_tokens / statistics.median(seconds),
                                  "server_cpu_minutes": (server_cpu_seconds(server.process.pid) - cpu) / 60}
                        result["tokens_per_server_cpu_s"] = (new_tokens * len(seconds)
                                                             / (result["server_cpu_minutes"] * 60))
                        print(result, flush=True)
                        out["runs"].append(result)
    return out


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"



def when(section: dict) -> str:
    """When a section was measured (and by which command, at which commit), and how busy the machine was
    (1-minute load average at its end)."""
    load = section.get("load_average_1m")
    how = f" by `{section['command']}` at commit {section['commit']}" if "commit" in section else ""
    note = f" {section['note']}" if section.get("note") else ""  # added by hand: how the machine was kept quiet
    load_text = f", load average {load:.1f} at the end." if load else "."
    return f"Measured {section['measured_at']}{how}{load_text}{note}"


def spread(summary: dict, figure: str, digits: int) -> str:
    """`median [min-max]` of a figure over repeated runs."""
    return (f"{fmt(summary['median'][figure], digits)} [{fmt(summary['min'][figure], digits)}–"
            f"{fmt(summary['max'][figure], digits)}]")


def gpt_markdown(gpt: dict) -> list[str]:
    """The gpt section: tfzoo against the PyTorch reference of the same run, the targets, every run."""
    ours, theirs, targets = gpt["tfzoo"], gpt["reference"], gpt["targets"]
    n, tokens = gpt["repeats"], gpt["tokens"]
    iterations = ours["runs"][0]["iterations"]
    ratio = TARGETS["ms_per_iteration_ratio"]
    rows = [
        ("ms/iteration (median gap between consecutive updates, after the first 10; gaps across an evaluation "
         "left out)", "ms_per_iteration_median", 1,
         f"tfzoo <= {ratio} x reference = {targets['ms_per_iteration_median']['limit']:.1f}",
         targets["ms_per_iteration_median"]["met"]),
        ("whole run, wall seconds (process start to exit: imports, data, training, evaluations, checkpoints, "
         "the test; tfzoo also exports)", "whole_wall_s", 1,
         f"tfzoo <= reference = {targets['whole_wall_s']['limit']:.1f}", targets["whole_wall_s"]["met"]),
        (f"validation loss at {iterations} iterations: {gpt['splits']['validation']}, tfzoo's for the repeat's "
         "seed, scored by both models", "val_loss", 3,
         f"tfzoo <= reference = {targets['val_loss']['limit']:.3f}", targets["val_loss"]["met"]),
        (f"test loss: {gpt['splits']['test']}", "test_loss", 3, "", None),
        ("ms/iteration, mean of the same gaps", "ms_per_iteration", 1, "", None),
        ("CPU ms/iteration (process CPU time, all threads; median of the same gaps)", "cpu_ms_per_iteration_median",
         1, "", None),
        ("whole run, CPU seconds (user + system)", "whole_cpu_s", 1, "", None),
        ("train loss (mean of the last 250 updates)", "train_loss", 3, "", None),
    ]
    rows += [(f"whole run, phase: {p} (wall seconds)", f"phase {p}", 1, "", None)
             for p in ours["runs"][0]["phases_s"]]
    lines = ["## gpt against nanoGPT in PyTorch, measured in the same run (nanoGPT's CPU configuration)", "",
             "`tfzoo train gpt` (the zoo's defaults: 4 layers, 4 heads, 128 embedding, block 64, batch 12, "
             f"{iterations} iterations, AdamW (beta2 0.99, weight decay 0.1), lr 1e-3, 100 warmup iterations, cosine "
             "decay to 1e-4, clip 1.0, no dropout, jit_compile=True, export included) against "
             f"`{' '.join(gpt['reference_command'])}`: nanoGPT's model.py and train.py rewritten for this bench "
             f"(PyTorch {gpt['torch']}, {gpt['threads']} threads, eager float32 as nanoGPT's README runs it on a CPU; "
             "the same architecture, initialisation, AdamW settings, schedule, clipping and random-offset batches; "
             "its own estimate_loss on 20 batches of each split every 250 iterations, a checkpoint when the "
             "validation loss improves; it reads train.bin / val.bin that this bench writes beforehand, as nanoGPT's "
             f"prepare.py would). Both models have {gpt['parameters']:,} parameters and read the same "
             f"text, split and vocabulary (train {tokens['train']:,} / validation {tokens['validation']:,} "
             f"characters). Each run is its own process; the runs alternate, reference first, {n} of each; repeat "
             f"i uses seed i (tfzoo) and 1337 + i (reference). Figures: median [min–max] over the {n} runs; the "
             f"targets compare the medians. {fmt(gpt['cpu_minutes'], 1)} CPU minutes in all. " + when(gpt), "",
             "| figure | tfzoo gpt | nanoGPT reference (PyTorch) | target | |", "|---|---|---|---|---|"]
    lines += [f"| {words} | {spread(ours, f, d)} | {spread(theirs, f, d)} | {target} "
              f"| {'' if met is None else verdict(met)} |" for words, f, d, target, met in rows]
    lines += [f"| nanoGPT's own estimate_loss after the last update (20 fresh random validation batches) | "
              f"| {fmt(statistics.median(r['val_loss_estimate'] for r in theirs['runs']))} | | |", "",
              "Every run, in the order run:", "",
              "| repeat | model | ms/iteration (median) | whole run, wall s | whole run, CPU s | validation loss | "
              "test loss | load average at its end |", "|---|---|---|---|---|---|---|---|"]
    for i in range(n):
        for side, runs in (("nanoGPT reference", theirs["runs"]), ("tfzoo gpt", ours["runs"])):
            r = runs[i]
            lines.append(f"| {i} | {side} | {fmt(r['ms_per_iteration_median'], 1)} | {fmt(r['whole_wall_s'], 1)} | "
                         f"{fmt(r['whole_cpu_s'], 1)} | {fmt(r['val_loss'])} | {fmt(r['test_loss'])} | "
                         f"{fmt(r['load_average_1m'], 1)} |")
    return lines + [""]


def write_markdown(raw: dict) -> Path:
    """bench/results/language.md from every section measured so far."""
    lines = ["# Language models benchmark", "",
             f"Command: `.venv/bin/python bench/language.py` (sections: {', '.join(raw)}; each section says when, "
             f"at which commit and by which command it was measured, and the load average at its end) · machine: "
             f"{os.cpu_count()} cores, {platform.machine()} (timings vary up to 2x between identical runs: compare "
             "within a section) · data: `shakespeare_char` (train 1,003,854 / validation 111,540 characters). "
             "CPU minutes: process CPU time (all threads) behind each figure.", ""]
    gpt = raw.get("gpt")
    if gpt:
        lines += gpt_markdown(gpt)
    steps = raw.get("step_time")
    if steps:
        lines += ["## gpt training step: XLA and attention implementation", "",
                  f"The same recipe, {steps['own_xla']['steps']} steps each, in one run; mean step time after the "
                  "first 10 steps. " + when(steps), "",
                  "| variant | ms/iteration (wall) | CPU ms/iteration (all threads) | CPU minutes (+ compile) |",
                  "|---|---|---|---|"]
        names = {"own_xla": "zoo attention (keras.ops), jit_compile=True",
                 "own_no_xla": "zoo attention (keras.ops), jit_compile=False",
                 "keras_mha_xla": "keras.layers.MultiHeadAttention, jit_compile=True"}
        lines += [f"| {name} | {fmt(steps[k]['ms_per_iteration'], 1)} | {fmt(steps[k]['cpu_ms_per_iteration'], 1)} "
                  f"| {fmt(steps[k]['cpu_minutes'], 2)} |" for k, name in names.items() if k in steps] + [""]
    rnn = raw.get("char_rnn")
    if rnn:
        lines += ["## char_rnn at the gpt run's CPU budget", "",
                  f"`tfzoo train char_rnn` (2 x LSTM 128, sequences of 50, batch 50, AdamW lr 2e-3 with a cosine "
                  "schedule over 80 epochs, so the budget stops it near the peak rate), stopped once "
                  f"it had used {fmt(rnn['budget_cpu_minutes'], 2)} CPU minutes (the gpt run's). " + when(rnn), "",
                  "| model | iterations | validation loss (20 random batches) | test loss (all windows) | "
                  "ms/iteration | CPU minutes |", "|---|---|---|---|---|---|",
                  f"| char_rnn | {rnn['iterations']} | {fmt(rnn['val_loss'])} | {fmt(rnn['test_loss'])} | "
                  f"{fmt(rnn['ms_per_iteration'], 1)} | {fmt(rnn['cpu_minutes'], 2)} |"]
        if gpt:
            ours = gpt["tfzoo"]["median"]
            lines.append(f"| gpt (median of the gpt section's tfzoo runs) | {gpt['tfzoo']['runs'][0]['iterations']} "
                         f"| {fmt(ours['val_loss'])} | {fmt(ours['test_loss'])} | {fmt(ours['ms_per_iteration'], 1)} "
                         f"| {fmt(statistics.median(r['cpu_minutes'] for r in gpt['tfzoo']['runs']), 2)} |")
        lines.append("")
    gen = raw.get("generation")
    if gen:
        lines += ["## Served generation: key/value cache, recomputation, XLA", "",
                  f"gpt with block size {gen['block_size']} (4 layers, 4 heads, 128 embedding; the same untrained "
                  "weights, speed only) exported twice by `pipelines.export.export_model`: as by default (no XLA "
                  "in the export, what stock TF Serving serves) and with `--set serve_xla=true` (the cached decoding "
                  "step and re-prefill XLA-compiled; TF Serving then needs --xla_cpu_compilation_enabled=true); "
                  "served by tfzoo-model-server, one server at a time. One request generates the whole text "
                  f"(prompt \"\\n\", temperature 1, no top-k); after one unmeasured request, the median of "
                  f"{REQUESTS} requests, and tokens per CPU second of the server process (steadier than wall time "
                  "on a shared machine). " + when(gen) + " "
                  f"{gen['block_size'] - 1} new tokens fill the block; 1024 go past it (cache: re-prefill on the "
                  "last 128 tokens every 128 tokens; no cache: the last 256 tokens at every step).", "",
                  "| signature | XLA | protocol | new tokens | median s/request | tokens/s | tokens per server CPU s | "
                  "server CPU minutes |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['signature']} | {'yes' if r.get('xla') else 'no'} | {r['protocol']} | {r['new_tokens']} | "
                  f"{fmt(r['median_s'])} | {fmt(r['tokens_per_s'], 1)} | {fmt(r['tokens_per_server_cpu_s'], 1)} | "
                  f"{fmt(r['server_cpu_minutes'], 3)} |" for r in gen["runs"]]
        lines.append("")
        for figure, words in (("tokens_per_s", "tokens/s"), ("tokens_per_server_cpu_s", "tokens per server CPU s")):
            by = {(r["signature"], bool(r.get("xla")), r["protocol"], r["new_tokens"]): r[figure]
                  for r in gen["runs"]}
            for protocol in ("grpc", "rest"):
                key = (protocol, gen["block_size"] - 1)
                speedup = by[("generate", False, *key)] / by[("generate_no_cache", False, *key)]
                lines.append(f"- cache speedup up to the block size, {words} ({protocol}): {speedup:.1f}x; target >= "
                             f"{TARGETS['cache_speedup']:.0f}x: {verdict(speedup >= TARGETS['cache_speedup'])}")
                for tokens in (gen["block_size"] - 1, 1024):
                    if ("generate", True, protocol, tokens) in by:
                        ratio = by[("generate", True, protocol, tokens)] / by[("generate", False, protocol, tokens)]
                        lines.append(f"- XLA on the cached step, {tokens} tokens, {words} ({protocol}): {ratio:.2f}x "
                                     "the default export's")
        lines.append("")
    sweep = raw.get("budget")
    if sweep:
        lines += [f"## gpt at a budget of {sweep['budget_cpu_minutes']} CPU minutes: which configuration", "",
                  "Each configuration trained through `pipelines.train.train` in its own process, all at once "
                  "(one TensorFlow thread each), stopped at the budget; AdamW (beta2 0.99, weight decay 0.1), lr "
                  "1e-3, 100 warmup iterations, cosine decay to 1e-4 over the iterations a 40-step probe said "
                  "would fit (90% of the budget), clip 1.0, jit_compile=True. Ranked and chosen by the validation loss "
                  "(20 fixed batches); the all-windows loss (every non-overlapping window of the validation text at "
                  "the model's block size) reads the same text, as the corpus has no test split. " + when(sweep), "",
                  "| configuration | parameters | iterations | tokens seen | CPU ms/iteration | CPU minutes "
                  "(training) | validation loss (20 batches) | test loss (all windows) | train loss |",
                  "|---|---|---|---|---|---|---|---|---|"]
        chosen = budget_best(sweep["runs"])
        for name, r in sorted(sweep["runs"].items(), key=lambda item: item[1]["val_loss"]):
            tokens = r["iterations"] * r["recipe"].get("batch_size", 12) * r["recipe"].get("sequence_length", 64)
            lines.append(f"| {name}{' (best)' if name == chosen else ''} | {r['parameters']:,} "
                         f"| {r['iterations']} | {tokens / 1e6:.1f}M | {fmt(r['cpu_ms_per_iteration'], 1)} "
                         f"| {fmt(r['cpu_minutes'], 1)} | {fmt(r['val_loss'])} | {fmt(r['test_loss'])} "
                         f"| {fmt(r['train_loss'])} |")
        best = sweep["runs"][chosen]
        lines += ["", f"Best at {sweep['budget_cpu_minutes']} CPU minutes: **{chosen}** (validation loss "
                  f"{fmt(best['val_loss'])}); reproduce: `tfzoo train gpt "
                  + " ".join(f"--set {k}={v}" for k, v in {**best["hparams"], **best["recipe"]}.items()) + "`.", ""]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "language.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-run", metavar="NAME", help=argparse.SUPPRESS)  # one budget-sweep child
    parser.add_argument("--gpt-run", metavar="SEED", type=int, help=argparse.SUPPRESS)  # one tfzoo gpt child
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to (re)measure: {', '.join(SECTIONS)} (default: all)")
    args = parser.parse_args(argv)
    if args.budget_run:
        print(json.dumps(budget_run(args.budget_run)), flush=True)
        return 0
    if args.gpt_run is not None:
        print(json.dumps(gpt_run(args.gpt_run)), flush=True)
        return 0
    raw = json.loads(RAW.read_text()) if RAW.is_file() else {}
    for name in args.only.split(","):
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}; sections: {', '.join(SECTIONS)}")
        print(f"== {name}", flush=True)
        raw[name] = globals()[f"section_{name}"](raw)
        raw[name]["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        raw[name]["load_average_1m"] = os.getloadavg()[0]  # other jobs on the machine slow the wall-clock figures
        raw[name]["commit"] = git_commit()
        raw[name]["command"] = " ".join([*([f"nice -n {os.nice(0)}"] if os.nice(0) else []),
                                         ".venv/bin/python bench/language.py", *(argv or sys.argv[1:])])
        RESULTS.mkdir(exist_ok=True)
        RAW.write_text(json.dumps(raw, indent=2))
        print(f"wrote {write_markdown(raw)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

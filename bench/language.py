"""Language models benchmark: gpt at nanoGPT's CPU configuration, char_rnn at the same CPU budget, served generation.

Sections (each one's figures go to bench/results/language.json; every run rewrites bench/results/language.md
from all sections measured so far):
  gpt          nanoGPT's CPU recipe through `pipelines.train.train` (the zoo's defaults: 4 layers, 4 heads,
               128 embedding, block 64, batch 12, 2000 iterations, AdamW lr 1e-3, 100 warmup iterations,
               cosine decay to 1e-4, no dropout) with jit_compile=True: validation loss (20 random batches),
               test loss (every window of the validation text), ms/iteration, CPU minutes.
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

    nice -n 15 .venv/bin/python bench/language.py                 # all sections
    nice -n 15 .venv/bin/python bench/language.py --only generation
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
NANOGPT = {"val_loss": 1.956, "ms_per_iteration": 48.0}  # nanoGPT (PyTorch, CPU, eager) on this corpus, 2 cores
TARGETS = {"val_loss": 1.95, "ms_per_iteration": 0.8 * NANOGPT["ms_per_iteration"], "cache_speedup": 5.0}
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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def step_timer():
    """A Keras callback recording the wall and process CPU time at every training batch's end."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends: list[list[tuple[float, float]]] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.ends.append([])

        def on_train_batch_end(self, batch, logs=None):
            self.ends[-1].append((time.perf_counter(), time.process_time()))

        def ms_per_iteration(self, clock: int = 0, skip: int = 10) -> float:
            """Mean wall (clock 0) or CPU (clock 1) time between consecutive steps inside epochs, after the
            first `skip` steps of the run (compilation)."""
            gaps = [b[clock] - a[clock] for epoch in self.ends for a, b in zip(epoch, epoch[1:], strict=False)]
            return 1000 * statistics.fmean(gaps[skip:])

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
                 hparams: dict | None = None) -> dict:
    """Train `model` with the zoo's recipe (+ `recipe`, `hparams`) through pipelines.train; figures of the run."""
    from pipelines import train

    timer = step_timer()
    extra = [timer] + ([cpu_budget(budget_s)] if budget_s else [])
    cpu, wall = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train.train(model, overrides=hparams, recipe_overrides=recipe, runs_dir=tmp, export=False,
                             extra_callbacks=tuple(extra), verbose=2)
    iterations = sum(len(e) for e in timer.ends)
    return {"val_loss": result.metrics["val_loss"], "test_loss": result.metrics["test_loss"],
            "train_loss": result.metrics["loss"], "iterations": iterations,
            "ms_per_iteration": timer.ms_per_iteration(), "cpu_ms_per_iteration": timer.ms_per_iteration(clock=1),
            "cpu_minutes": (time.process_time() - cpu) / 60,
            "wall_minutes": (time.perf_counter() - wall) / 60, "test_split": result.metrics["test_split"]}


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
    import zoo
    from pipelines import tasks

    spec = zoo.get("gpt")
    recipe = {**spec.train, **(recipe or {}), "jit_compile": jit_compile, "epochs": 1, "steps_per_epoch": steps}
    task = tasks.get(spec.task)
    splits = tasks.load_splits(task, spec, recipe, spec.default_dataset)
    model = build()
    task.compile(model, spec, recipe, steps)
    timer = step_timer()
    cpu = time.process_time()
    model.fit(splits.train, steps_per_epoch=steps, epochs=1, callbacks=[timer], verbose=0)
    return {"ms_per_iteration": timer.ms_per_iteration(), "cpu_ms_per_iteration": timer.ms_per_iteration(clock=1),
            "steps": steps,
            "cpu_minutes": (time.process_time() - cpu) / 60}


def section_gpt(raw: dict) -> dict:
    return run_training("gpt")


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
    best = min(runs, key=lambda n: runs[n]["test_loss"])
    return {"runs": runs, "best": best, "budget_cpu_minutes": BUDGET_CPU_MINUTES}


def section_char_rnn(raw: dict) -> dict:
    if "gpt" not in raw:
        raise SystemExit("char_rnn runs at the gpt run's CPU budget: run the gpt section first")
    budget = raw["gpt"]["cpu_minutes"] * 60
    # Enough epochs that the budget, not the recipe, ends the run; the schedule decays over 20k steps.
    return {**run_training("char_rnn", {"epochs": 80}, budget_s=budget), "budget_cpu_minutes": budget / 60}


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def section_generation(raw: dict) -> dict:
    import zoo
    from pipelines import tasks, train
    from serving.client import GrpcClient, RestClient
    from serving.launch import ModelServerProcess

    block = 256
    spec = zoo.get("gpt")
    hparams = spec.resolve_hparams({"block_size": block})
    model = zoo.build("gpt", **hparams)
    recipe = {**spec.train, "sequence_length": block, "eval_batches": 1}
    sample_batch = tasks.load_splits(tasks.get(spec.task), spec, recipe, spec.default_dataset).sample_batch
    out: dict = {"block_size": block, "hparams": hparams, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        version = train.export_model(model, spec, hparams, sample_batch, tmp,
                                     {"dataset": spec.default_dataset, "note": "untrained weights: speed only"})
        with ModelServerProcess(model_name="gpt", model_base_path=str(version.parent), embedded=True) as server:
            clients = {"grpc": GrpcClient("127.0.0.1", server.grpc_port),
                       "rest": RestClient("127.0.0.1", server.rest_port)}
            for signature in ("generate", "generate_no_cache"):
                for new_tokens in (block - 1, 1024):
                    for protocol, client in clients.items():
                        inputs = {"prompt": np.array([b"\n"], dtype=object),
                                  "max_new_tokens": np.array([new_tokens], np.int32),
                                  "temperature": np.array([1.0], np.float32), "top_k": np.array([0], np.int32),
                                  "seed": np.array([0], np.int64)}
                        seconds, cpu = [], server_cpu_seconds(server.process.pid)
                        for seed in range(REQUESTS):
                            inputs["seed"][0] = seed
                            start = time.perf_counter()
                            answer = client.predict("gpt", inputs, signature_name=signature)
                            seconds.append(time.perf_counter() - start)
                            assert len(answer["generated"][0]) == new_tokens
                        run = {"signature": signature, "protocol": protocol, "new_tokens": new_tokens,
                               "requests": len(seconds), "median_s": statistics.median(seconds),
                               "tokens_per_s": new_tokens / statistics.median(seconds),
                               "server_cpu_minutes": (server_cpu_seconds(server.process.pid) - cpu) / 60}
                        run["tokens_per_server_cpu_s"] = new_tokens * len(seconds) / (run["server_cpu_minutes"] * 60)
                        print(run, flush=True)
                        out["runs"].append(run)
    return out


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def when(section: dict) -> str:
    """When a section was measured, and how busy the machine was (1-minute load average at its end)."""
    load = section.get("load_average_1m")
    return f"Measured {section['measured_at']}" + (f", load average {load:.1f} at the end." if load else ".")


def write_markdown(raw: dict) -> Path:
    """bench/results/language.md from every section measured so far."""
    lines = ["# Language models benchmark", "",
             f"Command: `nice -n 15 .venv/bin/python bench/language.py` (sections: {', '.join(raw)}) · machine: "
             f"{os.cpu_count()} cores, {platform.machine()}, shared with other jobs (timings vary up to 2x between "
             "identical runs) · data: `shakespeare_char` (train 1,003,854 / validation 111,540 characters). "
             "CPU minutes: process CPU time (all threads) behind each figure.", ""]
    gpt = raw.get("gpt")
    if gpt:
        lines += ["## gpt, nanoGPT's CPU configuration (`tfzoo train gpt`, the zoo's defaults)", "",
                  "4 layers, 4 heads, 128 embedding, block 64, batch 12, 2000 iterations, AdamW (beta2 0.99, weight "
                  "decay 0.1), lr 1e-3, 100 warmup iterations, cosine decay to 1e-4, clip 1.0, no dropout, "
                  "jit_compile=True. " + when(gpt), "",
                  "| figure | tfzoo gpt | nanoGPT (PyTorch CPU) | target | |", "|---|---|---|---|---|",
                  f"| validation loss at {gpt['iterations']} iterations (20 random batches of the validation split) "
                  f"| {fmt(gpt['val_loss'])} | {NANOGPT['val_loss']} | <= {TARGETS['val_loss']} "
                  f"| {verdict(gpt['val_loss'] <= TARGETS['val_loss'])} |",
                  f"| ms/iteration (mean step time, after the first 10 steps) | {fmt(gpt['ms_per_iteration'], 1)} "
                  f"| {NANOGPT['ms_per_iteration']} | <= {TARGETS['ms_per_iteration']:.1f} "
                  f"| {verdict(gpt['ms_per_iteration'] <= TARGETS['ms_per_iteration'])} |",
                  *([f"| CPU ms/iteration (process CPU time, all threads) | {fmt(gpt['cpu_ms_per_iteration'], 1)} "
                     "| | | |"] if "cpu_ms_per_iteration" in gpt else []),
                  f"| test loss ({gpt['test_split']}) | {fmt(gpt['test_loss'])} | | | |",
                  f"| train loss (mean of the last epoch) | {fmt(gpt['train_loss'])} | | | |",
                  f"| CPU minutes / wall minutes of the whole run (data, training, evaluation, TensorBoard samples) "
                  f"| {fmt(gpt['cpu_minutes'], 2)} / {fmt(gpt['wall_minutes'], 2)} | | | |", ""]
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
            lines.append(f"| gpt | {gpt['iterations']} | {fmt(gpt['val_loss'])} | {fmt(gpt['test_loss'])} | "
                         f"{fmt(gpt['ms_per_iteration'], 1)} | {fmt(gpt['cpu_minutes'], 2)} |")
        lines.append("")
    gen = raw.get("generation")
    if gen:
        lines += ["## Served generation: key/value cache vs recomputation", "",
                  f"gpt with block size {gen['block_size']} (4 layers, 4 heads, 128 embedding; untrained weights, "
                  "speed only) exported by `pipelines.train.export_model` and served by tfzoo-model-server; one "
                  f"request generates the whole text (prompt \"\\n\", temperature 1, no top-k); median of {REQUESTS} "
                  "requests, and tokens per CPU second of the server process (steadier than wall time on a shared "
                  "machine). " + when(gen) + " "
                  f"{gen['block_size'] - 1} new tokens fill the block; 1024 go past it (cache: re-prefill on the "
                  "last 128 tokens every 128 tokens; no cache: the last 256 tokens at every step).", "",
                  "| signature | protocol | new tokens | median s/request | tokens/s | tokens per server CPU s | "
                  "server CPU minutes |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['signature']} | {r['protocol']} | {r['new_tokens']} | {fmt(r['median_s'])} | "
                  f"{fmt(r['tokens_per_s'], 1)} | {fmt(r['tokens_per_server_cpu_s'], 1)} | "
                  f"{fmt(r['server_cpu_minutes'], 3)} |" for r in gen["runs"]]
        lines.append("")
        for figure, words in (("tokens_per_s", "tokens/s"), ("tokens_per_server_cpu_s", "tokens per server CPU s")):
            by = {(r["signature"], r["protocol"], r["new_tokens"]): r[figure] for r in gen["runs"]}
            for protocol in ("grpc", "rest"):
                key = (protocol, gen["block_size"] - 1)
                speedup = by[("generate", *key)] / by[("generate_no_cache", *key)]
                lines.append(f"- cache speedup up to the block size, {words} ({protocol}): {speedup:.1f}x; target >= "
                             f"{TARGETS['cache_speedup']:.0f}x: {verdict(speedup >= TARGETS['cache_speedup'])}")
        lines.append("")
    sweep = raw.get("budget")
    if sweep:
        lines += [f"## gpt at a budget of {sweep['budget_cpu_minutes']} CPU minutes: which configuration", "",
                  "Each configuration trained through `pipelines.train.train` in its own process, all at once "
                  "(one TensorFlow thread each), stopped at the budget; AdamW (beta2 0.99, weight decay 0.1), lr "
                  "1e-3, 100 warmup iterations, cosine decay to 1e-4 over the iterations a 40-step probe said "
                  "would fit (90% of the budget), clip 1.0, jit_compile=True. Ranked by test loss: every "
                  "non-overlapping window of the validation text at the model's block size. " + when(sweep), "",
                  "| configuration | parameters | iterations | tokens seen | CPU ms/iteration | CPU minutes "
                  "(training) | validation loss (20 batches) | test loss (all windows) | train loss |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in sorted(sweep["runs"].items(), key=lambda item: item[1]["test_loss"]):
            tokens = r["iterations"] * r["recipe"].get("batch_size", 12) * r["recipe"].get("sequence_length", 64)
            lines.append(f"| {name}{' (best)' if name == sweep['best'] else ''} | {r['parameters']:,} "
                         f"| {r['iterations']} | {tokens / 1e6:.1f}M | {fmt(r['cpu_ms_per_iteration'], 1)} "
                         f"| {fmt(r['cpu_minutes'], 1)} | {fmt(r['val_loss'])} | {fmt(r['test_loss'])} "
                         f"| {fmt(r['train_loss'])} |")
        best = sweep["runs"][sweep["best"]]
        lines += ["", f"Best at {sweep['budget_cpu_minutes']} CPU minutes: **{sweep['best']}** (test loss "
                  f"{fmt(best['test_loss'])}); reproduce: `tfzoo train gpt "
                  + " ".join(f"--set {k}={v}" for k, v in {**best["hparams"], **best["recipe"]}.items()) + "`.", ""]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "language.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-run", metavar="NAME", help=argparse.SUPPRESS)  # one budget-sweep child
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to (re)measure: {', '.join(SECTIONS)} (default: all)")
    args = parser.parse_args(argv)
    if args.budget_run:
        print(json.dumps(budget_run(args.budget_run)), flush=True)
        return 0
    raw = json.loads(RAW.read_text()) if RAW.is_file() else {}
    for name in args.only.split(","):
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}; sections: {', '.join(SECTIONS)}")
        print(f"== {name}", flush=True)
        raw[name] = globals()[f"section_{name}"](raw)
        raw[name]["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        raw[name]["load_average_1m"] = os.getloadavg()[0]  # other jobs on the machine slow the wall-clock figures
        RESULTS.mkdir(exist_ok=True)
        RAW.write_text(json.dumps(raw, indent=2))
        print(f"wrote {write_markdown(raw)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

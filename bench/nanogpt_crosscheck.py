"""Is bench/nanogpt_reference.py as fast as nanoGPT itself? Both on the same data, config and machine, in turn.

bench/language.py's gpt section compares `tfzoo train gpt` with bench/nanogpt_reference.py (PyTorch, written
for this bench after nanoGPT). A reference slower than the real thing would flatter tfzoo, so this runs
karpathy/nanoGPT's own train.py (from a checkout you give: it is not a dependency) with the README's CPU
command, on tfzoo's Shakespeare corpus and vocabulary, and the reference with the same settings, `--repeats`
times each, interleaved; it reports the median ms/iteration of each (nanoGPT's own `time ...ms` log lines;
the reference's gaps between updates) and writes bench/results/nanogpt-crosscheck.md.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanoGPT
    .venv/bin/python bench/nanogpt_crosscheck.py /tmp/nanoGPT --iterations 300 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from provenance import git_commit  # noqa: E402

# nanoGPT's README, "I only have a macbook" (CPU): the settings both sides run with.
CPU_COMMAND = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
               "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
               "--dropout=0.0"]
WARMUP_ITERATIONS = 10  # not timed: allocator and thread-pool start-up


def write_data(directory: Path) -> int:
    """tfzoo's corpus as nanoGPT's prepare.py writes it (train.bin, val.bin, meta.pkl); the vocabulary size."""
    import numpy as np

    from pipelines import config, data
    from pipelines.data.shakespeare import split_text
    from pipelines.tasks.language_modelling import encode

    run = config.resolve("gpt")
    chars = "".join(run.labels)
    builder = data.builder(run.dataset)
    directory.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train"), ("validation", "val")):
        encode(split_text(builder, split), chars).astype(np.uint16).tofile(directory / f"{name}.bin")
    with open(directory / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                     "stoi": {c: i for i, c in enumerate(chars)}}, f)
    return len(chars)


def nanogpt_run(checkout: Path, dataset: str, iterations: int, out_dir: Path) -> dict:
    argv = [sys.executable, "train.py", *CPU_COMMAND, f"--dataset={dataset}", f"--max_iters={iterations}",
            f"--lr_decay_iters={iterations}", f"--eval_interval={iterations}", f"--out_dir={out_dir}"]
    started = time.perf_counter()
    out = subprocess.run(argv, cwd=checkout, capture_output=True, text=True, check=True).stdout
    times = [float(t) for i, t in re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", out, re.M)
             if int(i) >= WARMUP_ITERATIONS and int(i) % iterations]  # not the evaluation iterations
    return {"ms_per_iteration": statistics.median(times), "iterations_timed": len(times),
            "whole_s": time.perf_counter() - started}


def reference_run(data_dir: Path, vocab_size: int, iterations: int, out_dir: Path) -> dict:
    settings = [a for a in CPU_COMMAND[1:] if not a.startswith(("--device", "--compile", "--log_interval"))]
    argv = [sys.executable, str(BENCH / "nanogpt_reference.py"), f"--data={data_dir}", f"--out_dir={out_dir}",
            *settings, f"--vocab_size={vocab_size}", f"--max_iters={iterations}", f"--lr_decay_iters={iterations}",
            f"--eval_interval={iterations}", "--learning_rate=1e-3", "--min_lr=1e-4", "--warmup_iters=100",
            "--beta2=0.99", "--weight_decay=0.1", "--grad_clip=1.0", f"--warmup_gaps={WARMUP_ITERATIONS}"]
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {"ms_per_iteration": result["ms_per_iteration_median"], "whole_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help="a clone of https://github.com/karpathy/nanoGPT")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if not (args.checkout / "train.py").is_file():
        parser.error(f"{args.checkout} is not a nanoGPT checkout (no train.py)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.checkout, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    dataset = "tfzoo_shakespeare_char"
    data_dir = args.checkout / "data" / dataset
    vocab_size = write_data(data_dir)
    runs: dict[str, list[dict]] = {"nanoGPT train.py": [], "bench/nanogpt_reference.py": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for repeat in range(args.repeats):
                runs["nanoGPT train.py"].append(nanogpt_run(args.checkout, dataset, args.iterations,
                                                            Path(tmp) / f"nanogpt-{repeat}"))
                runs["bench/nanogpt_reference.py"].append(reference_run(data_dir, vocab_size, args.iterations,
                                                                        Path(tmp) / f"reference-{repeat}"))
                print({side: r[-1] for side, r in runs.items()}, flush=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    import torch

    lines = ["# nanoGPT's own train.py beside bench/nanogpt_reference.py", "",
             f"Command: `.venv/bin/python bench/nanogpt_crosscheck.py NANOGPT_CHECKOUT --iterations {args.iterations} "
             f"--repeats {args.repeats}` · tfzoo commit {git_commit()} · nanoGPT commit {commit} · "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {os.cpu_count()} cores, {platform.machine()}, "
             f"torch {torch.__version__} · load average at the end {os.getloadavg()[0]:.1f}.", "",
             "Both: nanoGPT's README CPU settings (" + " ".join(CPU_COMMAND[1:]) + f"), {args.iterations} "
             f"iterations, tfzoo's Shakespeare corpus and {vocab_size}-character vocabulary; ms/iteration is the "
             f"median over iterations {WARMUP_ITERATIONS}+ (not the evaluation ones), median (min-max) over the "
             "repeats, run in turn.", "",
             "| side | ms/iteration | whole run s |", "|---|---|---|"]
    for side, results in runs.items():
        ms, whole = [r["ms_per_iteration"] for r in results], [r["whole_s"] for r in results]
        lines.append(f"| {side} | {statistics.median(ms):.1f} ({min(ms):.1f}-{max(ms):.1f}) | "
                     f"{statistics.median(whole):.1f} ({min(whole):.1f}-{max(whole):.1f}) |")
    ours = statistics.median(r["ms_per_iteration"] for r in runs["bench/nanogpt_reference.py"])
    theirs = statistics.median(r["ms_per_iteration"] for r in runs["nanoGPT train.py"])
    verdict = ("not slower" if ours <= theirs else "within the 5% this check allows" if ours <= theirs * 1.05
               else "SLOWER by more than 5%: it flatters tfzoo")
    lines += ["", f"The reference takes {ours / theirs:.2f}x nanoGPT's time per iteration ({verdict}).", ""]
    (BENCH / "results" / "nanogpt-crosscheck.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

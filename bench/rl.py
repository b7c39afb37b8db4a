"""Reinforcement learning: the zoo's agents against gymnasium's reward thresholds, and the served policy's speed.

Every cell trains through the command line a user runs (printed in the report), as a subprocess, and reads
its run directory: evaluations.jsonl (the greedy validation return of 100 episodes after each epoch, with the
training loop's CPU seconds so far) and metrics.json (the test: 100 greedy episodes on seeds never played in
training or validation, with the weights of the best validation epoch). Steps and CPU minutes "to threshold"
are those of the first evaluation at or above it (validation episodes); the figure judged is the test's.

    .venv/bin/python bench/rl.py                       # everything (~30 CPU minutes on 2 cores)
    .venv/bin/python bench/rl.py --only cartpole taxi  # some cells
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

RESULTS = BENCH / "results" / "rl.md"
RECORD = BENCH / "results" / "rl.json"
EVAL = ["--set", "eval_episodes=100"]

# cell -> (model, environment, --set arguments, target on the test's mean return, seeds)
CELLS = {
    "cartpole": ("dqn", "CartPole-v1", ["--set", "epochs=20", "--set", "stop_at_threshold=true"], 475.0, [0, 1, 2]),
    # RL Zoo's tuned Acrobot DQN (train_freq 4, gradient_steps 4, target every 250 updates, lr 6.3e-4, batch 128,
    # buffer 50k, exploration 12% to 0.1).
    "acrobot": ("dqn", "Acrobot-v1", ["--set", "epochs=20", "--set", "stop_at_threshold=true", "--set",
                                      "train_frequency=4", "--set", "gradient_steps=4", "--set",
                                      "target_update_interval=250", "--set", "learning_rate=6.3e-4", "--set",
                                      "batch_size=128", "--set", "buffer_size=50000", "--set",
                                      "exploration_fraction=0.12", "--set", "exploration_final_eps=0.1"], -100.0, [0]),
    "taxi": ("q_learning", "Taxi-v4", [], 7.5, [0]),
    "frozenlake": ("q_learning", "FrozenLake-v1", ["--set", "epochs=20", "--set", "stop_at_threshold=true"], 0.70,
                   [0]),
}


def train_cell(name: str, seed: int, work: Path) -> dict:
    """Train one cell's agent with one seed through `tfzoo train`; what its run recorded."""
    model, env, sets, target, _ = CELLS[name]
    command = ["tfzoo", "train", model, "--env", env, "--seed", str(seed), *sets, *EVAL]
    run_id = f"{name}-{seed}"
    before, started = children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines.cli", *command[1:], "--run-id", run_id,
                    "--runs-dir", str(work / "runs"), "--models-dir", str(work / "models")],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    cpu, wall = children_cpu() - before, time.perf_counter() - started
    run_dir = work / "runs" / model / run_id
    evaluations = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    recorded = json.loads((run_dir / "config.json").read_text())
    reached = next((e for e in evaluations if e["return_mean"] >= target), None)
    return {"cell": name, "seed": seed, "command": " ".join(command), "env": env, "model": model,
            "test_return_mean": metrics["test_return_mean"], "test_return_std": metrics["test_return_std"],
            "best_validation": max(e["return_mean"] for e in evaluations),
            "steps": evaluations[-1]["step"], "steps_to_threshold": reached and reached["step"],
            "loop_cpu_minutes_to_threshold": reached and round(reached["cpu_seconds_this_session"] / 60, 2),
            "command_cpu_minutes": round(cpu / 60, 2), "wall_minutes": round(wall / 60, 2),
            "target": target, "export": str(work / "models" / model), "commit": git_commit(),
            "hparams": recorded["hparams"], "recipe": recorded["recipe"]}


def served_speed(export_root: Path, repeats: int = 3, actions: int = 1_000) -> dict:
    """Actions per second for one CartPole environment acting through the server (one observation a request,
    as `tfzoo play` with one episode does), over gRPC and REST, beside the in-process signature call."""
    import shutil

    import numpy as np
    import tensorflow as tf

    from pipelines import export
    from serving import config
    from serving.client import GrpcClient, RestClient
    from serving.launch import ModelServerProcess

    # CartPole seed 0's policy (the dqn versions also hold the other seeds' and Acrobot's), alone as version 1.
    source = next(v for v in (export_root / "dqn").iterdir()
                  if v.name.isdigit() and export.read_model_card(v)["run_id"] == "cartpole-0")
    served = Path(tempfile.mkdtemp(prefix="tfzoo-rl-served-"))
    shutil.copytree(source, served / "dqn" / "1")
    version = served / "dqn" / "1"
    observations = np.random.default_rng(0).normal(size=(actions, 1, 4)).astype(np.float32)
    act = tf.saved_model.load(str(version)).signatures["serving_default"]
    results: dict[str, list[float]] = {"in-process signature call": [], "gRPC": [], "REST": []}
    with ModelServerProcess(embedded=True, extra_args=[
            f"--model_config_file={config.write_models_config(served)}"]) as server:
        clients = {"gRPC": GrpcClient("127.0.0.1", server.grpc_port), "REST": RestClient("127.0.0.1", server.rest_port)}
        for _ in range(repeats):  # interleaved rounds
            for name in results:
                call = ((lambda o: act(observation=tf.constant(o))["action"]) if name.startswith("in-process")
                        else (lambda o, c=clients[name]: c.predict("dqn", {"observation": o})["action"]))
                for o in observations[:50]:  # warm
                    call(o)
                started = time.perf_counter()
                for o in observations:
                    call(o)
                results[name].append(actions / (time.perf_counter() - started))
        clients["gRPC"].close()
    return {name: [round(v, 1) for v in values] for name, values in results.items()}


def report(records: list[dict], speed: dict | None, meta: dict) -> str:
    lines = ["# Reinforcement learning: agents against gymnasium's thresholds, and the served policy", "",
             f"Command: `.venv/bin/python bench/rl.py` (cells may be re-run alone with `--only`: each row's commit "
             f"is listed under Commands) · report written at commit {meta['commit']} · {meta['date']} · "
             f"{os.cpu_count()} cores: CPU minutes are each command's own; wall minutes and the served actions/s "
             "slow down with other work on the machine" + (f" · {meta['note']}" if meta.get("note") else ""), "",
             "Each row trains through the command shown (plus `--run-id`, `--runs-dir`, `--models-dir`). After each "
             "epoch (5,000 steps for dqn, 25,000 for q_learning) the greedy policy plays 100 validation episodes "
             "(seeds 10,000-10,099); the run keeps the weights of its best validation epoch and, with "
             "`stop_at_threshold`, stops at the first that reaches the environment's reward threshold. **Test**: "
             "100 greedy episodes on seeds 1,000,000-1,000,099, played once, at the end. CPU minutes: the "
             "training loop's own to the threshold (from evaluations.jsonl), and the whole command's (TensorFlow's "
             "import, evaluations and export included).", "",
             "| cell | seed | test return (mean ± sd, 100 episodes) | target | verdict | best validation | steps to "
             "threshold | steps run | loop CPU min to threshold | command CPU min | wall min |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        verdict = "MET" if r["test_return_mean"] >= r["target"] else "NOT MET"
        lines.append(f"| {r['env']} `{r['model']}` | {r['seed']} | {r['test_return_mean']:.2f} ± "
                     f"{r['test_return_std']:.2f} | ≥ {r['target']:g} | {verdict} | {r['best_validation']:.2f} | "
                     f"{r['steps_to_threshold'] or 'not reached'} | {r['steps']} | "
                     f"{r['loop_cpu_minutes_to_threshold'] or '-'} | {r['command_cpu_minutes']} | "
                     f"{r['wall_minutes']} |")
    lines += ["", "Commands, with the hyperparameters and recipe each run recorded (config.json):", ""]
    for r in {r["command"]: r for r in records}.values():
        lines += [f"- `{r['command']}` (commit {r.get('commit', '?')})",
                  f"- hyperparameters: `{json.dumps(r['hparams'])}`", f"- recipe: `{json.dumps(r['recipe'])}`"]
    cartpole = [r for r in records if r["cell"] == "cartpole"]
    if cartpole:
        steps = [r["steps_to_threshold"] for r in cartpole if r["steps_to_threshold"]]
        cpu = [r["loop_cpu_minutes_to_threshold"] for r in cartpole if r["loop_cpu_minutes_to_threshold"]]
        lines += ["", "### CartPole-v1 targets (issue 16)", "",
                  f"- test return ≥ 475 on every seed: {sum(r['test_return_mean'] >= 475 for r in cartpole)} of "
                  f"{len(cartpole)} seeds",
                  f"- threshold reached within 100,000 steps: {len(steps)} of {len(cartpole)} seeds"
                  + (f"; steps median {statistics.median(steps):,.0f} (range {min(steps):,}-{max(steps):,})"
                     if steps else ""),
                  "- within 15 CPU minutes: " + (f"loop CPU median {statistics.median(cpu):.2f} min (range "
                                                 f"{min(cpu)}-{max(cpu)})" if cpu else "not reached")]
    if speed:
        lines += ["", "## The served policy: actions per second", "",
                  "One CartPole observation per request, one request after the other (an agent acting in one "
                  "environment through the server), 1,000 actions a round, 3 interleaved rounds; the dqn export "
                  "of CartPole seed 0; tfzoo-model-server with default flags.", "",
                  "| path | actions/s median | range |", "|---|---|---|"]
        for name, values in speed.items():
            lines.append(f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f}-{max(values):,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=[*CELLS, "serving"],
                        help="cells to run (default: all; none: rewrite the report from the record)")
    parser.add_argument("--note", help="how the machine was used during the run, for the report's header (kept by "
                                       "a rewrite of the report, dropped by a later run of any cell)")
    args = parser.parse_args(argv)
    cells = [*CELLS, "serving"] if args.only is None else args.only
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tfzoo-rl-bench-"))
    recorded = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    records, speed = recorded.get("records", []), recorded.get("speed")
    # A note describes the run it came with: a rewrite of the report keeps it, a run of any cell replaces it.
    note = args.note if args.note is not None or cells else recorded.get("note")
    for name in cells:
        if name == "serving":
            continue
        records = [r for r in records if r["cell"] != name]
        for seed in CELLS[name][4]:
            record = train_cell(name, seed, work)
            print(json.dumps(record), flush=True)
            records.append(record)
            RECORD.write_text(json.dumps({"records": records, "speed": speed}, indent=2))  # kept if a later cell fails
    if "serving" in cells:
        if not (work / "models" / "dqn").is_dir():  # the policy served: CartPole seed 0's
            previous = next((r for r in records if r["cell"] == "cartpole" and r["seed"] == 0
                             and Path(r["export"]).is_dir()), None)
            work = Path(previous["export"]).parent.parent if previous else work
            if previous is None:
                train_cell("cartpole", 0, work)
        speed = served_speed(work / "models")
        print(json.dumps(speed), flush=True)
    records.sort(key=lambda r: (list(CELLS).index(r["cell"]), r["seed"]))
    meta = {"commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "minutes": (time.perf_counter() - started) / 60, "note": note}
    RECORD.write_text(json.dumps({"records": records, "speed": speed, **meta}, indent=2))
    RESULTS.write_text(report(records, speed, meta))
    print(RESULTS.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

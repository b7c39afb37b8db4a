"""Mixed-load benchmark (issue 13, item 6): does a slow model starve a fast one on the same server?

One tfzoo-model-server serves the zoo's cnn, resnet, unet and gpt (bench/zoo_models.py) from one models.config.
Phases, each `--seconds` long, with GET /v1/models/cnn polled at 20 req/s throughout:
  cnn solo    cnn at concurrency 8: REST by wrk -t2 -c8 --latency, gRPC by h2load (one HTTP/2 connection, 8 Predict
              calls in flight, every answer's time from its --log-file)
  gpt solo    two clients (one REST, one gRPC) sending 1,024-token `generate` requests back to back (after one
              warm-up generate before all phases: the first context refill compiles)
  cnn + gpt   the cnn measurements again while the two gpt clients keep generating
Reported: cnn p50/p99 and req/s beside its solo figures, the status endpoint's p99, the server's CPU seconds and
gpt's tokens/s per phase (each generate's tokens spread evenly over its duration), against the targets:
status p99 < 20 ms; cnn p99 < 25 ms and >= 40% of its solo req/s while the generates run.

    .venv/bin/python bench/mixed_load.py             # prints the report (make bench-serving puts it in serving.md)
    .venv/bin/python bench/mixed_load.py --quick     # 4 s phases
`run(args)` returns the markdown section (it reads `args.seconds`, and `args.server_args` if present).
"""
from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # the repo first: its `serving` package, not bench/serving.py

from zoo_models import ensure_models, write_config  # noqa: E402

from serving.client import GrpcClient, RestClient, ServingClientError  # noqa: E402
from serving.launch import ModelServerProcess  # noqa: E402

MODELS = ("cnn", "resnet", "unet", "gpt")
CNN_CONCURRENCY = 8
GPT_TOKENS = 1024
GPT_PROMPT = "ROMEO:\n"
STATUS_RATE = 20  # GET /v1/models/cnn per second
TARGET_STATUS_P99_MS, TARGET_CNN_P99_MS, TARGET_CNN_SHARE = 20, 25, 0.4


def load_bench_serving():
    """bench/serving.py as a module named bench_serving (its file name is the repo package's name)."""
    spec = importlib.util.spec_from_file_location("bench_serving", BENCH / "serving.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # registered first, for its dataclasses
    spec.loader.exec_module(module)
    return module


bench_serving = load_bench_serving()


def percentile_ms(seconds: list[float], q: float) -> float:
    """The q-th percentile of durations in seconds, in ms (nan for none)."""
    return float(np.percentile(np.array(seconds) * 1000, q)) if seconds else float("nan")


# --- background clients ---------------------------------------------------------------------------------

class StatusPoller(threading.Thread):
    """GET /v1/models/<model> at `rate` per second on one keep-alive connection: (start, seconds) per 200."""

    def __init__(self, port: int, model: str, rate: float = STATUS_RATE):
        super().__init__(daemon=True)
        self.port, self.path, self.interval = port, f"/v1/models/{model}", 1 / rate
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        due = time.perf_counter()
        while not self.stopping.is_set():
            started = time.perf_counter()
            try:
                connection.request("GET", self.path)
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.samples.append((started, time.perf_counter() - started))
                else:
                    self.errors.append(f"HTTP {response.status}")
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                connection.close()
            due += self.interval
            self.stopping.wait(max(0.0, due - time.perf_counter()))
        connection.close()

    def between(self, start: float, end: float) -> list[float]:
        """Durations of the polls started in [start, end)."""
        return [d for t, d in self.samples if start <= t < end]


def generate_inputs(seed: int) -> dict[str, np.ndarray]:
    """One gpt `generate` request for GPT_TOKENS new tokens."""
    return {"prompt": np.array([GPT_PROMPT.encode()], dtype=object),
            "max_new_tokens": np.array([GPT_TOKENS], np.int32), "temperature": np.array([1.0], np.float32),
            "top_k": np.array([0], np.int32), "seed": np.array([seed], np.int64)}


class Generator(threading.Thread):
    """gpt `generate` requests back to back through `client`: (start, end, tokens) per answer."""

    def __init__(self, client: RestClient | GrpcClient):
        super().__init__(daemon=True)
        self.client = client
        self.answers: list[tuple[float, float, int]] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        seed = 0
        while not self.stopping.is_set():
            started = time.perf_counter()
            try:
                text = self.client.predict("gpt", generate_inputs(seed), signature_name="generate")["generated"][0]
                tokens = len(text if isinstance(text, str) else text.decode())  # REST: str; gRPC: bytes
                self.answers.append((started, time.perf_counter(), tokens))
            except (ServingClientError, OSError) as e:
                self.errors.append(str(e)[:200])
            seed += 1


def tokens_per_second(generators: list[Generator], start: float, end: float) -> float:
    """gpt tokens generated in [start, end), each answer's tokens spread evenly over its duration."""
    tokens = sum(n * max(0.0, min(e, end) - max(s, start)) / (e - s)
                 for g in generators for s, e, n in g.answers)
    return tokens / (end - start)


# --- cnn load -----------------------------------------------------------------------------------------------

@dataclass
class Load:
    """One load-generator run against cnn."""

    protocol: str
    rps: float
    p50: float
    p99: float
    errors: int
    client_cpu: float


WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
MS_PER_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_cnn(port: int, concurrency: int, seconds: float) -> Load:
    """wrk -t2 -c<concurrency> --latency POSTing one cnn image: req/s, p50/p99, non-2xx and socket errors."""
    with tempfile.TemporaryDirectory() as tmp:
        body, script = Path(tmp, "body.json"), Path(tmp, "post.lua")
        body.write_text(json.dumps({"instances": bench_serving.request_instances("cnn")}))
        script.write_text(bench_serving.WRK_SCRIPT.format(body=body))
        client_cpu = bench_serving.children_cpu()
        out = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script),
                              f"http://127.0.0.1:{port}/v1/models/cnn:predict"],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    latency = {q: float(v) * MS_PER_UNIT[unit] for q, v, unit in WRK_LATENCY.findall(out)}
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    return Load("REST", rps, latency["50"], latency["99"], errors, bench_serving.children_cpu() - client_cpu)


def h2load_cnn(port: int, concurrency: int, seconds: float) -> Load:
    """h2load sending cnn Predict as gRPC unary calls, `concurrency` in flight on one connection.

    As in bench/serving.py's throughput_grpc: a gRPC error is an HTTP 200 whose trailers carry the status, so an
    answer counts only if its size is the real PredictResponse's; latencies come from h2load's per-request log.
    """
    caller = bench_serving.GrpcCaller(port, "cnn")
    message = caller.request.SerializeToString()
    answer_bytes = 5 + caller().ByteSize()  # gRPC's frame: a compressed flag and a 4-byte length
    with tempfile.TemporaryDirectory() as tmp:
        body, log = Path(tmp, "request.grpc"), Path(tmp, "requests.tsv")
        body.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
        client_cpu = bench_serving.children_cpu()
        out = subprocess.run(["h2load", "-t1", "-c1", f"-m{concurrency}", f"-D{seconds}", "-d", str(body),
                              "-H", "content-type: application/grpc", "-H", "te: trailers", f"--log-file={log}",
                              f"http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
        # --log-file: start time (µs since the epoch), HTTP status, µs to the end of the answer, per request
        rows = np.loadtxt(log, ndmin=2)
    succeeded = int(re.search(r"(\d+) succeeded", out)[1])
    answered = int(re.search(r"\((\d+)\) data", out)[1]) // answer_bytes
    times = rows[rows[:, 1] == 200, 2] / 1e6
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)[1]) * min(answered, succeeded) / max(
        succeeded, 1)
    return Load("gRPC", rps, percentile_ms(list(times), 50), percentile_ms(list(times), 99),
                len(rows) - answered, bench_serving.children_cpu() - client_cpu)


# --- the run -------------------------------------------------------------------------------------------------

@dataclass
class Phase:
    """A measured stretch of the run."""

    name: str
    start: float
    end: float
    server_cpu: float
    cnn: Load | None = None


def measure(name: str, pid: int, work) -> Phase:
    """Run `work()` (a cnn load, or None to just wait) and note its interval and the server's CPU seconds."""
    cpu, start = bench_serving.cpu_seconds(pid), time.perf_counter()
    cnn = work()
    return Phase(name, start, time.perf_counter(), bench_serving.cpu_seconds(pid) - cpu, cnn)


def run(args) -> str:
    """Serve MODELS from one server, run the phases, and return the markdown section."""
    seconds = args.seconds
    models_dir = ensure_models(MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp, "models.config"), {m: models_dir / m for m in MODELS})
        server_args = shlex.split(getattr(args, "server_args", "") or "")
        with ModelServerProcess(embedded=True, announce=False,
                                extra_args=[f"--model_config_file={config}", *server_args]) as server:
            pid = server.process.pid
            # one full-length generate first: its first context refill compiles, a one-time cost left out of phases
            RestClient("127.0.0.1", server.rest_port, timeout=600).predict("gpt", generate_inputs(0),
                                                                         signature_name="generate")
            poller = StatusPoller(server.rest_port, "cnn")
            poller.start()
            loads = {"REST": lambda: wrk_cnn(server.rest_port, CNN_CONCURRENCY, seconds),
                     "gRPC": lambda: h2load_cnn(server.grpc_port, CNN_CONCURRENCY, seconds)}
            phases = [measure(f"cnn solo {p}", pid, load) for p, load in loads.items()]
            generators = [Generator(RestClient("127.0.0.1", server.rest_port, timeout=600)),
                          Generator(GrpcClient("127.0.0.1", server.grpc_port, timeout=600))]
            for generator in generators:
                generator.start()
            phases.append(measure("gpt solo", pid, lambda: time.sleep(seconds)))
            phases += [measure(f"cnn {p} + gpt", pid, load) for p, load in loads.items()]
            for thread in (poller, *generators):
                thread.stopping.set()
            # the generates in flight finish: their tokens count towards the phases they overlapped
            for thread in (poller, *generators):
                thread.join(timeout=600)
            log_tail = server.log_text()[-2000:] if server.process.poll() is not None else ""
    return markdown(phases, poller, generators, seconds, server_args, log_tail)


def markdown(phases: list[Phase], poller: StatusPoller, generators: list[Generator], seconds: float,
             server_args: list[str], log_tail: str) -> str:
    """The report section: a table per phase, then the targets."""
    lines = [
        "## Mixed load: cnn beside 1,024-token gpt generates on one server", "",
        f"One tfzoo-model-server{' ' + ' '.join(server_args) if server_args else ''} serving {', '.join(MODELS)} "
        f"(bench/zoo_models.py exports). Each phase {seconds} s. cnn: one 28x28x1 image per request at concurrency "
        f"{CNN_CONCURRENCY} (REST: wrk -t2 --latency; gRPC: h2load, one connection, {CNN_CONCURRENCY} calls in "
        f"flight). gpt: two clients (REST and gRPC) sending `generate` of {GPT_TOKENS} new tokens back to back from "
        f"{GPT_PROMPT!r}. Status: GET /v1/models/cnn at {STATUS_RATE}/s on one keep-alive connection, all run long. "
        "Server CPU: seconds of CPU the server process used in the phase (the machine has "
        f"{os.cpu_count()} cores, shared with the load generators).", "",
        "| phase | cnn req/s | vs solo | cnn p50 ms | cnn p99 ms | cnn errors | status p99 ms | gpt tokens/s "
        "| server CPU s (cores) | load generator CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    solo = {p.cnn.protocol: p.cnn for p in phases if p.cnn and "solo" in p.name}
    for p in phases:
        status = percentile_ms(poller.between(p.start, p.end), 99)
        tokens = tokens_per_second(generators, p.start, p.end)
        cells = [p.name]
        if p.cnn:
            share = p.cnn.rps / solo[p.cnn.protocol].rps
            cells += [f"{p.cnn.rps:.0f}", f"{share:.0%}", f"{p.cnn.p50:.2f}", f"{p.cnn.p99:.2f}", str(p.cnn.errors)]
        else:
            cells += ["-"] * 5
        cells += [f"{status:.2f}", f"{tokens:.0f}" if tokens else "-",
                  f"{p.server_cpu:.1f} ({p.server_cpu / (p.end - p.start):.2f})",
                  f"{p.cnn.client_cpu:.1f}" if p.cnn else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    answers = [a for g in generators for a in g.answers]
    durations = [e - s for s, e, _ in answers]
    lines += ["", f"gpt: {len(answers)} generates answered, {np.mean(durations) if durations else float('nan'):.1f} s "
              f"each on average, {sum(n for *_, n in answers)} tokens; errors: "
              f"{sum(len(g.errors) for g in generators)} {sorted({e for g in generators for e in g.errors})[:3]}. "
              f"Status polls failed: {len(poller.errors)} {sorted(set(poller.errors))[:3]}."]
    if log_tail:
        lines += ["", "**The server exited during the run.** Its last output:", "", "```", log_tail, "```"]
    lines += ["", "### Targets (issue 13, item 6), while the generates run", ""] + targets(phases, poller, solo)
    return "\n".join(lines) + "\n"


def targets(phases: list[Phase], poller: StatusPoller, solo: dict[str, Load]) -> list[str]:
    """MET / NOT MET per target, from the phases with gpt generating."""
    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    mixed = [p for p in phases if p.name.endswith("+ gpt")]
    status = percentile_ms([d for p in mixed for d in poller.between(p.start, p.end)], 99)
    out = [f"- status (GET /v1/models/cnn) p99: {status:.2f} ms; target < {TARGET_STATUS_P99_MS} ms: "
           f"{verdict(status < TARGET_STATUS_P99_MS)}"]
    for p in mixed:
        share = p.cnn.rps / solo[p.cnn.protocol].rps
        out += [f"- cnn {p.cnn.protocol} p99: {p.cnn.p99:.2f} ms; target < {TARGET_CNN_P99_MS} ms: "
                f"{verdict(p.cnn.p99 < TARGET_CNN_P99_MS)}",
                f"- cnn {p.cnn.protocol} req/s: {p.cnn.rps:.0f}, {share:.0%} of solo ({solo[p.cnn.protocol].rps:.0f}); "
                f"target >= {TARGET_CNN_SHARE:.0%}: {verdict(share >= TARGET_CNN_SHARE)}"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 s phases; prints the report without writing it")
    parser.add_argument("--seconds", type=float, help="length of each phase (default 20, --quick 4)")
    parser.add_argument("--server-args", default="", help="extra tfzoo-model-server flags, e.g. '--enable_batching'")
    parser.add_argument("--output", help="also write the report to this file")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (4 if args.quick else 20)
    output = args.output
    started = time.perf_counter()
    section = run(args)
    report = bench_serving.script_report("Mixed-load benchmark", "mixed_load.py",
                                         sys.argv[1:] if argv is None else argv, started, section)
    print(report)
    if output:
        Path(output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

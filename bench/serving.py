"""Serving benchmark: tfzoo-model-server beside the servers users would otherwise pick, in ONE run.

Models: TF Serving's `saved_model_half_plus_two_cpu` fixture and the zoo's `cnn` (trained for one
epoch on the synthetic dataset: speed does not depend on the weights). Servers:
  in-process       the SavedModel signature called directly (no server), batch 1 (and 32 for cnn)
  tfzoo            tfzoo-model-server, REST and gRPC, without and with --enable_batching
  fastapi          a naive FastAPI + uvicorn server calling the signature per request (REST)
  kserve           KServe's Python model server, V1 protocol (REST)
  grpc-aio         a naive grpc.aio PredictionService calling the signature per request (gRPC)
Figures: p50/p99 latency at concurrency 1 (sequential keep-alive requests from one Python client),
requests/s at concurrency 16 and 32 (REST: wrk; gRPC: h2load, one HTTP/2 connection with that many
Predict calls in flight), client and server CPU seconds during each throughput run, startup time to the
first answer, and RSS after load beside a bare process that has loaded the same model.

    .venv/bin/python bench/serving.py            # full run, writes bench/results/serving.md
    .venv/bin/python bench/serving.py --quick    # short smoke run
Peers run from bench/.venv-peers (created on first use: tensorflow, kserve, fastapi, uvicorn).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = BENCH / "peers"
PEERS_VENV = BENCH / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
FIXTURE = REPO.parent / "shared" / "fixtures" / "tfserving" / "saved_model_half_plus_two_cpu"
CNN_DIR = BENCH / ".models" / "cnn"
BATCHING = "max_batch_size { value: 32 } batch_timeout_micros { value: 1000 } " \
           "max_enqueued_batches { value: 1000 } num_batch_threads { value: 2 }"

sys.path.insert(0, str(REPO))
from serving.launch import free_port  # noqa: E402

# --- models and request bodies --------------------------------------------------------------------

def ensure_cnn() -> Path:
    """The zoo's cnn exported under bench/.models/cnn (trained once, one epoch on synthetic data)."""
    if not any(p.name.isdigit() for p in CNN_DIR.glob("*")):
        print("exporting the zoo's cnn (one epoch on synthetic data) ...", flush=True)
        from pipelines import train

        train.train("cnn", dataset="synthetic_fashion_mnist", recipe_overrides={"epochs": 1},
                    models_dir=BENCH / ".models", runs_dir=BENCH / ".runs", verbose=0)
    return CNN_DIR


def request_instances(model: str) -> list:
    if model == "half_plus_two":
        return [1.0]
    return np.random.default_rng(0).random((1, 28, 28, 1)).round(4).tolist()


def grpc_input(model: str) -> tuple[str, np.ndarray]:
    if model == "half_plus_two":
        return "x", np.array([1.0], np.float32)
    return "image", np.asarray(request_instances(model), np.float32)


def saved_input(model: str, directory: str) -> tuple[str, str]:
    """The gRPC input written to an .npy file, for the measuring subprocesses."""
    name, array = grpc_input(model)
    path = os.path.join(directory, f"{model}.npy")
    np.save(path, array)
    return name, path


# --- processes ----------------------------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Server:
    """A server subprocess: started, timed to its first answer, measured, stopped."""

    def __init__(self, label: str, command: list[str], model: str, rest_port: int | None, grpc_port: int | None,
                 cwd: Path = REPO):
        self.label, self.model = label, model
        self.rest_port, self.grpc_port = rest_port, grpc_port
        self.log = tempfile.TemporaryFile()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(PEERS)}
        started = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.wait_first_answer(started)
        self.rss_mb = rss_mb(self.process.pid)

    def wait_first_answer(self, started: float, timeout: float = 180) -> None:
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{self.label} exited:\n{self.log.read().decode(errors='replace')[-3000:]}")
            try:
                if self.rest_port:
                    rest_predict(self.rest_port, self.model, json.dumps({"instances": request_instances(
                        self.model)}).encode(), connect_timeout=0.5)
                else:
                    GrpcCaller(self.grpc_port, self.model)()
                self.startup_s = time.perf_counter() - started
                return
            except Exception:
                time.sleep(0.05)
        raise TimeoutError(f"{self.label}: no answer after {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def rest_predict(port: int, model: str, body: bytes, connect_timeout: float = 30) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/{model}:predict", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=connect_timeout) as response:
        return response.read()


class GrpcCaller:
    """One blocking TF Serving Predict call, reusable."""

    def __init__(self, port: int, model: str):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        self.request = predict_pb2.PredictRequest()
        self.request.model_spec.name = model
        name, array = grpc_input(model)
        self.request.inputs[name].CopyFrom(tf.make_tensor_proto(array))

    def __call__(self):
        return self.stub.Predict(self.request, timeout=30)


# --- measurements -------------------------------------------------------------------------------------

def latency_rest(port: int, model: str, count: int) -> tuple[float, float]:
    """p50, p99 in ms of sequential keep-alive requests from one Python http.client."""
    import http.client

    body = json.dumps({"instances": request_instances(model)})
    connection = http.client.HTTPConnection("127.0.0.1", port)
    samples = []
    for i in range(count + count // 10):
        started = time.perf_counter()
        connection.request("POST", f"/v1/models/{model}:predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        if i >= count // 10:  # the first tenth warms up
            samples.append(time.perf_counter() - started)
    connection.close()
    return percentiles(samples)


def latency_grpc(port: int, model: str, count: int) -> tuple[float, float]:
    call = GrpcCaller(port, model)
    samples = []
    for i in range(count + count // 10):
        started = time.perf_counter()
        call()
        if i >= count // 10:
            samples.append(time.perf_counter() - started)
    return percentiles(samples)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""


def throughput_rest(server: Server, concurrency: int, seconds: float) -> dict:
    """wrk -t2 -c<concurrency>: requests/s, non-2xx count, client and server CPU seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp, "body.json")
        body.write_text(json.dumps({"instances": request_instances(server.model)}))
        script = Path(tmp, "post.lua")
        script.write_text(WRK_SCRIPT.format(body=body))
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/{server.model}:predict"
        server_cpu, client_cpu = cpu_seconds(server.process.pid), children_cpu()
        out = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "-s", str(script), url],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    errors = sum(int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line)
    return {"rps": rps, "errors": errors, "client_cpu": children_cpu() - client_cpu,
            "server_cpu": cpu_seconds(server.process.pid) - server_cpu, "generator": "wrk -t2"}


def throughput_grpc(server: Server, concurrency: int, seconds: float) -> dict:
    """h2load (nghttp2's HTTP/2 load generator, in C) sending Predict as a gRPC unary call: one connection
    carrying `concurrency` streams, as one gRPC channel does; requests/s, errors, client and server CPU.

    h2load sees HTTP statuses only, and a gRPC error is an HTTP 200 whose trailers carry the status, with no
    message: so every answer is checked by size: the data received must be that many copies of the answer
    the real stub gets (a length-prefixed PredictResponse).
    """
    caller = GrpcCaller(server.grpc_port, server.model)
    message = caller.request.SerializeToString()
    answer_bytes = 5 + caller().ByteSize()  # gRPC's frame: a compressed flag and a 4-byte length
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp, "request.grpc")
        body.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
        url = f"http://127.0.0.1:{server.grpc_port}/tensorflow.serving.PredictionService/Predict"
        server_cpu, client_cpu = cpu_seconds(server.process.pid), children_cpu()
        out = subprocess.run(["h2load", "-t1", "-c1", f"-m{concurrency}", f"-D{seconds}", "-d", str(body),
                              "-H", "content-type: application/grpc", "-H", "te: trailers", url],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    # "finished in 8.00s, 3455.62 req/s, ...", "requests: ... 27645 succeeded, ...", "traffic: ... (539370) data"
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)[1])
    succeeded = int(re.search(r"(\d+) succeeded", out)[1])
    answered = int(re.search(r"\((\d+)\) data", out)[1]) // answer_bytes
    return {"rps": rps * min(answered, succeeded) / max(succeeded, 1), "errors": succeeded - answered,
            "client_cpu": children_cpu() - client_cpu, "server_cpu": cpu_seconds(server.process.pid) - server_cpu,
            "generator": "h2load -c1 -m<concurrency>"}


def in_process(path: Path, model: str, count: int) -> dict:
    """The signature call with no server: p50 at batch 1, examples/s at batch 32, and the bare RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        name, array_path = saved_input(model, tmp)
        return _in_process(path, name, array_path, count)


def _in_process(path: Path, name: str, array_path: str, count: int) -> dict:
    code = f"""
import json, time, numpy as np, tensorflow as tf, sys
fn = tf.saved_model.load({str(path)!r}).signatures["serving_default"]
name, x = {name!r}, tf.constant(np.load({array_path!r}))
for _ in range(100): fn(**{{name: x}})
samples = []
for _ in range({count}):
    t = time.perf_counter(); fn(**{{name: x}}); samples.append(time.perf_counter() - t)
batch = tf.constant(np.repeat(x.numpy(), 32, axis=0)); t = time.perf_counter(); n = 0
while time.perf_counter() - t < 3: fn(**{{name: batch}}); n += 32
import os
rss = [int(l.split()[1]) / 1024 for l in open(f"/proc/{{os.getpid()}}/status") if l.startswith("VmRSS")][0]
print(json.dumps({{"p50": float(np.percentile(samples, 50) * 1000), "batch32": n / (time.perf_counter() - t),
                  "rss": rss}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- servers ------------------------------------------------------------------------------------------

def version_dir(base: Path) -> Path:
    return max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def start(kind: str, model: str, base: Path, batching_file: Path) -> Server:
    rest, grpc_port = free_port(), free_port()
    if kind.startswith("tfzoo"):
        args = [sys.executable, "-m", "serving.server", f"--port={grpc_port}", f"--rest_api_port={rest}",
                f"--model_name={model}", f"--model_base_path={base}"]
        if kind == "tfzoo+batching":
            args += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
        return Server(kind, args, model, rest, grpc_port)
    saved_model = str(version_dir(base))
    if kind == "fastapi":
        return Server(kind, [str(PEERS_PYTHON), str(PEERS / "fastapi_server.py"), model, saved_model, str(rest)],
                      model, rest, None, cwd=PEERS)
    if kind == "kserve":
        return Server(kind, [str(PEERS_PYTHON), str(PEERS / "kserve_server.py"), model, saved_model, str(rest),
                             str(grpc_port)], model, rest, None, cwd=PEERS)
    if kind == "grpc-aio":
        return Server(kind, [sys.executable, str(PEERS / "grpc_aio_server.py"), model, saved_model,
                             str(grpc_port)], model, None, grpc_port, cwd=PEERS)
    raise ValueError(kind)


def ensure_peers() -> None:
    if PEERS_PYTHON.exists():
        return
    print("creating bench/.venv-peers (tensorflow, kserve, fastapi, uvicorn): a few minutes ...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(PEERS_PYTHON), "-m", "pip", "install", "-q", "tensorflow==2.21.*", "kserve", "fastapi",
                    "uvicorn"], check=True)


# --- the run --------------------------------------------------------------------------------------------

def run(args) -> list[dict]:
    models = {"half_plus_two": FIXTURE, "cnn": ensure_cnn() if "cnn" in args.models else CNN_DIR}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        batching_file = Path(tmp, "batching.txt")
        batching_file.write_text(BATCHING)
        for model in args.models:
            base = models[model]
            baseline = in_process(version_dir(base), model, args.latency_requests)
            print(f"{model}: in-process p50 {baseline['p50']:.3f} ms, batch 32 {baseline['batch32']:.0f} "
                  f"examples/s, bare RSS {baseline['rss']:.0f} MB", flush=True)
            rows.append({"model": model, "server": "in-process", "protocol": "-", "p50": baseline["p50"],
                         "batch32": baseline["batch32"], "rss": baseline["rss"]})
            for kind in args.servers:
                # Start-up varies by a second between identical starts here: the median of several.
                startups = []
                for _ in range(args.startups - 1):
                    server = start(kind, model, base, batching_file)
                    startups.append(server.startup_s)
                    server.stop()
                server = start(kind, model, base, batching_file)
                startups.append(server.startup_s)
                startup = float(np.median(startups))
                protocols = ("rest", "grpc") if kind.startswith("tfzoo") else \
                    ("rest",) if server.rest_port else ("grpc",)
                try:
                    for protocol in protocols:
                        row = {"model": model, "server": kind, "protocol": protocol, "startup": startup,
                               "rss": server.rss_mb, "bare_rss": baseline["rss"]}
                        latency = latency_rest if protocol == "rest" else latency_grpc
                        port = server.rest_port if protocol == "rest" else server.grpc_port
                        row["p50"], row["p99"] = latency(port, model, args.latency_requests)
                        load = throughput_rest if protocol == "rest" else throughput_grpc
                        for concurrency in (16, 32):
                            row[f"c{concurrency}"] = load(server, concurrency, args.seconds)
                        rows.append(row)
                        print(format_row(row), flush=True)
                finally:
                    server.stop()
    return rows


def format_row(row: dict) -> str:
    if row["server"] == "in-process":
        return f"{row['model']:14s} in-process p50 {row['p50']:.3f} ms"
    loads = " ".join(f"c{c} {row[f'c{c}']['rps']:.0f}/s" for c in (16, 32))
    return (f"{row['model']:14s} {row['server']:15s} {row['protocol']:5s} p50 {row['p50']:.3f} ms "
            f"p99 {row['p99']:.3f} ms {loads} startup {row['startup']:.1f} s RSS {row['rss']:.0f} MB")


def markdown(rows: list[dict], args, seconds_total: float) -> str:
    lines = [
        "# Serving benchmark", "",
        f"Command: `.venv/bin/python bench/serving.py{' --quick' if args.quick else ''}` · date "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · machine: {os.cpu_count()} cores, "
        f"{platform.machine()}, load generators on the same machine · run took {seconds_total / 60:.1f} min · "
        f"load average at the end {os.getloadavg()[0]:.1f} (other work on the machine slows every server alike, "
        "but not by the same factor).",
        f"Requests: half_plus_two `{{\"instances\": [1.0]}}`; cnn one 28x28x1 float image (784 JSON numbers) "
        f"per request. Latency: {args.latency_requests} sequential keep-alive requests (one Python client) after "
        f"{args.latency_requests // 10} warm-up requests. Throughput: {args.seconds} s at each concurrency; REST "
        "by wrk -t2 (Lua POST), gRPC by h2load (one HTTP/2 connection with that many calls in flight, every answer "
        "checked by its size). CPU columns are seconds of CPU used during the c=32 run by the server process "
        "and by the load generator. Startup: process start to the first "
        f"successful answer, the median of {args.startups} starts.", "",
        "| model | server | protocol | p50 ms | p99 ms | req/s c=16 | req/s c=32 | server CPU s | client CPU s "
        "| errors | startup s | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["server"] == "in-process":
            lines.append(f"| {r['model']} | in-process (no server) | - | {r['p50']:.3f} | | batch 32: "
                         f"{r['batch32']:.0f} examples/s | | | | | | {r['rss']:.0f} (bare) |")
            continue
        c16, c32 = r["c16"], r["c32"]
        lines.append(f"| {r['model']} | {r['server']} | {r['protocol']} | {r['p50']:.3f} | {r['p99']:.3f} | "
                     f"{c16['rps']:.0f} | {c32['rps']:.0f} | {c32['server_cpu']:.1f} | {c32['client_cpu']:.1f} | "
                     f"{c16['errors'] + c32['errors']} | {r['startup']:.1f} | {r['rss']:.0f} |")
    lines += ["", "## Targets (issue 3), same run", ""] + targets(rows)
    return "\n".join(lines) + "\n"


def targets(rows: list[dict]) -> list[str]:
    out = []

    def find(model, server, protocol):
        return next((r for r in rows if (r["model"], r["server"], r["protocol"]) == (model, server, protocol)), None)

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    for model in sorted({r["model"] for r in rows}):
        for protocol in ("rest", "grpc"):
            ours = find(model, "tfzoo", protocol)
            peers = [r for r in rows if r["model"] == model and r["protocol"] == protocol
                     and r["server"] not in ("tfzoo", "tfzoo+batching", "in-process")]
            if not ours or not peers:
                continue
            best_p50 = min(peers, key=lambda r: r["p50"])
            best_rps = max(peers, key=lambda r: r["c32"]["rps"])
            out.append(f"- {model} {protocol} p50 at c=1: tfzoo {ours['p50']:.3f} ms vs best peer "
                       f"{best_p50['server']} {best_p50['p50']:.3f} ms: {verdict(ours['p50'] <= best_p50['p50'])}")
            ratio = ours["c32"]["rps"] / best_rps["c32"]["rps"]
            out.append(f"- {model} {protocol} req/s without batching (c=32): {ratio:.2f}x the best peer "
                       f"({best_rps['server']}); target 1.2x: {verdict(ratio >= 1.2)}")
            batched = find(model, "tfzoo+batching", protocol)
            if model == "cnn" and batched:
                ratio = batched["c32"]["rps"] / best_rps["c32"]["rps"]
                out.append(f"- cnn {protocol} req/s with batching (c=32): {ratio:.2f}x the best peer; target 3x: "
                           f"{verdict(ratio >= 3)}")
            if model == "cnn" and protocol == "rest":
                out.append(f"- cnn REST p99 at c=1: {ours['p99']:.2f} ms; target < 5 ms: {verdict(ours['p99'] < 5)}")
            out.append(f"- {model} RSS: tfzoo {ours['rss']:.0f} MB vs bare {ours['bare_rss']:.0f} MB "
                       f"({ours['rss'] / ours['bare_rss']:.2f}x); target <= 1.3x: "
                       f"{verdict(ours['rss'] <= 1.3 * ours['bare_rss'])}")
            fastest_peer = min(p["startup"] for p in peers)
            out.append(f"- {model} startup to first answer: tfzoo {ours['startup']:.1f} s vs fastest peer "
                       f"{fastest_peer:.1f} s: {verdict(ours['startup'] <= fastest_peer)}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run: 300 latency requests, 2 s loads")
    parser.add_argument("--models", default="half_plus_two,cnn")
    parser.add_argument("--servers", default="tfzoo,tfzoo+batching,fastapi,kserve,grpc-aio")
    parser.add_argument("--startups", type=int, default=3, help="starts per server; startup is their median")
    parser.add_argument("--output", default=str(BENCH / "results" / "serving.md"))
    args = parser.parse_args(argv)
    args.models, args.servers = args.models.split(","), args.servers.split(",")
    args.latency_requests, args.seconds = (300, 2) if args.quick else (2000, 10)
    if not shutil.which("wrk"):
        parser.error("wrk is not installed: apt-get install -y wrk")
    if not shutil.which("h2load"):
        parser.error("h2load is not installed: apt-get install -y nghttp2-client")
    if any(s in ("fastapi", "kserve") for s in args.servers):
        ensure_peers()
    started = time.perf_counter()
    rows = run(args)
    report = markdown(rows, args, time.perf_counter() - started)
    print(report)
    Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

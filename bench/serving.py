"""Serving benchmark: tfzoo-model-server beside the servers users would otherwise pick, in ONE run.

Models: TF Serving's `saved_model_half_plus_two_cpu` fixture and the zoo's `cnn` (trained for one
epoch on the synthetic dataset: speed does not depend on the weights). Servers, each deployed as a competent
user would on this machine (bench/peers/*.py say how and why):
  in-process        the SavedModel signature called directly (no server), batch 1 (and 32 for cnn)
  tfzoo             tfzoo-model-server, REST and gRPC, without and with --enable_batching
  fastapi           FastAPI async route, orjson, the model in a thread, a uvicorn worker per core (REST)
  fastapi+batching  the same with an asyncio micro-batcher (32 examples or 1 ms, as tfzoo's batching) (REST)
  kserve            KServe's Python model server, V1 protocol, a worker per core, no per-request logs (REST)
  grpc              grpc.server on a thread pool, TF Serving's PredictionService, a process per core sharing
                    the port with SO_REUSEPORT (gRPC)
  floor-*           not peers: the frameworks alone answering fixed bytes, no model run (floor_server.py); the
                    most requests/s any server on them can reach here (--servers floor-rest,floor-grpc,...)
Figures: p50/p99 latency at concurrency 1 (sequential keep-alive requests from one Python client),
requests/s at concurrency 16 and 32 (REST: wrk; gRPC: h2load; that many clients, each its own connection with one
request in flight), client and server CPU seconds during each throughput run, startup time to the
first answer, and RSS of all the server's processes after the load beside a bare process that has loaded the
same model. Every server is started once per round; rounds run interleaved (round 1 of every server, then
round 2, ...) and each figure is reported as the median and min-max over the rounds.

    .venv/bin/python bench/serving.py            # full run, writes bench/results/serving.md
    .venv/bin/python bench/serving.py --quick    # short smoke run, printed only
    .venv/bin/python bench/serving.py --servers tfzoo,grpc:1   # a peer with another number of processes
    .venv/bin/python bench/serving.py --only peers --models cnn --output bench/results/serving-floor.md \
        --servers tfzoo:2,tfzoo+batching:2,fastapi,grpc,floor-rest,floor-grpc,floor-grpc-aio:1,floor-grpc-aio
Peers run from bench/.venv-peers (created on first use, versions pinned in PEER_PACKAGES).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = BENCH / "peers"
PEERS_VENV = BENCH / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
FIXTURE = REPO.parent / "shared" / "fixtures" / "tfserving" / "saved_model_half_plus_two_cpu"
CNN_DIR = BENCH / ".models" / "cnn"
CORES = os.cpu_count() or 1
# bench/.venv-peers: the versions the peers were measured with (recorded in the results as installed)
PEER_PACKAGES = ["tensorflow==2.21.0", "tensorflow-serving-api==2.21.0", "kserve==0.21.0", "fastapi==0.165.0",
                 "uvicorn[standard]==0.55.0", "orjson==3.13.0", "grpcio==1.85.3"]
VERSIONS_SHOWN = ["tensorflow", "grpcio", "kserve", "fastapi", "uvicorn", "uvloop", "httptools", "orjson"]
BATCHING = "max_batch_size { value: 32 } batch_timeout_micros { value: 1000 } " \
           "max_enqueued_batches { value: 1000 } num_batch_threads { value: 2 }"

sys.path.insert(0, str(REPO))
from provenance import git_commit  # noqa: E402  (bench/, the script's directory, is on sys.path)

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

def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (worker processes of the multi-process peers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, MB."""
    total = 0
    for member in process_tree(pid):
        try:
            total += next(int(line.split()[1]) for line in Path(f"/proc/{member}/status").read_text().splitlines()
                          if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU so far of a process and its descendants (all their threads)."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Server:
    """A server subprocess: started, timed to its first answer, measured, stopped."""

    def __init__(self, label: str, command: list[str], model: str, rest_port: int | None, grpc_port: int | None,
                 processes: int = 1, cwd: Path = REPO):
        self.label, self.model, self.processes = label, model, processes
        self.rest_port, self.grpc_port = rest_port, grpc_port
        self.log = tempfile.TemporaryFile()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(PEERS)}
        started = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        try:
            self.wait_first_answer(started)
        except Exception:
            self.stop()
            raise

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(protocol for protocol, port in (("rest", self.rest_port), ("grpc", self.grpc_port)) if port)

    def wait_first_answer(self, started: float, timeout: float = 180) -> None:
        """Start-up ends at the first answer; with several processes, the wait goes on until every one has
        loaded its model (20 answers in a row on fresh connections), so that the loads find them all."""
        in_a_row = 0
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
                if not hasattr(self, "startup_s"):
                    self.startup_s = time.perf_counter() - started
                in_a_row += 1
                if self.processes == 1 or in_a_row == 20:
                    return
            except Exception:
                in_a_row = 0
                time.sleep(0.05)
        raise TimeoutError(f"{self.label}: not answering after {timeout} s")

    def stop(self) -> None:
        """SIGTERM to the process group (a peer's workers too), SIGKILL to what is left after 30 s."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


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
    """h2load (nghttp2's HTTP/2 load generator, in C) sending Predict as a gRPC unary call: `concurrency`
    clients, each its own connection (one gRPC channel) with one call in flight, as wrk's clients over REST;
    requests/s, errors, client and server CPU. (Clients of their own spread over the processes of a server
    that shares its port with SO_REUSEPORT, which one multiplexed connection never would.)

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
        out = subprocess.run(["h2load", "-t1", f"-c{concurrency}", "-m1", f"-D{seconds}", "-d", str(body),
                              "-H", "content-type: application/grpc", "-H", "te: trailers", url],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    # "finished in 8.00s, 3455.62 req/s, ...", "requests: ... 27645 succeeded, ...", "traffic: ... (539370) data"
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)[1])
    succeeded = int(re.search(r"(\d+) succeeded", out)[1])
    answered = int(re.search(r"\((\d+)\) data", out)[1]) // answer_bytes
    return {"rps": rps * min(answered, succeeded) / max(succeeded, 1), "errors": succeeded - answered,
            "client_cpu": children_cpu() - client_cpu, "server_cpu": cpu_seconds(server.process.pid) - server_cpu,
            "generator": "h2load -c<concurrency> -m1"}


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


@dataclass(frozen=True)
class Peer:
    """A peer server: its script in bench/peers, its protocol, and its number of processes."""

    script: str
    protocol: str
    processes: int
    batching: bool = False
    mode: str | None = None  # the script's MODE argument (floor_server.py)

    @property
    def floor(self) -> bool:
        """A floor server (bench/peers/floor_server.py): the framework alone, no model run; not a peer."""
        return self.script == "floor_server.py"


# Processes: one per core, as their users deploy them on this machine (--servers NAME:N to run another number).
PEER_SERVERS = {
    "fastapi": Peer("fastapi_server.py", "rest", CORES),
    "fastapi+batching": Peer("fastapi_batching_server.py", "rest", CORES, batching=True),
    "kserve": Peer("kserve_server.py", "rest", CORES),
    "grpc": Peer("grpc_server.py", "grpc", CORES),
    # Floors, not peers: the frameworks answering fixed bytes (--servers floor-rest,floor-grpc,floor-grpc-aio)
    "floor-rest": Peer("floor_server.py", "rest", CORES, mode="rest"),
    "floor-grpc": Peer("floor_server.py", "grpc", CORES, mode="grpc"),
    "floor-grpc-aio": Peer("floor_server.py", "grpc", CORES, mode="grpc-aio"),
}


def is_floor(kind: str) -> bool:
    name = kind.partition(":")[0]
    return name in PEER_SERVERS and PEER_SERVERS[name].floor


def start(kind: str, model: str, base: Path, batching_file: Path) -> Server:
    """Server KIND (tfzoo, tfzoo+batching, or a peer, optionally NAME:PROCESSES) serving MODEL."""
    rest, grpc_port = free_port(), free_port()
    if kind.startswith("tfzoo"):
        name, _, processes = kind.partition(":")
        args = [sys.executable, "-m", "serving.server", f"--port={grpc_port}", f"--rest_api_port={rest}",
                f"--model_name={model}", f"--model_base_path={base}", f"--server_processes={processes or 1}"]
        if name == "tfzoo+batching":
            args += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
        return Server(kind, args, model, rest, grpc_port, processes=int(processes or 1))
    name, _, processes = kind.partition(":")
    peer = PEER_SERVERS[name]
    processes = int(processes or peer.processes)
    port = rest if peer.protocol == "rest" else grpc_port
    command = [str(PEERS_PYTHON), str(PEERS / peer.script), model, str(version_dir(base)), str(port), str(processes),
               *([peer.mode] if peer.mode else [])]
    return Server(kind, command, model, port if peer.protocol == "rest" else None,
                  port if peer.protocol == "grpc" else None, processes=processes, cwd=PEERS)


def is_batching(kind: str) -> bool:
    name = kind.partition(":")[0]
    return name == "tfzoo+batching" or (name in PEER_SERVERS and PEER_SERVERS[name].batching)


def ensure_peers() -> None:
    """bench/.venv-peers with PEER_PACKAGES, (re)installed when the pins change."""
    pins = "\n".join(PEER_PACKAGES) + "\n"
    marker = PEERS_VENV / "requirements.txt"
    if marker.exists() and marker.read_text() == pins:
        return
    print("creating bench/.venv-peers (tensorflow, kserve, fastapi, uvicorn, grpcio): a few minutes ...", flush=True)
    if not PEERS_PYTHON.exists():
        subprocess.run(["python3", "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(PEERS_PYTHON), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    marker.write_text(pins)


def versions(python: str) -> dict[str, str]:
    """Installed versions of VERSIONS_SHOWN in the environment of PYTHON."""
    code = ("import importlib.metadata as m, json\n"
            f"def v(p):\n    try: return m.version(p)\n    except m.PackageNotFoundError: return None\n"
            f"print(json.dumps({{p: v(p) for p in {VERSIONS_SHOWN!r}}}))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    return {name: version for name, version in json.loads(out).items() if version}


# --- the comparison with the peers -------------------------------------------------------------------------

def measure(kind: str, model: str, base: Path, batching_file: Path, args: argparse.Namespace) -> list[dict]:
    """One round of one server: started, latency and loads on each of its protocols, RSS after the loads."""
    server = start(kind, model, base, batching_file)
    try:
        rows = []
        for protocol in server.protocols:
            row = {"model": model, "server": kind, "protocol": protocol, "processes": server.processes,
                   "startup": server.startup_s}
            latency = latency_rest if protocol == "rest" else latency_grpc
            port = server.rest_port if protocol == "rest" else server.grpc_port
            row["p50"], row["p99"] = latency(port, model, args.latency_requests)
            load = throughput_rest if protocol == "rest" else throughput_grpc
            for concurrency in (16, 32):
                row[f"c{concurrency}"] = load(server, concurrency, args.seconds)
            rows.append(row)
            print(format_row(row), flush=True)
        rss = rss_mb(server.process.pid)
        for row in rows:
            row["rss"] = rss
        return rows
    finally:
        server.stop()


def run(args: argparse.Namespace) -> list[dict]:
    """Every server on every model, args.rounds times, interleaved; one row per (model, server, protocol)
    whose figures are lists, one value per round."""
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
            rows.append({"model": model, "server": "in-process", "protocol": "-", **baseline})
            rounds: dict[tuple[str, str], list[dict]] = {}
            for number in range(1, args.rounds + 1):
                print(f"{model}: round {number} of {args.rounds}", flush=True)
                for kind in args.servers:
                    for row in measure(kind, model, base, batching_file, args):
                        rounds.setdefault((kind, row["protocol"]), []).append(row)
            for (kind, protocol), measured in rounds.items():
                rows.append({"model": model, "server": kind, "protocol": protocol,
                             "processes": measured[0]["processes"], "bare_rss": baseline["rss"],
                             **{key: [r[key] for r in measured] for key in ("p50", "p99", "startup", "rss")},
                             **{f"c{c}": {key: [r[f"c{c}"][key] for r in measured]
                                          for key in ("rps", "errors", "client_cpu", "server_cpu")}
                                for c in (16, 32)}})
    return rows


def format_row(row: dict) -> str:
    loads = " ".join(f"c{c} {row[f'c{c}']['rps']:.0f}/s" for c in (16, 32))
    return (f"{row['model']:14s} {row['server']:16s} {row['protocol']:5s} p50 {row['p50']:.3f} ms "
            f"p99 {row['p99']:.3f} ms {loads} startup {row['startup']:.1f} s")


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float], digits: int = 0) -> str:
    """median (min-max) of one figure over the rounds."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def peers_section(args: argparse.Namespace) -> str:
    """The comparison with the peers: one table and the drop-in issue's targets."""
    rows = run(args)
    lines = [
        "## tfzoo-model-server and its peers", "",
        f"Requests: half_plus_two `{{\"instances\": [1.0]}}`; cnn one 28x28x1 float image (784 JSON numbers) "
        f"per request. Latency: {args.latency_requests} sequential keep-alive requests (one Python client) after "
        f"{args.latency_requests // 10} warm-up requests. Throughput: {args.seconds} s at each concurrency; REST "
        "by wrk -t2 (Lua POST), gRPC by h2load (that many clients, each its own HTTP/2 connection with one call in "
        "flight, every answer checked by its size). Each server is started once per round, the rounds interleaved "
        "across the servers "
        f"({args.rounds} rounds); figures are the median (min-max) over the rounds. CPU columns are the medians of "
        "the seconds of CPU used during the c=32 run by all the server's processes and by the load generator. "
        "Startup: process start to the first successful answer. RSS: all the server's processes, read after the "
        "loads.", "",
        "| model | server | protocol | processes | p50 ms | p99 ms | req/s c=16 | req/s c=32 | server CPU s "
        "| client CPU s | errors | startup s | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["server"] == "in-process":
            lines.append(f"| {r['model']} | in-process (no server) | - | 1 | {r['p50']:.3f} | | batch 32: "
                         f"{r['batch32']:.0f} examples/s | | | | | | {r['rss']:.0f} (bare) |")
            continue
        c16, c32 = r["c16"], r["c32"]
        lines.append(f"| {r['model']} | {r['server']} | {r['protocol']} | {r['processes']} | {spread(r['p50'], 3)} "
                     f"| {spread(r['p99'], 3)} | {spread(c16['rps'])} | {spread(c32['rps'])} "
                     f"| {median(c32['server_cpu']):.1f} | {median(c32['client_cpu']):.1f} "
                     f"| {sum(c16['errors']) + sum(c32['errors'])} | {median(r['startup']):.1f} | {spread(r['rss'])} |")
    lines += ["", "### Targets (drop-in issue), against these peers, on the medians", ""] + targets(rows)
    return "\n".join(lines) + "\n"


def targets(rows: list[dict]) -> list[str]:
    """Each target of the drop-in issue, computed on the medians, MET or NOT MET: once for each tfzoo
    configuration measured (one process, and `--server_processes=N` as tfzoo:N)."""
    out = []

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    def rps(row: dict) -> float:
        return median(row["c32"]["rps"])

    suffixes = dict.fromkeys(r["server"].partition(":")[1:] for r in rows if r["server"].startswith("tfzoo"))
    for model, protocol, (colon, processes) in itertools.product(dict.fromkeys(r["model"] for r in rows),
                                                                 ("rest", "grpc"), suffixes):
        here = [r for r in rows if r["model"] == model and r["protocol"] == protocol]
        ours = next((r for r in here if r["server"] == f"tfzoo{colon}{processes}"), None)
        batched = next((r for r in here if r["server"] == f"tfzoo+batching{colon}{processes}"), None)
        peers = [r for r in here if not r["server"].startswith("tfzoo") and not is_floor(r["server"])]
        floors = [r for r in here if is_floor(r["server"])]
        plain = [r for r in peers if not is_batching(r["server"])]
        batching_peers = [r for r in peers if is_batching(r["server"])]
        if not ours or not peers:
            continue
        name = ours["server"]
        best_p50 = min(peers, key=lambda r: median(r["p50"]))
        out.append(f"- {model} {protocol} p50 at c=1: {name} {median(ours['p50']):.3f} ms vs best peer "
                   f"{best_p50['server']} {median(best_p50['p50']):.3f} ms: "
                   f"{verdict(median(ours['p50']) <= median(best_p50['p50']))}")
        best = max(plain, key=rps) if plain else None
        if best:
            ratio = rps(ours) / rps(best)
            out.append(f"- {model} {protocol} req/s without batching (c=32): {name} {rps(ours):.0f} vs best "
                       f"non-batching peer {best['server']} {rps(best):.0f}: {ratio:.2f}x; target 1.2x: "
                       f"{verdict(ratio >= 1.2)}")
        if model == "cnn" and batched and best:
            ratio = rps(batched) / rps(best)
            out.append(f"- cnn {protocol} req/s with batching (c=32): {batched['server']} {rps(batched):.0f} vs "
                       f"best non-batching peer {best['server']} {rps(best):.0f}: {ratio:.2f}x; target 3x: "
                       f"{verdict(ratio >= 3)}")
        if model == "cnn" and batched:
            for peer in batching_peers:
                ratio = rps(batched) / rps(peer)
                out.append(f"- cnn {protocol} req/s with batching (c=32): {batched['server']} vs the batching peer "
                           f"{peer['server']} {rps(peer):.0f}: {ratio:.2f}x; target 1.5x: {verdict(ratio >= 1.5)}")
            if not batching_peers:
                out.append(f"- cnn {protocol} with batching vs a batching peer: no batching peer on {protocol}")
        for floor in floors:
            reachable = f"; 3x the best non-batching peer is {3 * rps(best):.0f}" if best else ""
            for row in filter(None, (ours, batched)):
                out.append(f"- {model} {protocol} (c=32): {row['server']} {rps(row):.0f} req/s is "
                           f"{rps(row) / rps(floor):.0%} of the framework floor {floor['server']} {rps(floor):.0f} "
                           f"(no model run){reachable}")
        if model == "cnn" and protocol == "rest":
            out.append(f"- cnn REST p99 at c=1: {name} {median(ours['p99']):.2f} ms; target < 5 ms: "
                       f"{verdict(median(ours['p99']) < 5)}")
        rss = median(ours["rss"])
        out.append(f"- {model} RSS after load: {name} {rss:.0f} MB vs bare {ours['bare_rss']:.0f} MB "
                   f"({rss / ours['bare_rss']:.2f}x); target <= 1.3x: {verdict(rss <= 1.3 * ours['bare_rss'])}")
        fastest = min(peers, key=lambda r: median(r["startup"]))
        out.append(f"- {model} startup to first answer: {name} {median(ours['startup']):.1f} s vs fastest peer "
                   f"{fastest['server']} {median(fastest['startup']):.1f} s: "
                   f"{verdict(median(ours['startup']) <= median(fastest['startup']))}")
    return out


# --- the report ------------------------------------------------------------------------------------------

HALF_OPEN = 1500


def half_open_section(args: argparse.Namespace) -> str:
    """A normal request's latency while 1,500 REST connections hold half-sent requests (headers, no body)."""
    import socket

    server = start("tfzoo", "cnn", ensure_cnn(), Path(os.devnull))
    held = []
    try:
        alone = latency_rest(server.rest_port, "cnn", args.latency_requests // 4)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * HALF_OPEN)), hard))
        for _ in range(HALF_OPEN):
            connection = socket.create_connection(("127.0.0.1", server.rest_port))
            connection.sendall(b"POST /v1/models/cnn:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3136\r\n\r\n{")
            held.append(connection)
        beside = latency_rest(server.rest_port, "cnn", args.latency_requests // 4)
        alive = server.process.poll() is None
    finally:
        for connection in held:
            connection.close()
        server.stop()
    verdict = "MET" if beside[1] < 100 and alive else "NOT MET"
    return "\n".join([
        "## Half-open connections", "",
        f"tfzoo-model-server (one process) serving cnn; {args.latency_requests // 4} sequential keep-alive :predict "
        f"requests alone, then again while {HALF_OPEN} other connections have sent a request's headers and one byte "
        "of its body (never finished; the server closes each after --rest_api_timeout_in_ms, 30 s).", "",
        "| | p50 ms | p99 ms |", "|---|---|---|",
        f"| alone | {alone[0]:.2f} | {alone[1]:.2f} |",
        f"| beside {HALF_OPEN} half-open connections | {beside[0]:.2f} | {beside[1]:.2f} |", "",
        f"- target (issue 13, item 4): a normal request answered in under 100 ms: p99 {beside[1]:.2f} ms, server "
        f"{'up' if alive else 'DOWN'}: {verdict}", ""])


def mixed_section(args: argparse.Namespace) -> str:
    """bench/mixed_load.py's section: cnn beside two 1,024-token gpt generates on one server."""
    import mixed_load  # bench/, the script's directory, is on sys.path

    return mixed_load.run(argparse.Namespace(seconds=4 if args.quick else 20))


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def load_seconds(log: str) -> dict[str, float]:
    """Per model, its first version's load (warmup included): "Loading servable version" to "Successfully
    loaded", from the server's log timestamps (millisecond resolution)."""
    from datetime import datetime

    started, loaded = {}, {}
    for line in log.splitlines():
        stamp = LOG_TIME.match(line)
        name = re.search(r"servable version \{name: (\S+) version", line)
        if not stamp or not name:
            continue
        t = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if "Loading servable version" in line:
            started.setdefault(name.group(1), t)
        elif "Successfully loaded servable version" in line:
            loaded.setdefault(name.group(1), t)
    return {m: loaded[m] - started[m] for m in loaded if m in started}


def startup_section(args: argparse.Namespace) -> str:
    """Start-up with every zoo model in one config, beside each model loaded alone (issue 14, item 5)."""
    from zoo_models import RECIPES, ensure_models
    from zoo_models import write_config as write_models_config

    from serving.launch import ModelServerProcess

    models = {name: ensure_models([name]) / name for name in RECIPES}
    alone: dict[str, list[float]] = {name: [] for name in models}
    together: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = write_models_config(Path(tmp) / "models.config", models)
        for _ in range(args.rounds):
            for name, base in models.items():  # each alone: its load time with the machine to itself
                with ModelServerProcess(embedded=True, model_name=name, model_base_path=str(base),
                                        announce=False, ready_timeout=600) as server:
                    alone[name].append(load_seconds(server.log_text())[name])
            started = time.perf_counter()
            with ModelServerProcess(embedded=True, extra_args=[f"--model_config_file={config}"], announce=False,
                                    ready_timeout=900) as server:
                ready, log = time.perf_counter() - started, server.log_text()
                fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # user + system, all threads
            together.append({"ready": ready, "cpu": cpu, "loads": load_seconds(log), "span": _load_span(log)})
    sums = [sum(alone[m][r] for m in models) for r in range(args.rounds)]
    slowest = [max(alone[m][r] for m in models) for r in range(args.rounds)]
    spans = [t["span"] for t in together]
    slowest_name = max(models, key=lambda m: median(alone[m]))
    lines = [
        "## Start-up with every zoo model", "",
        f"tfzoo-model-server with one --model_config_file listing the {len(models)} zoo exports of "
        "bench/zoo_models.py (the initial models load in parallel, on 4 x cores threads, as in TF Serving's "
        "ServerCore), beside each model served alone. Load: a model's \"Loading servable version\" to its "
        "\"Successfully loaded\" log line (SavedModel load, session, warmup replay); the config's load phase: the "
        "first of these to the last; ready: process start to the ports answering (the server opens them once the "
        f"initial models are in). {args.rounds} rounds, interleaved; median (min-max).", "",
        "| | seconds |", "|---|---|",
        f"| sum of the loads, each model alone (a one-at-a-time start-up) | {spread(sums, 1)} |",
        f"| slowest load alone ({slowest_name}) | {spread(slowest, 1)} |",
        f"| all {len(models)} in one config: load phase | {spread(spans, 1)} |",
        f"| all {len(models)} in one config: process start to ready | {spread([t['ready'] for t in together], 1)} |",
        f"| the same server's CPU seconds at ready (all threads; TensorFlow's import included) | "
        f"{spread([t['cpu'] for t in together], 1)} |",
        "",
        "| model | load alone s | load in the config s |", "|---|---|---|"]
    for name in sorted(models, key=lambda m: -median(alone[m])):
        inside = [t["loads"].get(name, float("nan")) for t in together]
        lines.append(f"| {name} | {median(alone[name]):.2f} | {median(inside):.2f} |")
    lines += ["", f"- target (issue 14, item 5): the config comes up in the time of the slowest, not the sum: load "
              f"phase {median(spans):.1f} s vs slowest alone {median(slowest):.1f} s and sum {median(sums):.1f} s "
              f"({median(spans) / median(sums):.0%} of the sum, {median(spans) / median(slowest):.1f}x the "
              f"slowest). The loads are CPU work (graph import, restore, warmup replay): the server used "
              f"{median([t['cpu'] for t in together]) / median([t['ready'] for t in together]):.2f} cores on average "
              f"until ready, of {CORES}; on {CORES} cores no start-up can beat its CPU seconds / {CORES} = "
              f"{median([t['cpu'] for t in together]) / CORES:.1f} s, so the time of the slowest load needs more "
              "cores than this machine has.", ""]
    return "\n".join(lines)


def _load_span(log: str) -> float:
    """The first "Loading servable version" to the last "Successfully loaded" of a server's log."""
    from datetime import datetime

    stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
              for line in log.splitlines() if ("Loading servable version" in line
                                               or "Successfully loaded servable version" in line)
              for m in [LOG_TIME.match(line)] if m]
    return max(stamps) - min(stamps)


# Sections of the report by name (--only): each runs its measurements and returns its markdown.
SECTIONS: dict[str, Callable[[argparse.Namespace], str]] = {
    "peers": peers_section, "half_open": half_open_section, "mixed": mixed_section, "startup": startup_section}



def script_report(title: str, script: str, argv: list[str], started: float, body: str) -> str:
    """A report of one of bench/'s scripts: its title, the command, commit, date, cores, time taken (wall and
    CPU, its children included) and load average, then `body`."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    command = " ".join([f".venv/bin/python bench/{script}", *argv])
    return "\n".join([
        f"# {title}", "",
        f"Command: `{command}` · commit {git_commit()} · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · "
        f"{os.cpu_count()} cores · took {(time.perf_counter() - started) / 60:.1f} min and {cpu:.0f} CPU s (this "
        f"process, the server and the load generators) · load average at the end {os.getloadavg()[0]:.1f}", "",
        body])


def header(args: argparse.Namespace, seconds_total: float) -> str:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime + children_cpu()
    ours = versions(sys.executable)
    peers = versions(str(PEERS_PYTHON)) if PEERS_PYTHON.exists() else {}
    return "\n".join([
        "# Serving benchmark", "",
        f"Command: `{' '.join(['.venv/bin/python bench/serving.py', *args.argv])}`" +
        f" · commit {git_commit()} · date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · machine: "
        f"{CORES} cores, {platform.machine()}, load generators on the same machine · run took "
        f"{seconds_total / 60:.1f} min and {cpu / 60:.1f} CPU minutes (this process and the processes it waited "
        f"for) · load average at the end {os.getloadavg()[0]:.1f} (other work on the machine slows every server "
        "alike, but not by the same factor).",
        "Versions: tfzoo " + ", ".join(f"{k} {v}" for k, v in ours.items()) + "; peers (bench/.venv-peers) " +
        ", ".join(f"{k} {v}" for k, v in peers.items()) + ".", "",
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run: 300 latency requests, 2 s loads, 1 round, "
                        "report printed only")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run, of {','.join(SECTIONS)}")
    parser.add_argument("--models", default="half_plus_two,cnn")
    parser.add_argument("--servers", default="tfzoo,tfzoo+batching,tfzoo:2,tfzoo+batching:2," + ",".join(PEER_SERVERS),
                        help="tfzoo, tfzoo+batching and peers; NAME:N runs NAME with N processes "
                             "(tfzoo:N: --server_processes=N)")
    parser.add_argument("--rounds", type=int, help="runs of each cell, interleaved across servers (default 3, "
                        "--quick 1)")
    parser.add_argument("--output", help="where the report goes (default bench/results/serving.md; --quick: none)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.only, args.models, args.servers = args.only.split(","), args.models.split(","), args.servers.split(",")
    if unknown := [name for name in args.only if name not in SECTIONS]:
        parser.error(f"unknown sections {unknown}: choose from {list(SECTIONS)}")
    args.latency_requests, args.seconds = (300, 2) if args.quick else (2000, 10)
    args.rounds = args.rounds or (1 if args.quick else 3)
    output = args.output or (None if args.quick else str(BENCH / "results" / "serving.md"))
    if not shutil.which("wrk"):
        parser.error("wrk is not installed: apt-get install -y wrk")
    if not shutil.which("h2load"):
        parser.error("h2load is not installed: apt-get install -y nghttp2-client")
    if any(not s.startswith("tfzoo") for s in args.servers):
        ensure_peers()
    started = time.perf_counter()
    sections = [SECTIONS[name](args) for name in args.only]
    report = header(args, time.perf_counter() - started) + "\n".join(sections)
    print(report)
    if output:
        Path(output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

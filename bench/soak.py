"""Soak test (issue 13, item 7): every zoo model and TF Serving's fixtures on one tfzoo-model-server for minutes.

Served from one --model_config_file (polled every 5 s): each zoo model bench/zoo_models.py exports, and TF Serving's
fixtures (half_plus_two, its 2-version and TF2 exports, counter; half_plus_three is toggled). Clients (2 threads per
protocol, back to back) send every model's valid requests (its warmup records, or the fixtures' known inputs; also
Classify and Regress) mixed with invalid ones: bad JSON, wrong rank, wrong dtype, unknown signature, unknown model,
a value the graph refuses (gpt's max_new_tokens over its cap) and, over gRPC, a TensorProto declaring 3 GB in a few
bytes. Every minute a new version of cnn is copied in (the oldest deleted); half a minute later the config file is
rewritten with half_plus_three added or removed; each change must be served within 60 s.

Outcomes: a valid request must answer 200 / OK; an invalid one its 4xx / INVALID_ARGUMENT (or FAILED_PRECONDITION,
NOT_FOUND, RESOURCE_EXHAUSTED where TF Serving answers so). 503 / 429 / UNAVAILABLE / RESOURCE_EXHAUSTED on any request
count as load shedding: expected (SERVING.md: the server sheds when its in-flight budget is spent), reported apart.
Anything else is unexpected. RSS is sampled every 10 s; growth is the last sample minus the one at minute 1. Exits 1
on any unexpected answer, a change not served in time, the server exiting, or RSS growth >= 50 MB.

    .venv/bin/python bench/soak.py                 # 12 minutes after start-up (make soak); writes bench/results/soak.md
    .venv/bin/python bench/soak.py --minutes 2     # short run: prints the report only
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from mixed_load import BENCH, bench_serving, percentile_ms
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from zoo_models import RECIPES, ensure_models, write_config

from pipelines.export import WARMUP_FILE, versions
from serving.client import GrpcClient, RestClient, ServingClientError, _to_json, examples_input
from serving.launch import ModelServerProcess

FIXTURES_DIR = BENCH.parent.parent / "shared" / "fixtures" / "tfserving"
FIXTURES = {"half_plus_two": "saved_model_half_plus_two_cpu",
            "half_plus_two_2_versions": "saved_model_half_plus_two_2_versions",
            "half_plus_two_tf2": "saved_model_half_plus_two_tf2_cpu", "counter": "saved_model_counter"}
TOGGLED = ("half_plus_three", FIXTURES_DIR / "saved_model_half_plus_three")  # in the config, then out, then in ...
VERSIONED = "cnn"  # a new version every minute
DEFAULT_MINUTES = 12  # plus start-up: within `make soak`'s 15 minutes
CLIENTS_PER_PROTOCOL = 2
RSS_EVERY_S, RSS_GROWTH_LIMIT_MB = 10, 50
CHANGE_DEADLINE_S = 60
HUGE_SHAPE = [1 << 20, 28, 28, 1]  # 3.3 GB of float32 declared by one float_val

OK = frozenset({200, grpc.StatusCode.OK})
SHED = frozenset({429, 503, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
Status = int | grpc.StatusCode | str  # HTTP status, gRPC code, or what went wrong on the connection


# --- requests ---------------------------------------------------------------------------------------------

class Connection:
    """One client's keep-alive HTTP connection and gRPC channel."""

    def __init__(self, rest_port: int, grpc_port: int):
        self.rest_port, self.http = rest_port, http.client.HTTPConnection("127.0.0.1", rest_port, timeout=120)
        self.grpc = GrpcClient("127.0.0.1", grpc_port, timeout=120)

    def post(self, path: str, body: bytes) -> Status:
        try:
            self.http.request("POST", path, body, {"Content-Type": "application/json"})
            response = self.http.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException) as e:
            self.http.close()  # reconnects on the next request
            return f"connection error: {e!r}"[:120]

    def call(self, method: str, request) -> Status:
        try:
            getattr(self.grpc.prediction, method)(request, timeout=120)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()


@dataclass(frozen=True)
class Case:
    """A request sent over one protocol, and the answers expected of it."""

    name: str
    kind: str  # "valid", or what is wrong with the request
    protocol: str  # "REST" or "gRPC"
    send: Callable[[Connection], Status]
    expected: frozenset


def predict_cases(kind: str, model: str, signature: str, inputs: dict[str, np.ndarray],
                  expected: tuple = (200, grpc.StatusCode.OK)) -> list[Case]:
    """A Predict request over REST (columnar JSON) and over gRPC."""
    body = json.dumps({"signature_name": signature, "inputs": {k: _to_json(v) for k, v in inputs.items()}}).encode()
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model, signature_name=signature))
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    name = f"{model} {signature}" if kind == "valid" else f"{kind} ({model} {signature})"
    return [Case(name, kind, "REST", lambda c: c.post(f"/v1/models/{model}:predict", body), frozenset(expected)),
            Case(name, kind, "gRPC", lambda c: c.call("Predict", request), frozenset(expected))]


def example_cases(model: str, api: str, signature: str, examples: list[dict]) -> list[Case]:
    """A valid Classify or Regress request over both protocols."""
    body = json.dumps({"signature_name": signature, "examples": examples}).encode()
    message = classification_pb2.ClassificationRequest if api == "classify" else regression_pb2.RegressionRequest
    request = message(model_spec=model_pb2.ModelSpec(name=model, signature_name=signature),
                      input=examples_input(examples))
    method, name = api.capitalize(), f"{model} {api} {signature}"
    return [Case(name, "valid", "REST", lambda c: c.post(f"/v1/models/{model}:{api}", body), OK),
            Case(name, "valid", "gRPC", lambda c: c.call(method, request), OK)]


def warmup_records(model_dir: Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(signature, inputs) of each warmup record of the model's latest version."""
    path = bench_serving.version_dir(model_dir) / "assets.extra" / WARMUP_FILE
    records = tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    logs = (prediction_log_pb2.PredictionLog.FromString(record) for record in records)
    return [(log.predict_log.request.model_spec.signature_name or "serving_default",
             {k: tf.make_ndarray(v) for k, v in log.predict_log.request.inputs.items()}) for log in logs]


def valid_cases(zoo_models: dict[str, Path]) -> list[Case]:
    """Every zoo model's warmup requests; the fixtures' known inputs, and Classify/Regress on half_plus_two."""
    cases = [c for name, base in zoo_models.items() for signature, inputs in warmup_records(base)
             for c in predict_cases("valid", name, signature, inputs)]
    column = {"x": np.array([[1.0], [2.0]], np.float32)}
    cases += predict_cases("valid", "half_plus_two", "serving_default", column)
    cases += predict_cases("valid", "half_plus_two_2_versions", "serving_default", column)
    cases += predict_cases("valid", "half_plus_two_tf2", "serving_default", {"x": np.array([1.0], np.float32)})
    cases += predict_cases("valid", "counter", "incr_counter_by", {"delta": np.array(1.0, np.float32)})
    cases += example_cases("half_plus_two", "classify", "classify_x_to_y", [{"x": 2.0}])
    return cases + example_cases("half_plus_two", "regress", "regress_x_to_y", [{"x": 2.0}])


def invalid_cases(gpt_generate: dict[str, np.ndarray] | None) -> list[Case]:
    """Requests a server must refuse without harm, on cnn (and gpt when it is served)."""
    image = np.full((1, 28, 28, 1), 0.5, np.float32)
    bad_request = (400, grpc.StatusCode.INVALID_ARGUMENT)
    cases = [Case("bad JSON (cnn)", "bad JSON", "REST",
                  lambda c: c.post("/v1/models/cnn:predict", b'{"instances": [[0.5, 0.5'), frozenset({400})),
             *predict_cases("wrong rank", "cnn", "serving_default", {"image": image[0, :, :, 0]}, bad_request),
             *predict_cases("wrong dtype", "cnn", "serving_default", {"image": np.full(image.shape, b"x", object)},
                            bad_request),
             # TF Serving answers FAILED_PRECONDITION (REST 400) for a signature the model does not have
             *predict_cases("unknown signature", "cnn", "no_such_signature", {"image": image},
                            (*bad_request, grpc.StatusCode.FAILED_PRECONDITION)),
             *predict_cases("unknown model", "no_such_model", "serving_default", {"image": image},
                            (404, grpc.StatusCode.NOT_FOUND))]
    if gpt_generate is not None:
        over_cap = {**gpt_generate, "max_new_tokens": np.array([100_000], np.int32)}
        cases += predict_cases("value refused by the graph", "gpt", "generate", over_cap, bad_request)
    huge = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="cnn"))
    huge.inputs["image"].dtype = types_pb2.DT_FLOAT
    huge.inputs["image"].tensor_shape.dim.extend(tf.TensorShape(HUGE_SHAPE).as_proto().dim)
    huge.inputs["image"].float_val.append(0.5)
    return cases + [Case("huge declared shape (cnn, 3.3 GB in 30 bytes)", "huge declared shape", "gRPC",
                         lambda c: c.call("Predict", huge),
                         frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}))]


# --- the run ---------------------------------------------------------------------------------------------------

class Results:
    """Outcomes by minute, valid latencies by minute and protocol, and every unexpected answer."""

    def __init__(self, start: float):
        self.start, self.lock = start, threading.Lock()
        self.latencies: dict[tuple[int, str], list[float]] = defaultdict(list)
        self.by_request: dict[tuple[str, str], list[float]] = defaultdict(list)  # (case name, protocol)
        self.outcomes: Counter = Counter()  # (minute, "ok" | "refused" | "shed" | "unexpected")
        self.unexpected: Counter = Counter()  # (case name, protocol, status)
        self.shed: Counter = Counter()
        self.notes: list[str] = []  # failures outside requests: a change not served, the server exiting
        self.startup_s = 0.0  # server start to its first answer

    def minute(self, t: float) -> int:
        return int((t - self.start) // 60)

    def record(self, case: Case, status: Status, started: float, seconds: float) -> None:
        minute = self.minute(started)
        outcome = ("ok" if case.kind == "valid" else "refused") if status in case.expected else \
            "shed" if status in SHED else "unexpected"
        with self.lock:
            self.outcomes[minute, outcome] += 1
            if outcome == "ok":
                self.latencies[minute, case.protocol].append(seconds)
                self.by_request[case.name, case.protocol].append(seconds)
            elif outcome != "refused":
                (self.shed if outcome == "shed" else self.unexpected)[case.name, case.protocol, str(status)] += 1


class Client(threading.Thread):
    """Sends its cases round robin, back to back, until stopped."""

    def __init__(self, cases: list[Case], ports: tuple[int, int], results: Results, seed: int):
        super().__init__(daemon=True)
        self.cases = random.Random(seed).sample(cases, len(cases))
        self.ports, self.results, self.stopping = ports, results, threading.Event()

    def run(self) -> None:
        connection = Connection(*self.ports)
        for case in itertools.cycle(self.cases):
            if self.stopping.is_set():
                return
            started = time.perf_counter()
            status = case.send(connection)
            self.results.record(case, status, started, time.perf_counter() - started)


def available_versions(rest: RestClient, model: str) -> set[int]:
    """Versions of `model` the server reports AVAILABLE (none when it does not know the model)."""
    try:
        return {int(v["version"]) for v in rest.status(model)["model_version_status"] if v["state"] == "AVAILABLE"}
    except ServingClientError:
        return set()


def new_version(base: Path) -> int:
    """Copy the latest version under `base` as the next one (renamed into place), keep only those two; return it."""
    existing = versions(base)
    version = existing[-1] + 1
    staging = base / f".staging-{version}"  # not an integer: the server ignores it until the rename
    shutil.copytree(base / str(existing[-1]), staging)
    os.rename(staging, base / str(version))
    for old in existing[:-1]:
        shutil.rmtree(base / str(old))
    return version


class Operator(threading.Thread):
    """Each minute, a new version of VERSIONED; half a minute later, the config rewritten with TOGGLED in or out."""

    def __init__(self, rest: RestClient, config: Path, models: dict[str, Path], minutes: int, results: Results):
        super().__init__(daemon=True)
        self.rest, self.config, self.models, self.minutes, self.results = rest, config, models, minutes, results
        self.events: list[tuple[int, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with_toggled = True
        name, base = TOGGLED
        for minute in range(1, self.minutes):
            if self.sleep_until(60 * minute):
                return
            version = new_version(self.models[VERSIONED])
            self.served(f"{VERSIONED} version {version} copied in",
                        lambda version=version: version in available_versions(self.rest, VERSIONED))
            if self.sleep_until(60 * minute + 30):
                return
            with_toggled = not with_toggled
            write_config(self.config, {**self.models, **({name: base} if with_toggled else {})})
            self.served(f"config rewritten with {name} {'added' if with_toggled else 'removed'}",
                        lambda present=with_toggled: bool(available_versions(self.rest, name)) == present)

    def sleep_until(self, offset: float) -> bool:
        """Wait until `offset` seconds after the start; True if stopped meanwhile."""
        return self.stopping.wait(max(0.0, self.results.start + offset - time.perf_counter()))

    def served(self, what: str, done: Callable[[], bool]) -> None:
        """Wait until `done()` says the change is served; note it, with the table's minute (1-based)."""
        started = time.perf_counter()
        minute = self.results.minute(started) + 1
        while time.perf_counter() - started < CHANGE_DEADLINE_S and not self.stopping.is_set():
            if done():
                self.events.append((minute, f"{what}: served after {time.perf_counter() - started:.1f} s"))
                return
            time.sleep(0.25)
        if self.stopping.is_set():  # the run ended first: not a failure
            return
        self.events.append((minute, f"{what}: NOT served within {CHANGE_DEADLINE_S} s"))
        self.results.notes.append(f"minute {minute}: {what}, not served within {CHANGE_DEADLINE_S} s")


def export_zoo() -> tuple[dict[str, Path], dict[str, str]]:
    """Base paths of the zoo models that export here, and why the others are left out."""
    exported, left_out = {}, {}
    for name in RECIPES:
        try:
            exported[name] = ensure_models([name]) / name
        except Exception as e:  # a model that fails to export is reported, not a reason to stop the soak
            left_out[name] = f"export failed: {type(e).__name__}: {str(e)[:200]}"
    return exported, left_out


def run(minutes: int) -> tuple[str, bool]:
    """Serve, load, change and measure for `minutes`; return the markdown report body and whether it passed."""
    zoo_models, left_out = export_zoo()
    with tempfile.TemporaryDirectory() as tmp:
        versioned = Path(tmp, VERSIONED)
        versioned.mkdir()
        shutil.copytree(bench_serving.version_dir(zoo_models[VERSIONED]), versioned / "1")
        models = {**zoo_models, VERSIONED: versioned, **{n: FIXTURES_DIR / d for n, d in FIXTURES.items()}}
        config = write_config(Path(tmp, "models.config"), {**models, TOGGLED[0]: TOGGLED[1]})
        gpt = dict(warmup_records(zoo_models["gpt"])).get("generate") if "gpt" in zoo_models else None
        cases = valid_cases(zoo_models) + invalid_cases(gpt)
        flags = [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=5",
                 "--file_system_poll_wait_seconds=1"]
        launched = time.perf_counter()
        with ModelServerProcess(embedded=True, announce=False, ready_timeout=900, extra_args=flags) as server:
            results = Results(time.perf_counter())
            results.startup_s = results.start - launched
            ports = (server.rest_port, server.grpc_port)
            threads = [Client([c for c in cases if c.protocol == protocol], ports, results, seed)
                       for seed, protocol in enumerate(["REST", "gRPC"] * CLIENTS_PER_PROTOCOL)]
            operator = Operator(RestClient("127.0.0.1", server.rest_port), config, models, minutes, results)
            for thread in (*threads, operator):
                thread.start()
            rss: list[tuple[float, float]] = []
            while (elapsed := time.perf_counter() - results.start) < minutes * 60:
                if server.process.poll() is not None:
                    results.notes.append(f"the server exited with code {server.process.returncode} after "
                                         f"{elapsed:.0f} s; its last output:\n```\n{server.log_text()[-3000:]}\n```")
                    break
                rss.append((elapsed, bench_serving.rss_mb(server.process.pid)))
                time.sleep(min(RSS_EVERY_S, minutes * 60 - elapsed))
            for thread in (*threads, operator):
                thread.stopping.set()
            for thread in (*threads, operator):
                thread.join(timeout=150)
    return report(results, operator.events, rss, zoo_models, left_out, cases, minutes)


def report(results: Results, events: list[tuple[int, str]], rss: list[tuple[float, float]],
           zoo_models: dict[str, Path], left_out: dict[str, str], cases: list[Case], minutes: int) -> tuple[str, bool]:
    """The markdown body and the verdict."""
    nan = float("nan")
    after_first = [mb for t, mb in rss if t >= 60]
    growth = after_first[-1] - after_first[0] if len(after_first) > 1 else nan
    first, peak, last = after_first[0] if after_first else nan, max((mb for _, mb in rss), default=nan), rss[-1][1]
    unexpected = sum(results.unexpected.values())
    passed = not unexpected and not results.notes and growth < RSS_GROWTH_LIMIT_MB
    kinds = sorted({c.kind for c in cases} - {"valid"})
    lines = [
        f"Served: zoo models {', '.join(zoo_models)} ({VERSIONED} from a copy that gets a new version every minute); "
        f"fixtures {', '.join(FIXTURES)}; {TOGGLED[0]} toggled by config reloads. "
        + (f"Left out: {'; '.join(f'{n} ({why})' for n, why in left_out.items())}. " if left_out else "")
        + f"{CLIENTS_PER_PROTOCOL} client threads per protocol send {sum(c.kind == 'valid' for c in cases)} valid "
        f"and {sum(c.kind != 'valid' for c in cases)} invalid requests round robin, back to back; invalid kinds: "
        f"{', '.join(kinds)}. The server took {results.startup_s:.0f} s from start to its first answer (every model "
        "loaded and warmed up).", "",
        f"**Verdict: {'PASS' if passed else 'FAIL'}** — unexpected answers: {unexpected}; changes not served or "
        f"server exits: {len(results.notes)}; RSS growth after minute 1: {growth:.1f} MB (limit "
        f"{RSS_GROWTH_LIMIT_MB}; RSS at minute 1 {first:.0f} MB, peak {peak:.0f} MB, last {last:.0f} MB); "
        f"load shed (503/429/UNAVAILABLE/RESOURCE_EXHAUSTED, expected): {sum(results.shed.values())}.", "",
        "| minute | REST valid | REST p50 ms | REST p99 ms | gRPC valid | gRPC p50 ms | gRPC p99 ms | invalid refused "
        "| shed | unexpected | RSS MB (end) | changes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for minute in range(minutes):
        cells = [str(minute + 1)]
        for protocol in ("REST", "gRPC"):
            samples = results.latencies[minute, protocol]
            cells += [str(len(samples)), f"{percentile_ms(samples, 50):.1f}", f"{percentile_ms(samples, 99):.1f}"]
        end_rss = [mb for t, mb in rss if t < 60 * (minute + 1)]
        cells += [str(results.outcomes[minute, o]) for o in ("refused", "shed", "unexpected")]
        cells += [f"{end_rss[-1]:.0f}" if end_rss else "-", "; ".join(e for m, e in events if m == minute + 1)]
        lines.append("| " + " | ".join(cells) + " |")
    slowest = sorted(results.by_request.items(), key=lambda item: -percentile_ms(item[1], 99))[:5]
    lines += ["", "Slowest valid requests over the run (p50 / p99 ms): " + "; ".join(
        f"{name} {protocol} {percentile_ms(t, 50):.0f} / {percentile_ms(t, 99):.0f}" for (name, protocol), t in slowest)
        + "."]
    if results.unexpected:
        lines += ["", "Unexpected answers (request, protocol, status: count):", ""]
        lines += [f"- {n}, {p}, {s}: {k}" for (n, p, s), k in results.unexpected.most_common()]
    if results.shed:
        lines += ["", "Load shed:", ""] + [f"- {n}, {p}, {s}: {k}" for (n, p, s), k in results.shed.most_common()]
    if results.notes:
        lines += ["", "Failures outside requests:", ""] + [f"- {note}" for note in results.notes]
    return "\n".join(lines) + "\n", passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=DEFAULT_MINUTES, help="length after start-up (default 12)")
    parser.add_argument("--output", help="report file (default: bench/results/soak.md for a full-length run only)")
    args = parser.parse_args(argv)
    if args.minutes < 2:
        parser.error("--minutes must be at least 2: RSS growth is measured after the first minute")
    output = args.output or (str(BENCH / "results" / "soak.md") if args.minutes >= DEFAULT_MINUTES else None)
    started = time.perf_counter()
    body, passed = run(args.minutes)
    report_text = bench_serving.script_report("Soak test", "soak.py", sys.argv[1:] if argv is None else argv,
                                              started, body)
    print(report_text)
    if output:
        Path(output).write_text(report_text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

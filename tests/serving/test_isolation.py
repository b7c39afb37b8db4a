"""One slow model, one flood or one hostile client never holds up the rest: per-model queues, cancellation of
queued work, request bounds, the REST timeout, half-open connections and overload.

The server runs `slow` (a model that sleeps as long as it is asked and counts its runs) beside the fast
`linear` and `image` models, with one thread and three queue places per model. Nothing here asserts on
wall-clock time: isolation is shown by order (fast answers arrive while slow runs are still in flight) and
cancellation by the slow model's own count of the runs that started.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import socket
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from savedmodels import slow_counter_model
from serving_helpers import MONITORING, get, post, write_config
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow_serving.apis import model_management_pb2, model_pb2, predict_pb2

from serving import client
from serving import config as config_lib
from serving.launch import ModelServerProcess

pytestmark = pytest.mark.integration

TIMEOUT_MS = 4000
MAX_ELEMENTS = 300_000
IN_FLIGHT_BYTES = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def server(own_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("isolation")
    slow_counter_model(root / "slow" / "1")
    config = write_config(root / "models.config", {"slow": root / "slow", "linear": own_models / "linear",
                                                   "image": own_models / "image"})
    with ModelServerProcess(embedded=True, extra_args=[
            f"--model_config_file={config}", "--model_threads=1", "--max_enqueued_requests_per_model=3",
            f"--rest_api_timeout_in_ms={TIMEOUT_MS}", f"--max_request_elements={MAX_ELEMENTS}",
            f"--max_in_flight_bytes={IN_FLIGHT_BYTES}"]) as process:
        yield process


def slow_rest(server, seconds: float) -> int:
    return requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/slow:predict",
                         json={"inputs": {"seconds": seconds}}, timeout=60).status_code


def slow_grpc(server, seconds: float, timeout: float = 60):
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="slow"))
    request.inputs["seconds"].CopyFrom(tf.make_tensor_proto(np.float32(seconds)))
    return client.GrpcClient("127.0.0.1", server.grpc_port).prediction.Predict(request, timeout=timeout)


def runs_started(server) -> int:
    """How many runs of `slow` have started (its `count` signature)."""
    code, answer = post(server, "slow:predict", {"signature_name": "count", "inputs": {"x": 0.0}})
    assert code == 200, answer
    return answer["outputs"]


def wait_idle(server) -> None:
    """Wait until `slow` answers `count` (its one thread is free again)."""
    runs_started(server)


def test_a_slow_model_holds_up_neither_other_models_nor_the_status_endpoint(server):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(slow_rest, server, 1.5), pool.submit(slow_grpc, server, 1.5)]  # one after the other
        time.sleep(0.3)  # let them reach the model
        grpc_client = client.GrpcClient("127.0.0.1", server.grpc_port)
        for _ in range(20):
            assert post(server, "linear:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})
            assert grpc_client.predict("linear", {"x": np.array([1.0], np.float32)})["y"].tolist() == [2.5]
            assert get(server, "/v1/models/slow")[0] == 200
            assert get(server, "/v1/models/linear/metadata")[0] == 200
        assert not any(f.done() for f in slow), "the slow runs should still be in flight"
        assert slow[0].result() == 200 and tf.make_ndarray(slow[1].result().outputs["runs"]) > 0
    wait_idle(server)


def test_a_full_model_queue_answers_503_and_unavailable_while_other_models_serve(server):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        rest = [pool.submit(slow_rest, server, 1.0) for _ in range(4)]
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as error:
            slow_grpc(server, 1.0)
        assert post(server, "linear:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})
        codes = sorted(f.result() for f in rest)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE and "queue of model slow is full" in error.value.details()
    assert codes == [200, 200, 200, 503]  # one thread, three places: the fourth is refused
    wait_idle(server)


def test_a_grpc_call_past_its_deadline_never_runs_its_queued_work(server):
    before = runs_started(server)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(slow_grpc, server, 2.0)
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as error:
            slow_grpc(server, 0.0, timeout=0.5)  # queued behind the first: its deadline passes in the queue
        first.result()
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert runs_started(server) == before + 1


def test_a_rest_client_that_disconnects_has_its_queued_work_dropped(server):
    before = runs_started(server)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(slow_rest, server, 2.0)
        time.sleep(0.3)
        body = json.dumps({"inputs": {"seconds": 0.0}}).encode()
        with socket.create_connection(("127.0.0.1", server.rest_port)) as gone:
            gone.sendall(b"POST /v1/models/slow:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            time.sleep(0.3)  # queued; then the client goes away
        assert first.result() == 200
    assert runs_started(server) == before + 1


def test_rest_api_timeout_answers_504_and_drops_the_work(server):
    response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/slow:predict",
                             json={"inputs": {"seconds": TIMEOUT_MS / 1000 + 2}}, timeout=60)
    assert response.status_code == 504 and "--rest_api_timeout_in_ms" in response.json()["error"]
    wait_idle(server)


def test_a_body_over_the_limit_is_413_before_it_is_read(server):
    with socket.create_connection(("127.0.0.1", server.rest_port)) as connection:
        connection.sendall(b"POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
        connection.settimeout(30)
        status, body = read_answer(connection)
    assert status == 413 and b"--max_request_bytes" in body


def test_more_elements_than_the_limit_are_refused_on_both_protocols(server):
    code, answer = post(server, "image:predict", {"instances": np.zeros((400, 28, 28, 1)).tolist()})
    assert code == 400 and "--max_request_elements" in answer["error"]
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="image"))
    request.inputs["image"].dtype = 1  # DT_FLOAT: a few bytes that declare 2,000,000 images
    request.inputs["image"].tensor_shape.dim.extend([tensor_shape_pb2.TensorShapeProto.Dim(size=s)
                                                     for s in (2_000_000, 28, 28, 1)])
    request.inputs["image"].float_val.append(1.0)
    with pytest.raises(grpc.RpcError) as error:
        client.GrpcClient("127.0.0.1", server.grpc_port).prediction.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1568000000 tensor elements" in error.value.details()


def test_the_in_flight_budget_answers_503_until_memory_is_released(server):
    values = json.dumps({"instances": [1.0] * 200_000}).encode()  # ~1 MB of body, ~1.6 MB parsed
    with socket.create_connection(("127.0.0.1", server.rest_port)) as holder:
        holder.sendall(b"POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                       % (IN_FLIGHT_BYTES,) + b" " * (IN_FLIGHT_BYTES - 1024 * 1024))  # 3 of the 4 MB, unfinished
        time.sleep(0.5)
        refused = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/linear:predict", data=values,
                                timeout=30)
    assert refused.status_code == 503 and "--max_in_flight_bytes" in refused.json()["error"]
    answered = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/linear:predict", data=values,
                             timeout=30)
    assert answered.status_code == 200 and answered.json()["predictions"][:2] == [2.5, 2.5]


def test_half_open_connections_do_not_stop_a_normal_request_and_are_closed_after_the_timeout(server):
    half_open = []
    try:
        for _ in range(1500):
            connection = socket.create_connection(("127.0.0.1", server.rest_port))
            connection.sendall(b"POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            half_open.append(connection)
        assert post(server, "linear:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})
        idle = socket.create_connection(("127.0.0.1", server.rest_port))  # never sends anything
        half_open.append(idle)
        half_open[0].settimeout(TIMEOUT_MS / 1000 * 5)
        # the server gives up on the body after --rest_api_timeout_in_ms; its answer may come in more than
        # one segment (headers, then body)
        status, body = read_answer(half_open[0])
        assert status == 504 and b"not received" in body
        idle.settimeout(60)
        assert idle.recv(65536) == b""  # closed: no headers within the timeout either
    finally:
        for connection in half_open:
            connection.close()
    assert server.process.poll() is None


def read_answer(connection: socket.socket) -> tuple[int, bytes]:
    """The status and body of one whole HTTP/1.1 answer (http.client reads the headers, then Content-Length
    bytes, however many segments they come in)."""
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response.status, response.read()


def test_ten_times_overload_answers_only_successes_or_503_and_recovers_at_once(own_models, tmp_path_factory):
    """c=256 clients posting 64-image batches to `image` on a server with a small in-flight budget."""
    config = write_config(tmp_path_factory.mktemp("overload") / "models.config", {"image": own_models / "image"})
    budget = 64 * 1024 * 1024
    body = json.dumps({"instances": np.random.default_rng(0).random((64, 28, 28, 1)).round(3).tolist()})
    with ModelServerProcess(embedded=True, extra_args=[f"--model_config_file={config}",
                                                       f"--max_in_flight_bytes={budget}"]) as process:
        url = f"http://127.0.0.1:{process.rest_port}/v1/models/image:predict"
        rss_before = rss_mb(process.process.pid)

        def client_loop(_) -> list[int]:
            with requests.Session() as session:
                return [session.post(url, data=body, timeout=120).status_code for _ in range(4)]

        with concurrent.futures.ThreadPoolExecutor(256) as pool:
            codes = [code for codes in pool.map(client_loop, range(256)) for code in codes]
        rss_after = rss_mb(process.process.pid)
        assert set(codes) <= {200, 503} and codes.count(200) > 0, sorted(set(codes))
        assert process.process.poll() is None
        code, answer = post(process, "image:predict", {"instances": np.zeros((1, 28, 28, 1)).tolist()})
        assert code == 200 and len(answer["predictions"][0]) == 10
    # the documented ceiling (README): the budget, plus the models' threads' working memory
    assert rss_after - rss_before < budget / 2**20 + 300, (rss_before, rss_after)


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")



def test_server_processes_share_the_ports_and_sum_their_metrics(own_models, tmp_path_factory):
    files = tmp_path_factory.mktemp("processes")
    (files / "monitoring.txt").write_text(MONITORING)
    config = write_config(files / "models.config", {"linear": own_models / "linear"})
    with ModelServerProcess(embedded=True, extra_args=[
            f"--model_config_file={config}", "--server_processes=2",
            f"--monitoring_config_file={files / 'monitoring.txt'}"]) as process:
        for _ in range(40):  # a new connection each: the kernel spreads them over the processes
            with socket.create_connection(("127.0.0.1", process.rest_port)) as connection:
                connection.sendall(b'POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n'
                                   b'Connection: close\r\n\r\n{"instances": [1.0]}')
                assert b'{"predictions":[2.5]}' in connection.makefile("rb").read()
        grpc_client = client.GrpcClient("127.0.0.1", process.grpc_port)
        assert grpc_client.predict("linear", {"x": np.array([1.0], np.float32)})["y"].tolist() == [2.5]
        assert len(children(process.process.pid)) == 2
        metrics = requests.get(f"http://127.0.0.1:{process.rest_port}/monitoring/prometheus/metrics",
                               timeout=30).text
        count = next(line for line in metrics.splitlines()
                     if line.startswith(':tensorflow:serving:request_count{model_name="linear",status="OK"}'))
        assert float(count.split()[-1]) == 41  # both processes' requests, summed
        with pytest.raises(grpc.RpcError) as error:
            grpc_client.models.HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(config=config_lib.ModelServerConfig()), timeout=30)
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        pids = children(process.process.pid)
    assert process.process.returncode == 0, process.log_text()[-1500:]
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)


def children(pid: int) -> list[int]:
    return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]

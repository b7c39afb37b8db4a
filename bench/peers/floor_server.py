"""The floor: what a Python server framework costs on this machine with no work at all. Every request is read
(and, over gRPC, deserialized into a PredictRequest, as any servicer gets it) and answered with the same bytes:
the model's answer to one all-zero example, computed once at start-up, so the answers have the real size
(bench/serving.py checks gRPC answers by their size). No model runs, no JSON is parsed. A server that does the
work cannot serve more requests/s than its framework's floor, so the floor says which targets are reachable.

    python floor_server.py MODEL_NAME SAVED_MODEL_DIR PORT WORKERS MODE

MODE: `grpc` (grpc.server on a thread pool, the faster of grpcio's two servers here), `grpc-aio` (grpc.aio, as
tfzoo-model-server), `rest` (a bare ASGI app on uvicorn with uvloop and httptools, as tfzoo-model-server and
the FastAPI peers). WORKERS processes share the port with SO_REUSEPORT (uvicorn's workers share its socket).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent import futures

import numpy as np
import orjson
from common import ENV_PATH, Arguments, Signature, arguments, serve_rest

THREADS = 8


def zero_answer(path: str) -> dict[str, np.ndarray]:
    """The signature's outputs for one all-zero example (batch 1, unknown dimensions 1)."""
    signature = Signature(path)
    (_, spec), = signature.fn.structured_input_signature[1].items()
    shape = [1] + [d or 1 for d in spec.shape.as_list()[1:]]
    return signature.outputs(np.zeros(shape, signature.dtype))


def serve_grpc(args: Arguments, aio: bool) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    answer = predict_pb2.PredictResponse()
    for key, value in zero_answer(args.path).items():
        answer.outputs[key].CopyFrom(tf.make_tensor_proto(value))

    class Sync(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return answer

    class Aio(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request, context):
            return answer

    options = [("grpc.so_reuseport", 1)]
    if not aio:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=THREADS), options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Sync(), server)
        server.add_insecure_port(f"127.0.0.1:{args.port}")
        server.start()
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server(options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Aio(), server)
        server.add_insecure_port(f"127.0.0.1:{args.port}")
        await server.start()
        await server.wait_for_termination()

    import uvloop

    uvloop.run(main())


def app():
    """uvicorn's factory (each worker process builds its own): a bare ASGI app answering every request with
    the same :predict answer (the route is not looked at: the bench sends only :predict)."""
    answer = orjson.dumps({"predictions": next(iter(zero_answer(os.environ[ENV_PATH]).values()))},
                          option=orjson.OPT_SERIALIZE_NUMPY)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]

    async def asgi(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:  # read the whole body, as any server must
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return asgi


if __name__ == "__main__":
    mode = sys.argv.pop(5) if len(sys.argv) > 5 else "grpc"
    args = arguments()
    if mode == "rest":
        serve_rest("floor_server:app", args)
    elif args.workers == 1:
        serve_grpc(args, aio=mode == "grpc-aio")
    else:  # spawn, not fork: neither gRPC nor TensorFlow survives a fork once started
        workers = [multiprocessing.get_context("spawn").Process(target=serve_grpc, args=(args, mode == "grpc-aio"))
                   for _ in range(args.workers)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

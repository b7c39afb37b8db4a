"""gRPC as its docs deploy a CPU-bound Python service: `grpc.server` on a thread pool serving TF Serving's
PredictionService.Predict; with WORKERS > 1, that many processes share the port with SO_REUSEPORT (grpc's
multiprocessing example: the kernel spreads the connections over the processes).

    python grpc_server.py MODEL_NAME SAVED_MODEL_DIR PORT [WORKERS]
"""
from __future__ import annotations

import multiprocessing
from concurrent import futures

from common import Arguments, Signature, arguments

THREADS = 8  # per process: the model call releases the GIL; more threads would only queue for the 2 cores


def serve(args: Arguments) -> None:
    """One server process with its own model and thread pool (gRPC and TensorFlow imported here, not in the
    parent process)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    signature = Signature(args.path)

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) \
                -> predict_pb2.PredictResponse:
            outputs = signature.outputs(tf.make_ndarray(request.inputs[signature.input_name]))
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=THREADS), options=[("grpc.so_reuseport", 1)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    args = arguments()
    if args.workers == 1:
        serve(args)
    else:  # spawn, not fork: neither gRPC nor TensorFlow survives a fork once started
        workers = [multiprocessing.get_context("spawn").Process(target=serve, args=(args,))
                   for _ in range(args.workers)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

"""A naive grpc.aio server: TF Serving's PredictionService.Predict, the signature called per request.

    python grpc_aio_server.py MODEL_NAME SAVED_MODEL_DIR PORT
"""
import asyncio
import sys

import grpc
import tensorflow as tf
from common import Signature
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, signature: Signature):
        self.signature = signature

    async def Predict(self, request, context):
        outputs = self.signature.fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
        response = predict_pb2.PredictResponse()
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


async def main(path: str, port: int) -> None:
    server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(Signature(path)), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


asyncio.run(main(sys.argv[2], int(sys.argv[3])))

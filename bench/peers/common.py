"""What every peer server shares: the SavedModel loader, the command line, and the FastAPI REST front.

Every peer is started as `python PEER.py MODEL_NAME SAVED_MODEL_DIR PORT WORKERS`; WORKERS is the number of
server processes (bench/serving.py picks it per peer, by measurement, default one per core).
"""
from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response

# uvicorn's workers re-import the app's module in fresh processes: they find their model here, not in argv.
ENV_NAME, ENV_PATH = "PEER_MODEL_NAME", "PEER_SAVED_MODEL"


@dataclass(frozen=True)
class Arguments:
    name: str
    path: str
    port: int
    workers: int


def arguments() -> Arguments:
    """MODEL_NAME SAVED_MODEL_DIR PORT [WORKERS] from argv; also exported for worker processes."""
    name, path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else os.cpu_count() or 1
    os.environ[ENV_NAME], os.environ[ENV_PATH] = name, path
    return Arguments(name, path, port, workers)


class Signature:
    """serving_default of a SavedModel: its concrete function, called with one numpy batch.

    TensorFlow is imported here, not at the top: a parent process that only supervises workers stays small
    (importing it costs 0.6 GB of RSS).
    """

    def __init__(self, path: str):
        import tensorflow as tf

        self.constant = tf.constant
        self.fn = tf.saved_model.load(path).signatures["serving_default"]
        (self.input_name, spec), = self.fn.structured_input_signature[1].items()
        self.dtype = spec.dtype.as_numpy_dtype

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the signature, as numpy arrays."""
        return {key: value.numpy() for key, value in self.fn(**{self.input_name: self.constant(batch)}).items()}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """The single output, as a REST :predict answer's "predictions" carries it."""
        return next(iter(self.outputs(batch).values()))


def rest_app(name: str, signature: Signature, predict: Callable[[np.ndarray], Awaitable[np.ndarray]]) -> FastAPI:
    """TF Serving's REST predict route: raw body parsed by orjson, the numpy answer written by orjson."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(f"/v1/models/{name}:predict")
    async def predict_route(request: Request) -> Response:
        instances = np.asarray(orjson.loads(await request.body())["instances"], signature.dtype)
        answer = orjson.dumps({"predictions": await predict(instances)}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(answer, media_type="application/json")

    return app


def in_thread(signature: Signature) -> Callable[[np.ndarray], Awaitable[np.ndarray]]:
    """The model call off the event loop: TensorFlow releases the GIL, so the loop keeps parsing requests."""
    async def predict(batch: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(signature.predict, batch)

    return predict


def model_from_environment() -> tuple[str, Signature]:
    """In a uvicorn worker: the model named by the parent's command line, loaded in this process."""
    return os.environ[ENV_NAME], Signature(os.environ[ENV_PATH])


def serve_rest(app_factory: str, args: Arguments) -> None:
    """uvicorn as deployed: WORKERS processes, uvloop and httptools, no access log."""
    import uvicorn

    uvicorn.run(app_factory, factory=True, host="127.0.0.1", port=args.port, workers=args.workers, loop="uvloop",
                http="httptools", access_log=False, log_level="warning")

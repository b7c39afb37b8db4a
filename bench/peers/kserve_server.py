"""KServe's Python model server (V1 protocol: POST /v1/models/<name>:predict) as its docs deploy a CPU-bound
model: one uvicorn worker per core (`workers`), an `async def predict` that runs the model in the default
thread pool (a plain `def predict` would run on the event loop: kserve/model.py calls it inline), no access
log, no per-request latency or timing lines, no unused gRPC server.

    python kserve_server.py MODEL_NAME SAVED_MODEL_DIR PORT [WORKERS]
"""
from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import numpy as np
from common import Signature, arguments

# Per-request lines come from two loggers that KServe sets to INFO in every worker, from its --log_config_file
# flag (read from argv when kserve is imported): the access log and kserve.trace's timings. KSERVE_LOGLEVEL
# also quiets the timings of a worker that KServe restarts (it configures those with its defaults).
sys.argv.append(f"--log_config_file={Path(__file__).with_name('kserve_logging.json')}")
os.environ.setdefault("KSERVE_LOGLEVEL", "WARNING")

import kserve  # noqa: E402


class SavedModel(kserve.Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.signature = Signature(self.path)
        self.ready = True
        return self.ready

    # KServe hands its models to the worker processes by pickling them: each worker loads its own, in a thread,
    # as KServe kills and restarts a worker that does not answer its liveness pings within 5 s of its start
    # (a TensorFlow import alone can take that long); until then the worker answers "model not ready".
    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "signature"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, ready=False)
        threading.Thread(target=self.load, daemon=True).start()

    async def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        batch = np.asarray(payload["instances"], self.signature.dtype)
        return {"predictions": await asyncio.to_thread(self.signature.predict, batch)}


if __name__ == "__main__":
    args = arguments()
    kserve.ModelServer(http_port=args.port, workers=args.workers, enable_grpc=False,
                       enable_latency_logging=False).start([SavedModel(args.name, args.path)])

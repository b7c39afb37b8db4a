"""KServe's Python model server (V1 protocol: POST /v1/models/<name>:predict) around the same signature.

    python kserve_server.py MODEL_NAME SAVED_MODEL_DIR HTTP_PORT GRPC_PORT
"""
import sys

import kserve
from common import Signature


class SavedModel(kserve.Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.signature = Signature(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        return {"predictions": self.signature.predict(payload["instances"])}


if __name__ == "__main__":
    name, path, http_port, grpc_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1).start([SavedModel(name, path)])

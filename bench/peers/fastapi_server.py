"""A naive FastAPI + uvicorn server: TF Serving's REST predict route, the signature called per request.

    python fastapi_server.py MODEL_NAME SAVED_MODEL_DIR PORT
"""
import sys

import uvicorn
from common import Signature
from fastapi import Body, FastAPI

name, path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
signature = Signature(path)
app = FastAPI()


@app.post(f"/v1/models/{name}:predict")
def predict(body: dict = Body(...)) -> dict:  # noqa: B008  (FastAPI idiom)
    return {"predictions": signature.predict(body["instances"])}


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)

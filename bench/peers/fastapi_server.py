"""FastAPI + uvicorn as deployed for a CPU-bound model: an async route on the raw body, orjson both ways, the
model call in a thread, one uvicorn worker per core (uvloop, httptools, no access log).

    python fastapi_server.py MODEL_NAME SAVED_MODEL_DIR PORT [WORKERS]
"""
from common import arguments, in_thread, model_from_environment, rest_app, serve_rest
from fastapi import FastAPI


def create_app() -> FastAPI:
    """The app of one uvicorn worker."""
    name, signature = model_from_environment()
    return rest_app(name, signature, in_thread(signature))


if __name__ == "__main__":
    serve_rest("fastapi_server:create_app", arguments())

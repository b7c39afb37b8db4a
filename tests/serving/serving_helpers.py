"""Helpers for the serving tests: where TF Serving's fixtures are, HTTP shortcuts, config files, polling."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import requests
from google.protobuf import text_format

from serving import config
from serving.launch import ModelServerProcess

REPO = Path(__file__).resolve().parents[2]
TFSERVING_FIXTURES = REPO.parent / "shared" / "fixtures" / "tfserving"
NO_FIXTURES = f"TF Serving's fixtures are not at {TFSERVING_FIXTURES} (../shared is absent; CI has it)"
MONITORING = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }'


def wait_for(predicate: Callable, timeout: float = 60.0, what: str = "condition"):
    """Poll `predicate` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def post(server: ModelServerProcess, path: str, body) -> tuple[int, dict]:
    """POST a JSON body (or raw bytes/text) to /v1/models/<path>; return (HTTP status, JSON answer)."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/{path}", data=data, timeout=60)
    return response.status_code, response.json()


def get(server: ModelServerProcess, path: str) -> tuple[int, dict]:
    """GET <path> from the REST port; return (HTTP status, JSON answer)."""
    response = requests.get(f"http://127.0.0.1:{server.rest_port}{path}", timeout=60)
    return response.status_code, response.json()


def write_config(path: Path, models: dict[str, str], extra: dict[str, str] | None = None) -> Path:
    """A ModelServerConfig file serving `models` (name -> base path); `extra` adds text per model."""
    message = config.ModelServerConfig()
    for name, base_path in models.items():
        model = message.model_config_list.config.add(name=name, base_path=str(base_path),
                                                     model_platform="tensorflow")
        text_format.Merge((extra or {}).get(name, ""), model)
    path.write_text(text_format.MessageToString(message))
    return path

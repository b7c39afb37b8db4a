"""The real `tensorboard` on a logdir, for tests that read runs back through its HTTP API."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests

from serving.launch import free_port


@contextlib.contextmanager
def serve(logdir: str | Path, timeout: float = 90.0) -> Iterator[str]:
    """Start `tensorboard --logdir logdir` on a free port; yield its URL once it lists a run; stop it after."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
         "--host", "127.0.0.1", "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if requests.get(f"{url}/data/runs", timeout=2).json():
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def get_json(url: str, path: str, **params):
    """GET a TensorBoard API path; its JSON answer."""
    response = requests.get(f"{url}{path}", params=params, timeout=30)
    response.raise_for_status()
    return response.json()


def wait_for_run(url: str, path: str, run: str, timeout: float = 60.0):
    """GET `path` until `run` is among what it lists (TensorBoard loads runs in the background); its answer."""
    deadline = time.monotonic() + timeout
    while True:
        listed = get_json(url, path)
        if run in listed:
            return listed
        assert time.monotonic() < deadline, f"{path} never listed {run}: {listed}"
        time.sleep(1)


def projector_points(run_dir: Path, model: str) -> tuple[list[str], np.ndarray]:
    """Serve the runs root of `run_dir` (runs/<model>/<run id>) and read its projector embedding back through
    TensorBoard's projector API: the metadata rows and the vectors [rows, dimensions]."""
    with serve(run_dir.parent.parent) as url:
        run = f"{model}/{run_dir.name}/embeddings"
        wait_for_run(url, "/data/plugin/projector/runs", run)
        (embedding,) = get_json(url, "/data/plugin/projector/info", run=run)["embeddings"]
        params = {"run": run, "name": embedding["tensorName"]}
        rows = requests.get(f"{url}/data/plugin/projector/metadata", params=params, timeout=30).text.split("\n")[:-1]
        tensor = requests.get(f"{url}/data/plugin/projector/tensor", params=params, timeout=30).content
    return rows, np.frombuffer(tensor, np.float32).reshape(len(rows), -1)

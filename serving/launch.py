"""Start a TF Serving-protocol model server: the real tensorflow_model_server when it is on PATH,
tfzoo-model-server otherwise, as a subprocess on free local ports, ready when this returns.

    with ModelServerProcess(model_name="cnn", model_base_path="/abs/models/cnn") as server:
        RestClient("127.0.0.1", server.rest_port).status("cnn")
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REAL_SERVER = "tensorflow_model_server"


def find_tensorflow_model_server() -> str | None:
    """Path of the real TF Serving binary, if installed."""
    return shutil.which(REAL_SERVER)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ModelServerProcess:
    """A model server subprocess with TF Serving's flags; a context manager that stops it with SIGTERM."""

    def __init__(self, *, model_name: str | None = None, model_base_path: str | None = None,
                 extra_args: list[str] = (), grpc_port: int | None = None, rest_port: int | None = None,
                 embedded: bool | None = None, ready_timeout: float = 180.0, wait_ready: bool = True,
                 env: dict | None = None):
        self.grpc_port = grpc_port or free_port()
        self.rest_port = rest_port or free_port()
        real = None if embedded else find_tensorflow_model_server()
        self.command = [real] if real else [sys.executable, "-m", "serving.server"]
        self.description = (f"TensorFlow Serving ({real})" if real
                            else "tfzoo-model-server (embedded; tensorflow_model_server is not on PATH)")
        self.args = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}"]
        if model_name:
            self.args.append(f"--model_name={model_name}")
        if model_base_path:
            self.args.append(f"--model_base_path={os.path.abspath(model_base_path)}")
        self.args.extend(extra_args)
        self.ready_timeout, self.wait_ready, self.env = ready_timeout, wait_ready, env
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> ModelServerProcess:
        """Start the server; if `wait_ready`, block until its REST API answers."""
        self._log = tempfile.TemporaryFile()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(self.env or {})}
        self.process = subprocess.Popen([*self.command, *self.args], stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env)
        if self.wait_ready:
            self.wait_until_ready()
        return self

    def log_text(self) -> str:
        """Everything the server has printed so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def wait_until_ready(self) -> None:
        """Poll the REST port until it answers (any HTTP status) or the process dies."""
        deadline = time.monotonic() + self.ready_timeout
        url = f"http://127.0.0.1:{self.rest_port}/v1/models"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"model server exited with code {self.process.returncode}:\n{self.log_text()}")
            try:
                urllib.request.urlopen(url, timeout=1).read()
                return
            except urllib.error.HTTPError:
                return  # the real TF Serving answers 400 here: it is up
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"model server not ready after {self.ready_timeout} s:\n{self.log_text()}")

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait for a clean exit (SIGKILL after `timeout`); return the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> ModelServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

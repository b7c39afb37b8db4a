"""Start a TF Serving-protocol model server: the real tensorflow_model_server when it is on PATH,
tfzoo-model-server otherwise, as a subprocess on free local ports, ready when this returns.

    with ModelServerProcess(model_name="cnn", model_base_path="/abs/models/cnn") as server:
        RestClient("127.0.0.1", server.rest_port).status("cnn")

Ready means the server's ports answer: both servers open them only after the initial models loaded.
It prints which server it started (and why) to stderr; `description` holds the same words.
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

import grpc

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
                 env: dict | None = None, announce: bool = True):
        """Ports default to free ones (rest_port=0 turns REST off); `embedded` forces tfzoo-model-server."""
        self.grpc_port = grpc_port or free_port()
        self.rest_port = free_port() if rest_port is None else rest_port
        real = None if embedded else find_tensorflow_model_server()
        self.command = [real] if real else [sys.executable, "-m", "serving.server"]
        why = "as asked" if embedded else "tensorflow_model_server is not on PATH"
        self.description = f"TensorFlow Serving ({real})" if real else f"tfzoo-model-server (embedded: {why})"
        self.args = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}"]
        if model_name:
            self.args.append(f"--model_name={model_name}")
        if model_base_path:
            self.args.append(f"--model_base_path={os.path.abspath(model_base_path)}")
        self.args.extend(extra_args)
        self.ready_timeout, self.wait_ready, self.env, self.announce = ready_timeout, wait_ready, env, announce
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> ModelServerProcess:
        """Start the server; if `wait_ready`, block until it answers."""
        self._log = tempfile.TemporaryFile()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(self.env or {})}
        self.process = subprocess.Popen([*self.command, *self.args], stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env)
        if self.announce:
            print(f"started {self.description}: gRPC 127.0.0.1:{self.grpc_port}"
                  + (f", REST 127.0.0.1:{self.rest_port}" if self.rest_port else "")
                  + f" (pid {self.process.pid})", file=sys.stderr)
        if self.wait_ready:
            self.wait_until_ready()
        return self

    def log_text(self) -> str:
        """Everything the server has printed so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def wait_until_ready(self) -> None:
        """Poll the REST port (or, with REST off, the gRPC port) until it answers or the process dies."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.description} exited with code {self.process.returncode}:\n"
                                   f"{self.log_text()}")
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.description} not ready after {self.ready_timeout} s:\n{self.log_text()}")

    def _answers(self) -> bool:
        if self.rest_port:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}/v1/models", timeout=1).read()
                return True
            except urllib.error.HTTPError:
                return True  # the real TF Serving answers 400 here: it is up
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                return True
            except grpc.FutureTimeoutError:
                return False

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

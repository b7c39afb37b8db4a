"""`--server_processes N`: N server processes sharing the gRPC and REST ports (SO_REUSEPORT), one supervisor.

One Python process answers requests on one event loop per protocol, and the GIL caps what those loops do:
on 2 cores it leaves a core partly idle. TF Serving, in C++, has no such cap and no such flag. Here the
supervisor starts N copies of the server (this same command line, each a full server that loads every
model: N times the memory), the kernel spreads new connections over them, and
- every process polls the model directories and `--model_config_file` itself, so they serve the same
  versions (a new version reaches each within its poll); `HandleReloadConfigRequest` would change one
  process only, so it is refused: change the config file instead;
- Prometheus metrics are written to a shared directory and summed over the processes at each scrape
  (prometheus_client's multiprocess mode);
- `--grpc_socket_path` (a Unix socket, which cannot be shared) is served by the first process only;
- SIGTERM/SIGINT are passed on to every process; if one exits, the others are stopped and the supervisor
  exits with its code, so a process manager (Kubernetes, systemd) restarts the whole server.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading

PROCESS_ENV = "TFZOO_SERVER_PROCESS"  # "i/N" in each process the supervisor starts
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def index() -> tuple[int, int]:
    """(this process's index, number of processes): (0, 1) for a server started on its own."""
    value = os.environ.get(PROCESS_ENV)
    if not value:
        return 0, 1
    i, n = value.split("/")
    return int(i), int(n)


def supervise(argv: list[str], count: int) -> int:
    """Run `count` server processes with `argv` (without --server_processes) until a signal or an exit."""
    metrics_dir = tempfile.mkdtemp(prefix="tfzoo-metrics-")
    children = [subprocess.Popen([sys.executable, "-m", "serving.server", *argv],
                                 env={**os.environ, PROCESS_ENV: f"{i}/{count}", METRICS_ENV: metrics_dir})
                for i in range(count)]
    stopping = threading.Event()

    def stop(*_) -> None:
        stopping.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    code = 0
    try:
        pid, status = os.wait()  # the first process to exit ends the server
        code = os.waitstatus_to_exitcode(status)
        # When stopping, every process already has its SIGTERM: a second one could land while it exits (with
        # Python's handlers gone) and kill it; so the others are signalled only when one exits on its own.
        if not stopping.is_set():
            print(f"tfzoo-model-server: process {pid} exited with code {code}: stopping the others",
                  file=sys.stderr)
            stop()
        for child in children:
            child_code = child.wait()
            code = code or (child_code if child.pid != pid else 0)
    finally:
        for name in os.listdir(metrics_dir):
            os.remove(os.path.join(metrics_dir, name))
        os.rmdir(metrics_dir)
    return code

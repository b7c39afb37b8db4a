"""The file-system source: polls each model's base path and emits its aspired versions.

As in TF Serving, a version is an integer-named subdirectory of the base path (other names are
ignored), and the model's `model_version_policy` picks which of them are aspired: the latest
`num_versions` (default 1), all of them, or a specific list.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from tensorflow_serving.config import model_server_config_pb2

log = logging.getLogger("tfzoo.serving")

ModelConfig = model_server_config_pb2.ModelConfig


def list_versions(base_path: str) -> dict[int, str] | None:
    """Integer version -> path under `base_path`; None if the base path does not exist."""
    try:
        entries = os.listdir(base_path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    versions = {}
    for entry in entries:
        if entry.isdigit() and os.path.isdir(os.path.join(base_path, entry)):
            versions[int(entry)] = os.path.join(base_path, entry)
    return versions


def apply_policy(config: ModelConfig, versions: dict[int, str]) -> dict[int, str]:
    """The versions `config.model_version_policy` aspires to, out of those present."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return dict(versions)
    if kind == "specific":
        wanted = set(policy.specific.versions)
        missing = wanted - set(versions)
        if missing:
            log.warning("model %s: versions %s of the specific policy are not under %s",
                        config.name, sorted(missing), config.base_path)
        return {v: p for v, p in versions.items() if v in wanted}
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return {v: versions[v] for v in sorted(versions)[-count:]}


class FileSystemSource:
    """Polls base paths every `poll_wait_seconds` and calls `emit(name, {version: path})`."""

    def __init__(self, emit: Callable[[str, dict[int, str]], None], poll_wait_seconds: float):
        self.emit = emit
        self.poll_wait_seconds = poll_wait_seconds
        self._models: dict[str, ModelConfig] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[tuple[str, str]] = set()

    def set_models(self, models: list[ModelConfig]) -> None:
        """Replace the watched models and poll them once right away."""
        with self._lock:
            self._models = {m.name: m for m in models}
        self.poll()

    def poll(self) -> None:
        """One pass over every watched base path."""
        with self._lock:
            models = list(self._models.values())
        for model in models:
            versions = list_versions(model.base_path)
            if versions is None:
                self._warn_once(model, f"base path {model.base_path} for servable {model.name} does not exist; "
                                       "will keep polling for it")
                continue
            if not versions:
                self._warn_once(model, f"No versions of servable {model.name} found under base path "
                                       f"{model.base_path}; expected <base_path>/<integer version>/saved_model.pb")
            else:
                self._warned = {w for w in self._warned if w[0] != model.name}
            self.emit(model.name, apply_policy(model, versions))

    def _warn_once(self, model: ModelConfig, message: str) -> None:
        key = (model.name, message)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def start(self) -> None:
        """Poll in the background; a wait of 0 polls exactly once (at set_models), as in TF Serving."""
        if self.poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._run, name="file-system-source", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll()
            except Exception:  # a poll must never kill the source thread
                log.exception("file system poll failed")

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()

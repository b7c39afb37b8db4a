"""The manager: applies aspired versions, loads (and warms) new versions, swaps, drains and unloads.

A source tells the manager which versions of a model it aspires to; a worker thread reconciles:
new versions are loaded and warmed up (the initial models in parallel, later ones on `num_load_threads`,
as TF Serving), then become AVAILABLE; versions no longer aspired are
unloaded only once an aspired version is AVAILABLE (TF Serving's availability-preserving policy),
and only after the requests holding them have finished. Requests get a servable through `handle`,
which keeps that version alive until the request is done.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import grpc
from tensorflow_serving.apis import get_model_status_pb2

from serving.server.errors import ServingError, invalid, not_found
from serving.server.servable import Servable

log = logging.getLogger("tfzoo.serving")

State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass
class VersionState:
    """What the manager knows of one version: its state, its last error, and the loaded servable."""

    version: int
    path: str
    state: int = State.START
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""
    servable: Servable | None = None


class Manager:
    """Aspired-versions manager for every model the server knows."""

    def __init__(self, load: Callable[[str, int, str], Servable], warmup: Callable[[Servable], None], *,
                 max_num_load_retries: int = 5, load_retry_interval_seconds: float = 60.0,
                 num_load_threads: int = 0, num_unload_threads: int = 0,
                 num_initial_load_threads: int = 4 * (os.cpu_count() or 1)):
        self._load, self._warmup = load, warmup
        # TF Serving's ServerCore: the initial models load on 4 x cores threads, later versions on
        # num_load_threads (0: one at a time in the manager's thread), unloads on num_unload_threads.
        self.num_load_threads, self.num_unload_threads = num_load_threads, num_unload_threads
        self._load_threads = num_initial_load_threads
        self._load_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._load_pool_threads = 0
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval_seconds = load_retry_interval_seconds
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._aspired: dict[str, dict[int, str]] = {}
        self._versions: dict[str, dict[int, VersionState]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="manager", daemon=True)
        self._thread.start()

    # --- inputs: sources and config --------------------------------------------------------------

    def set_aspired_versions(self, name: str, versions: dict[int, str]) -> None:
        """The versions of `name` that should be served (from a source)."""
        with self._lock:
            if self._aspired.get(name) == versions:
                return
            self._aspired[name] = dict(versions)
            known = self._versions.setdefault(name, {})
            for version in versions:  # unloaded cleanly before (its model left the config): load it anew
                state = known.get(version)
                if state is not None and state.state == State.END and state.error_code == grpc.StatusCode.OK:
                    del known[version]
        self._wake.set()

    def remove_model(self, name: str) -> None:
        """Unload every version of `name` (it left the config)."""
        self.set_aspired_versions(name, {})
        with self._lock:
            self._labels.pop(name, None)

    def set_labels(self, name: str, labels: dict[str, int]) -> None:
        """Replace `name`'s version labels."""
        with self._lock:
            self._labels[name] = dict(labels)

    def label_version(self, name: str, label: str) -> int | None:
        """The version `label` points at for model `name`, if any."""
        with self._lock:
            return self._labels.get(name, {}).get(label)

    def knows(self, name: str) -> bool:
        """True when the manager has been told of model `name`."""
        with self._lock:
            return name in self._versions

    def models(self) -> list[str]:
        """Every model name the manager has been told of, sorted."""
        with self._lock:
            return sorted(self._versions)

    # --- outputs: handles and status ---------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """Acquire the servable a request names (latest AVAILABLE by default); release it when done."""
        with self._lock:
            versions = self._versions.get(name, {})
            if label:
                version = self._labels.get(name, {}).get(label)
                if version is None:
                    raise invalid(f"Unrecognized servable version label: {label}")
            if version is None:
                available = [v for v, s in versions.items() if s.state == State.AVAILABLE]
                if not available:
                    raise not_found(f"Servable not found for request: Latest({name})")
                version = max(available)
            state = versions.get(version)
            if state is None or state.state != State.AVAILABLE:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            state.servable.acquire()
            return state.servable

    @contextlib.contextmanager
    def handle(self, name: str, version: int | None = None, label: str | None = None) -> Iterator[Servable]:
        """`with manager.handle(...) as servable:` keeps that version loaded for the block."""
        servable = self.resolve(name, version, label)
        try:
            yield servable
        finally:
            servable.release()

    def status(self, name: str) -> list[VersionState]:
        """Snapshots of every version of `name` the manager has seen, newest first."""
        with self._lock:
            return [dataclasses.replace(s, servable=None)
                    for _, s in sorted(self._versions.get(name, {}).items(), reverse=True)]

    def available_versions(self, name: str) -> list[int]:
        """Versions of `name` that are AVAILABLE now."""
        with self._lock:
            return sorted(v for v, s in self._versions.get(name, {}).items() if s.state == State.AVAILABLE)

    def settled(self, name: str) -> bool:
        """True when every aspired version of `name` is AVAILABLE or has failed, and retired ones are gone."""
        with self._lock:
            aspired = self._aspired.get(name, {})
            versions = self._versions.get(name, {})
            for v in aspired:
                if v not in versions or versions[v].state not in (State.AVAILABLE, State.END):
                    return False
            return not self._to_retire(aspired, versions) and all(
                s.state != State.UNLOADING for s in versions.values())

    def wait_until_settled(self, names: list[str], timeout: float) -> bool:
        """Block until every model in `names` is settled, or `timeout` seconds; return whether it is."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(self.settled(n) for n in names):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.5))
        return True

    # --- the worker ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._reconcile()
            except Exception:  # the worker must survive anything a model does
                log.exception("manager reconcile failed")

    def _reconcile(self) -> None:
        loads = []
        for name in self.models():
            with self._lock:
                aspired = self._aspired.get(name, {})
                versions = self._versions.setdefault(name, {})
                for v in sorted(aspired):
                    if v not in versions:
                        versions[v] = VersionState(v, aspired[v])
                        loads.append((name, versions[v]))
        self._start_loads(loads)
        unloads = []
        for name in self.models():
            with self._lock:
                retire = self._to_retire(self._aspired.get(name, {}), self._versions.get(name, {}))
                for s in retire:
                    s.state = State.UNLOADING
                    self._changed.notify_all()
                unloads += [(name, s) for s in retire]
        self._each(self._unload_version, unloads, self.num_unload_threads)

    def _start_loads(self, loads: list[tuple[str, VersionState]]) -> None:
        """Load each (name, state): in this thread, one after the other, when the load threads are 0 or 1
        (TF Serving's "no thread pool"); else on the load pool, without waiting (a finished load wakes the
        worker, which then retires what it replaces), so a version aspired meanwhile starts at once."""
        threads = self._load_threads
        if threads <= 1:
            self._each(self._load_version, loads, 1)
            return
        with self._lock:
            if self._load_pool is None or self._load_pool_threads != threads:
                if self._load_pool is not None:
                    self._load_pool.shutdown(wait=False)  # its queued loads still run
                self._load_pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="load")
                self._load_pool_threads = threads
            for name, state in loads:
                self._load_pool.submit(self._load_and_wake, name, state)

    def _load_and_wake(self, name: str, state: VersionState) -> None:
        if not self._stop.is_set():
            self._load_version(name, state)
        self._wake.set()

    def _each(self, fn: Callable[[str, VersionState], None], items: list[tuple[str, VersionState]],
              threads: int) -> None:
        """`fn(name, state)` for each item: in this thread one after the other (threads 0 or 1, TF Serving's
        "no thread pool"), or on a pool of `threads`; returns when all are done."""
        if threads <= 1 or len(items) <= 1:
            for name, state in items:
                if self._stop.is_set():
                    return
                fn(name, state)
            return
        with concurrent.futures.ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="manager") as pool:
            for future in [pool.submit(fn, name, state) for name, state in items]:
                future.result()  # both functions report their failures in the version's state

    def end_initial_load(self) -> None:
        """The initial models are in: later loads use `num_load_threads` (TF Serving's ServerCore switches from
        `num_initial_load_threads` the same way)."""
        self._load_threads = self.num_load_threads

    @staticmethod
    def _to_retire(aspired: dict[int, str], versions: dict[int, VersionState]) -> list[VersionState]:
        """TF Serving's availability-preserving policy: retire serving versions that are no longer aspired
        once an aspired version is AVAILABLE (or nothing is aspired); until then keep the newest one."""
        serving = sorted((v for v, s in versions.items() if v not in aspired and s.state == State.AVAILABLE))
        aspired_available = any(versions[v].state == State.AVAILABLE for v in aspired if v in versions)
        if not aspired or aspired_available:
            return [versions[v] for v in serving]
        return [versions[v] for v in serving[:-1]]

    def _load_version(self, name: str, state: VersionState) -> None:
        self._set(state, State.LOADING)
        log.info("Loading servable version {name: %s version: %d} from %s", name, state.version, state.path)
        for attempt in range(self.max_num_load_retries + 1):
            try:
                servable = self._load(name, state.version, state.path)
                self._warmup(servable)
                break
            except Exception as e:  # any load failure is reported in status, never fatal
                error = e if isinstance(e, ServingError) else ServingError(grpc.StatusCode.UNKNOWN, str(e))
                log.error("Loading servable: {name: %s version: %d} failed: %s", name, state.version, error.message)
                if attempt == self.max_num_load_retries or self._stop.is_set():
                    self._set(state, State.END, error.code, error.message)
                    return
                log.info("Retrying load of {name: %s version: %d} in %.1f s (retry %d of %d)", name,
                         state.version, self.load_retry_interval_seconds, attempt + 1, self.max_num_load_retries)
                if self._stop.wait(self.load_retry_interval_seconds):
                    self._set(state, State.END, error.code, error.message)
                    return
        with self._lock:
            state.servable = servable
        self._set(state, State.AVAILABLE, grpc.StatusCode.OK, "")
        log.info("Successfully loaded servable version {name: %s version: %d}", name, state.version)

    def _unload_version(self, name: str, state: VersionState) -> None:
        log.info("Unloading servable version {name: %s version: %d}", name, state.version)
        servable = state.servable
        servable.drain_and_close()
        with self._lock:
            state.servable = None
        del servable
        gc.collect()  # free the graph now, so memory stays flat across reloads
        self._set(state, State.END, grpc.StatusCode.OK, "")
        log.info("Done unloading servable version {name: %s version: %d}", name, state.version)

    def _set(self, state: VersionState, value: int, code: grpc.StatusCode | None = None, message: str | None = None):
        with self._lock:
            state.state = value
            if code is not None:
                state.error_code, state.error_message = code, message
            self._changed.notify_all()

    def stop(self) -> None:
        """Stop the worker and unload every version (draining requests in flight)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        if self._load_pool is not None:  # loads in progress finish (and are unloaded below); queued ones never start
            self._load_pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            loaded = [(n, s) for n, vs in self._versions.items() for s in vs.values() if s.servable is not None]
        for name, state in loaded:
            self._unload_version(name, state)

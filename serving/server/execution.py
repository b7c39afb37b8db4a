"""Where model code runs, and how much memory requests may hold: per-model queues and the in-flight budget.

TF Serving answers each request on a worker thread of its front-end and runs graphs on TensorFlow's
pools: nothing runs on an I/O thread. Here both front-ends are event loops (uvicorn for REST, grpc.aio
for gRPC) that only parse, validate and answer; every model run goes to the `ModelQueue` of the model
the request names:
- each model has its own threads and a bounded queue (a full queue answers UNAVAILABLE / 503), so a
  flood of requests to one model, or one slow request, waits behind its own model and nothing else;
- work whose caller has gone (a REST client that disconnected, a gRPC call cancelled or past its
  deadline) is cancelled while queued and never runs.
With `--enable_batching` each model also has its own batch threads (`batching.BatchScheduler`).

`Mailbox` carries results from those threads back to an event loop. `Budget` bounds the bytes that
requests in flight hold (bodies as they arrive, parsed values, decoded tensors): a request that would
go over it is answered UNAVAILABLE / 503 at once instead of growing the process.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import threading
from collections.abc import Callable

import grpc

from serving.server.errors import ServingError

CPUS = os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Limits:
    """tfzoo-model-server's bounds on requests (flags of the same names; TF Serving has none of these)."""

    max_request_bytes: int = 256 * 1024 * 1024  # a REST body or a gRPC message
    max_request_elements: int = 1 << 25  # tensor elements in one request, JSON and TensorProto alike
    max_in_flight_bytes: int = 1 << 30  # everything requests in flight hold, together
    model_threads: int = 2 * CPUS  # threads per model running its requests
    max_enqueued_requests_per_model: int = 1024  # requests queued or running per model


class Budget:
    """A count of bytes held by requests in flight, with a ceiling."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def reservation(self) -> Reservation:
        """An empty reservation; `add` charges it, `release` returns everything it holds."""
        return Reservation(self)

    def _take(self, nbytes: int) -> None:
        with self._lock:
            if self.used + nbytes > self.limit:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   f"Server is overloaded: requests in flight hold {self.used} bytes and this "
                                   f"one needs {nbytes} more, over the limit of {self.limit} bytes "
                                   "(--max_in_flight_bytes); retry later")
            self.used += nbytes

    def _give(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class Reservation:
    """Bytes one request holds against the budget; released once, when the request is answered."""

    __slots__ = ("budget", "nbytes")

    def __init__(self, budget: Budget):
        self.budget, self.nbytes = budget, 0

    def add(self, nbytes: int) -> None:
        """Charge `nbytes` more, or raise UNAVAILABLE (charging nothing) when the budget can't take them."""
        self.budget._take(nbytes)
        self.nbytes += nbytes

    def release(self) -> None:
        """Return everything charged (idempotent)."""
        nbytes, self.nbytes = self.nbytes, 0
        if nbytes:
            self.budget._give(nbytes)


class ModelQueue:
    """One model's threads and its bounded queue of requests."""

    def __init__(self, name: str, threads: int, max_enqueued: int):
        self.name, self.max_enqueued = name, max_enqueued
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=f"model:{name}")
        self.pending = 0  # queued or running
        self._lock = threading.Lock()

    def submit(self, fn: Callable, *args) -> concurrent.futures.Future:
        """Run `fn(*args)` on this model's threads; UNAVAILABLE when the queue is full.

        Cancelling the future before a thread takes it drops the work.
        """
        with self._lock:
            if self.pending >= self.max_enqueued:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   f"The queue of model {self.name} is full ({self.max_enqueued} requests, "
                                   "--max_enqueued_requests_per_model); retry later")
            self.pending += 1
        future = self.pool.submit(fn, *args)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: concurrent.futures.Future) -> None:
        with self._lock:
            self.pending -= 1

    def shutdown(self) -> None:
        """Let queued work finish on the threads, then end them."""
        self.pool.shutdown(wait=False)


class ModelQueues:
    """The `ModelQueue` of every model, made on first use."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._queues: dict[str, ModelQueue] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> ModelQueue:
        queue = self._queues.get(name)
        if queue is None:
            with self._lock:
                queue = self._queues.get(name)
                if queue is None:
                    queue = self._queues[name] = ModelQueue(name, self.limits.model_threads,
                                                            self.limits.max_enqueued_requests_per_model)
        return queue

    def remove(self, name: str) -> None:
        """A model left the config: its threads end once their work is done."""
        with self._lock:
            queue = self._queues.pop(name, None)
        if queue is not None:
            queue.shutdown()


class Mailbox:
    """Results from worker threads to one event loop's futures, with one wake-up per burst.

    `loop.call_soon_threadsafe` per result writes to the loop's wake-up pipe and runs one callback per
    request; a batch of 32 finishing at once needs one: the first `put` of a burst schedules `_drain`,
    the others only append.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._items: list[tuple[asyncio.Future, object]] = []
        self._lock = threading.Lock()

    def put(self, future: asyncio.Future, result) -> None:
        """Set `result` on `future` from any thread (dropped if the loop has closed)."""
        with self._lock:
            self._items.append((future, result))
            first = len(self._items) == 1
        if first:
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the server is gone, and its calls with it
                pass

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for future, result in items:
            if not future.done():  # a cancelled call (client gone) has nobody to answer
                future.set_result(result)

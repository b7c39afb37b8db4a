"""Server-side batching (`--enable_batching`): concurrent requests to one signature become one Session run.

With `--enable_per_model_batching_parameters`, a version whose SavedModel directory holds
`batching_params.pbtxt` batches with those parameters, and a version without one is not batched
(TF Serving's GetPerModelBatchingParams); `per_model_options` reads the file.

As TF Serving's BatchingSession with its BasicBatchScheduler: requests queue per (signature, feeds,
fetches); a batch closes when it holds `max_batch_size` rows or `batch_timeout_micros` after its
first request; `num_batch_threads` batches of each model run at once, on threads of that model's own
(so a slow model's batches never hold up another's); inputs are concatenated along dimension 0
(and padded up to the next of `allowed_batch_sizes`), outputs are split back by rows. A queue
holding `max_enqueued_batches` batches answers UNAVAILABLE instead of growing without bound.

Every request was checked against its signature before it queued; a batch only merges requests
whose inner dimensions agree (unless `pad_variable_length_inputs`), the others wait for the next
batch, so one request can never fail another's batch. A request cancelled while queued (its client
has gone) is left out of its batch.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable

import grpc
import numpy as np

from serving.server.errors import ServingError, invalid


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters with TF's batch scheduler defaults for unset fields."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_proto(cls, params) -> BatchingOptions:
        """From a BatchingParameters message; validates allowed_batch_sizes as TF Serving does."""
        get = lambda field, default: getattr(params, field).value if params.HasField(field) else default  # noqa: E731
        options = cls(
            max_batch_size=get("max_batch_size", cls.max_batch_size),
            batch_timeout_micros=get("batch_timeout_micros", cls.batch_timeout_micros),
            max_enqueued_batches=get("max_enqueued_batches", cls.max_enqueued_batches),
            num_batch_threads=get("num_batch_threads", os.cpu_count() or 1),
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
            pad_variable_length_inputs=params.pad_variable_length_inputs,
        )
        sizes = options.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
                raise ValueError("allowed_batch_sizes entries must be monotonically increasing")
            if sizes[-1] != options.max_batch_size:
                raise ValueError("Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                                 f"{sizes[-1]}; expected {options.max_batch_size}")
        if options.max_batch_size <= 0 or options.num_batch_threads <= 0 or options.max_enqueued_batches <= 0:
            raise ValueError("max_batch_size, num_batch_threads and max_enqueued_batches must be positive")
        return options


PER_MODEL_FILE = "batching_params.pbtxt"


def per_model_options(path: str | os.PathLike) -> BatchingOptions | None:
    """The BatchingOptions of `path`/batching_params.pbtxt, or None when the version has no such file.
    A file that does not parse, or holds invalid parameters, fails the version's load (as in TF Serving)."""
    from serving import config as config_lib
    from serving.server.protos import BatchingParameters

    file = os.path.join(path, PER_MODEL_FILE)
    if not os.path.isfile(file):
        return None
    try:
        return BatchingOptions.from_proto(config_lib.read_text(file, BatchingParameters))
    except ValueError as e:  # ConfigError (parse) included
        raise invalid(f"Invalid {file}: {e}") from None


@dataclasses.dataclass
class _Task:
    inputs: list[np.ndarray]
    rows: int
    future: concurrent.futures.Future
    enqueued: float
    inner: tuple | None  # the inputs' dimensions after the 0th: only tasks that agree share a batch


class Batcher:
    """One queue of tasks for one (signature, feeds, fetches), served by a shared thread pool."""

    def __init__(self, run: Callable[[list[np.ndarray]], list[np.ndarray]], options: BatchingOptions,
                 pool: concurrent.futures.ThreadPoolExecutor, on_queue_latency: Callable[[float], None] | None,
                 on_batch: Callable[[int], None] | None = None):
        self.run, self.options, self.pool = run, options, pool
        self.on_queue_latency, self.on_batch = on_queue_latency, on_batch
        self._queue: collections.deque[_Task] = collections.deque()
        self._rows = 0
        self._lock = threading.Lock()
        self._full = threading.Condition(self._lock)  # notified when the queue holds a full batch
        self._scheduled = 0  # batches handed to the pool and not yet started

    def submit(self, inputs: list[np.ndarray]) -> concurrent.futures.Future:
        """Queue `inputs` to run as part of a batch; the future resolves to its rows of the outputs."""
        rows = _batch_rows(inputs)
        if rows > self.options.max_batch_size:
            raise invalid(f"Task size {rows} is larger than maximum batch size {self.options.max_batch_size}")
        inner = None if self.options.pad_variable_length_inputs else tuple(np.shape(a)[1:] for a in inputs)
        task = _Task(inputs, rows, concurrent.futures.Future(), time.perf_counter(), inner)
        with self._lock:
            queued_batches = -(-(self._rows + rows) // self.options.max_batch_size)
            if queued_batches > self.options.max_enqueued_batches:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            self._queue.append(task)
            self._rows += rows
            if self._rows >= self.options.max_batch_size:
                self._full.notify()
            if self._scheduled == 0 or self._rows >= self.options.max_batch_size:
                self._scheduled += 1
                self.pool.submit(self._process)
        return task.future

    def _process(self) -> None:
        timeout = self.options.batch_timeout_micros / 1e6
        with self._lock:
            if timeout and self._queue:
                # Wait for a full batch, at most until the oldest task's timeout (no polling: a woken
                # waiter needs the GIL that the request threads need too).
                deadline = self._queue[0].enqueued + timeout
                self._full.wait_for(lambda: self._rows >= self.options.max_batch_size,
                                    max(0.0, deadline - time.perf_counter()))
            self._scheduled -= 1
            batch, rows = self._take_batch()
            if self._queue and self._scheduled == 0:
                self._scheduled += 1
                self.pool.submit(self._process)
        if batch:
            self._run_batch(batch, rows)

    def _take_batch(self) -> tuple[list[_Task], int]:
        """The oldest tasks that fit in one batch and agree with the first on their inner dimensions;
        cancelled tasks are dropped. Called with the lock held."""
        batch, rows, waiting = [], 0, collections.deque()
        while self._queue:
            task = self._queue.popleft()
            if task.future.cancelled():
                self._rows -= task.rows
                continue
            if rows + task.rows > self.options.max_batch_size or (batch and task.inner != batch[0].inner):
                waiting.append(task)
                if rows + task.rows > self.options.max_batch_size:
                    break
                continue
            task.future.set_running_or_notify_cancel()
            batch.append(task)
            rows += task.rows
        waiting.extend(self._queue)
        self._queue = waiting
        self._rows -= rows
        return batch, rows

    def _run_batch(self, batch: list[_Task], rows: int) -> None:
        started = time.perf_counter()
        if self.on_queue_latency:
            for task in batch:
                self.on_queue_latency(started - task.enqueued)
        if self.on_batch:
            self.on_batch(rows)
        try:
            padded = self._padded_size(rows)
            merged = [_concat([task.inputs[i] for task in batch], padded - rows, self.options)
                      for i in range(len(batch[0].inputs))]
            outputs = self.run(merged)
            for output in outputs:
                if np.ndim(output) == 0 or np.shape(output)[0] != padded:
                    raise invalid("Batched output tensor's 0th dimension does not equal the sum of the 0th "
                                  "dimension sizes of the input tensors")
            offset = 0
            for task in batch:
                task.future.set_result([o[offset:offset + task.rows] for o in outputs])
                offset += task.rows
        except Exception as e:  # every waiting request gets the batch's error
            for task in batch:
                if not task.future.done():
                    task.future.set_exception(e)

    def _padded_size(self, rows: int) -> int:
        for size in self.options.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows


def _batch_rows(inputs: list[np.ndarray]) -> int:
    sizes = {np.shape(a)[0] if np.ndim(a) else None for a in inputs}
    if len(sizes) != 1 or None in sizes:
        raise invalid("Batching session Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def _concat(arrays: list[np.ndarray], pad_rows: int, options: BatchingOptions) -> np.ndarray:
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        if not options.pad_variable_length_inputs:
            raise invalid("Batching session Run() input tensors must have equal dimensions except the 0th; "
                          "set pad_variable_length_inputs to pad them")
        target = tuple(max(dims) for dims in zip(*shapes, strict=True))
        arrays = [_pad_to(a, target) for a in arrays]
    merged = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    if pad_rows:
        merged = np.concatenate([merged, np.repeat(merged[-1:], pad_rows, axis=0)])
    return merged


def _pad_to(array: np.ndarray, inner: tuple[int, ...]) -> np.ndarray:
    widths = [(0, 0)] + [(0, t - s) for s, t in zip(array.shape[1:], inner, strict=True)]
    if array.dtype == object:
        return np.pad(array, widths, constant_values=b"")
    return np.pad(array, widths)  # zeros, as TF Serving pads with the first element's zero value


class BatchScheduler:
    """Batchers per (model, version, signature, feeds, fetches); each model's share `num_batch_threads`
    threads of its own."""

    def __init__(self, options: BatchingOptions, on_queue_latency: Callable[[float], None] | None = None,
                 on_batch: Callable[[str, int, int], None] | None = None):
        self.options = options
        self.on_queue_latency = on_queue_latency
        self.on_batch = on_batch  # (model, version, rows) of every batch run
        self._batchers: dict[tuple, Batcher] = {}
        self._pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def batcher(self, key: tuple, run: Callable[[list[np.ndarray]], list[np.ndarray]],
                options: BatchingOptions | None = None) -> Batcher:
        """The batcher for `key` (whose first item is the model's name), created on first use, with `options`
        (a version's own batching_params.pbtxt) or the server's."""
        options = options or self.options
        with self._lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                pool_key = (key[0], options.num_batch_threads)
                pool = self._pools.get(pool_key)
                if pool is None:
                    pool = self._pools[pool_key] = concurrent.futures.ThreadPoolExecutor(
                        options.num_batch_threads, thread_name_prefix=f"batch:{key[0]}")
                on_batch = functools.partial(self.on_batch, key[0], key[1]) if self.on_batch else None
                batcher = self._batchers[key] = Batcher(run, options, pool, self.on_queue_latency, on_batch)
            return batcher

    def forget(self, prefix: tuple) -> None:
        """Drop the batchers of an unloaded servable."""
        with self._lock:
            for key in [k for k in self._batchers if k[:len(prefix)] == prefix]:
                del self._batchers[key]

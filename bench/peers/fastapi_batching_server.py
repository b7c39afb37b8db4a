"""The FastAPI peer (same route, orjson, uvicorn workers) with an asyncio micro-batcher in front of the model:
requests that arrive within 1 ms, up to 32 examples, share one model call, as TF Serving's batching does.

    python fastapi_batching_server.py MODEL_NAME SAVED_MODEL_DIR PORT [WORKERS]
"""
from __future__ import annotations

import asyncio

import numpy as np
from common import Signature, arguments, model_from_environment, rest_app, serve_rest
from fastapi import FastAPI

MAX_BATCH_SIZE, BATCH_TIMEOUT_S = 32, 0.001  # bench/serving.py's BATCHING for tfzoo, in the same units


class MicroBatcher:
    """Queues single requests; one task at a time concatenates what is waiting and calls the model in a thread."""

    def __init__(self, signature: Signature):
        self.signature = signature
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def __call__(self, instances: np.ndarray) -> np.ndarray:
        if self.task is None:
            self.task = asyncio.create_task(self.run())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((instances, future))
        return await future

    async def run(self) -> None:
        while True:
            waiting = [await self.queue.get()]
            if self.queue.qsize() + 1 < MAX_BATCH_SIZE:
                await asyncio.sleep(BATCH_TIMEOUT_S)  # let the batch fill
            while not self.queue.empty() and sum(len(x) for x, _ in waiting) < MAX_BATCH_SIZE:
                waiting.append(self.queue.get_nowait())
            arrays = [x for x, _ in waiting]
            try:
                outputs = await asyncio.to_thread(self.signature.predict, np.concatenate(arrays))
                answers = np.split(outputs, np.cumsum([len(x) for x in arrays])[:-1])
            except Exception as error:  # every request of the batch gets the error
                answers = [error] * len(waiting)
            for (_, future), answer in zip(waiting, answers, strict=True):
                if future.done():  # the client went away
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

def create_app() -> FastAPI:
    """The app of one uvicorn worker, with its own batcher."""
    name, signature = model_from_environment()
    return rest_app(name, signature, MicroBatcher(signature))


if __name__ == "__main__":
    serve_rest("fastapi_batching_server:create_app", arguments())

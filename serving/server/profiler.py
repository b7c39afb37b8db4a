"""TensorFlow's profiler on the gRPC port, as `tensorflow_model_server --enable_profiler` (its default) serves it.

TensorBoard's Profile tab ("Capture Profile", address `localhost:8500`) and `tf.profiler.experimental.client.trace`
call `tensorflow.ProfilerService` on the model server's gRPC port. TensorFlow's Python API can only start its
profiler server on a port of its own (`tf.profiler.experimental.server.start`), so that server listens on a second,
free port chosen at start-up, and the gRPC port forwards the ProfilerService calls to it unchanged (raw bytes: no
proto of the profiler's is parsed here, so any TensorFlow version's service passes through). A capture while no
request arrives returns an empty trace. With --server_processes, a capture reaches the process its connection
landed on.
"""
from __future__ import annotations

import logging
import socket

import grpc

log = logging.getLogger("tfzoo.serving")

SERVICE = "tensorflow.ProfilerService"
METHODS = ("Profile", "Terminate", "Monitor")


def start() -> int:
    """Start TensorFlow's profiler server on a free port; return the port."""
    import tensorflow as tf

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tf.profiler.experimental.server.start(port)
    log.info("TensorFlow profiler service on the gRPC port (forwarded to its own port %d)", port)
    return port


def handler(port: int) -> grpc.GenericRpcHandler:
    """A grpc.aio handler forwarding every ProfilerService call to the profiler server on `port`."""
    channel: list[grpc.aio.Channel] = []  # made on the server's event loop, by the first call

    def forward(method: str) -> grpc.RpcMethodHandler:
        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if not channel:
                channel.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
                    ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]))
            try:
                return await channel[0].unary_unary(f"/{SERVICE}/{method}")(request, timeout=context.time_remaining())
            except grpc.aio.AioRpcError as e:  # the profiler's own status, passed on
                await context.abort(e.code(), e.details() or "")

        return grpc.unary_unary_rpc_method_handler(call)

    return grpc.method_handlers_generic_handler(SERVICE, {method: forward(method) for method in METHODS})

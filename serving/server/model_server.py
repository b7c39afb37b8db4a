"""The running model server: ServerCore behind the gRPC and REST front-ends, plus the config poller.

Imported by `serving.server.main` once flags and config files have been checked, because importing
it imports TensorFlow.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import logging
import resource
import socket
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import config as config_lib
from serving.server import flags, processes, profiler
from serving.server.core import Options, ServerCore
from serving.server.errors import ServingError
from serving.server.grpc_service import AioServicer, ModelService, PredictionService
from serving.server.metrics import Metrics
from serving.server.startup import StartupConfig
from serving.server.tensorboard_log import ServingLog

log = logging.getLogger("tfzoo.serving")

# How long a REST connection may stay open idle after an answer (uvicorn's keep-alive timeout); before its
# request's headers and body are in, --rest_api_timeout_in_ms applies.
IDLE_CONNECTION_SECONDS = 30


def channel_arguments(text: str) -> list[tuple[str, object]]:
    """`--grpc_channel_arguments` "a=1,b=x" -> [("a", 1), ("b", "x")]."""
    options = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        options.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return options


class ModelServer:
    """The running server: core, gRPC server, REST server, config poller; `stop()` drains and shuts down."""

    def __init__(self, args: argparse.Namespace, startup: StartupConfig):
        self.args, self.startup = args, startup
        self.monitoring = startup.prometheus_path
        self._config_text = startup.models_text
        self.core = ServerCore(Options(
            batching=startup.batching,
            enable_per_model_batching_parameters=args.enable_per_model_batching_parameters,
            num_load_threads=args.num_load_threads,
            num_unload_threads=args.num_unload_threads,
            metrics=Metrics() if self.monitoring else None,
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval_micros=args.load_retry_interval_micros,
            enable_model_warmup=args.enable_model_warmup,
            num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
            saved_model_tags=args.saved_model_tags,
            tflite=((args.num_tflite_pools, args.num_tflite_interpreters_per_pool) if args.prefer_tflite_model
                    else None),
            tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
            tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
            tensorflow_session_config_file=args.tensorflow_session_config_file,
            enable_signature_method_name_check=args.enable_signature_method_name_check,
            allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
            limits=flags.limits(args),
            serving_log=(ServingLog(args.tensorboard_logdir, args.tensorboard_log_interval_seconds)
                         if args.tensorboard_logdir else None),
        ))
        self.grpc_server = None
        self.rest_server = None
        self.rest_thread = None
        self.health = health.HealthServicer()
        self._stopped = threading.Event()

    def start(self) -> None:
        """Load the initial models, then open the gRPC and REST ports."""
        raise_open_files_limit()
        self.core.apply_config(self.startup.models)
        self.core.start()
        self._start_grpc()
        if self.args.rest_api_port:
            self._start_rest()
        if self.args.model_config_file and self.args.model_config_file_poll_wait_seconds > 0:
            threading.Thread(target=self._poll_config, name="config-poller", daemon=True).start()
        threading.Thread(target=self._update_health, name="health", daemon=True).start()
        # Everything loaded so far lives for the whole process: keep it out of the garbage collector's
        # scans, so a collection during a request stays short (Python REST servers show 100+ ms pauses).
        # (No gc.collect() first: a full collection of TensorFlow's heap would delay the first answer.)
        gc.freeze()

    def _start_grpc(self) -> None:
        args = self.args
        pool = concurrent.futures.ThreadPoolExecutor(max(1, args.grpc_max_threads), "grpc")
        # TF Serving takes messages up to 2 GB; here up to --max_request_bytes (gRPC's own default is 4 MB).
        process, processes_count = processes.index()
        options = [("grpc.max_receive_message_length", self.core.limits.max_request_bytes),
                   ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", int(processes_count > 1)),
                   *channel_arguments(args.grpc_channel_arguments)]
        self.grpc_server = AioGrpcServer(options, pool)
        server = self.grpc_server.server
        prediction = PredictionService(self.core, tensor_content=args.enable_serialization_as_tensor_content)
        services = [AioServicer(service, pool) for service in (prediction, ModelService(self.core))]
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(services[0], server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(services[1], server)
        if args.enable_grpc_healthcheck_service:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if args.enable_profiler:
            server.add_generic_rpc_handlers((profiler.handler(profiler.start()),))
        if args.port:
            address = f"0.0.0.0:{args.port}"
            if self.startup.ssl is not None:
                server.add_secure_port(address, ssl_credentials(self.startup.ssl))
            else:
                server.add_insecure_port(address)
        unix_socket = args.grpc_socket_path and process == 0  # a Unix socket cannot be shared
        if unix_socket:
            server.add_insecure_port(f"unix:{args.grpc_socket_path}")
        self.grpc_server.start()
        if args.port:
            log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", args.port)
        if unix_socket:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", args.grpc_socket_path)

    def _start_rest(self) -> None:
        import uvicorn

        from serving.server.rest import RestApi

        app = RestApi(self.core, num_threads=self.args.rest_api_num_threads,
                      timeout_ms=self.args.rest_api_timeout_in_ms, metrics_path=self.monitoring,
                      cors=self.args.rest_api_enable_cors_support)
        timeout_ms = self.args.rest_api_timeout_in_ms
        config = uvicorn.Config(app, host="0.0.0.0", port=self.args.rest_api_port, log_level="warning",
                                access_log=False, lifespan="off", loop=_event_loop(),
                                http=rest_protocol(timeout_ms / 1000 if timeout_ms > 0 else IDLE_CONNECTION_SECONDS),
                                timeout_keep_alive=IDLE_CONNECTION_SECONDS, backlog=4096)
        self.rest_server = uvicorn.Server(config)
        sockets = [shared_socket(self.args.rest_api_port)] if processes.index()[1] > 1 else None
        self.rest_thread = threading.Thread(target=self.rest_server.run, args=(sockets,), name="rest", daemon=True)
        self.rest_thread.start()
        while not self.rest_server.started:
            if not self.rest_thread.is_alive():
                raise OSError(f"could not start the REST API on port {self.args.rest_api_port}")
            threading.Event().wait(0.01)
        log.info("Exporting HTTP/REST API at:localhost:%d ...", self.args.rest_api_port)

    def _poll_config(self) -> None:
        while not self._stopped.wait(self.args.model_config_file_poll_wait_seconds):
            try:
                text = config_lib.read_file(self.args.model_config_file)
                if text == self._config_text:
                    continue
                config = config_lib.parse_text(text, config_lib.ModelServerConfig)
                log.info("Config file %s changed: applying it", self.args.model_config_file)
                self.core.apply_config(config)
                self._config_text = text
            except (OSError, config_lib.ConfigError, ServingError) as e:
                log.error("Not applying %s: %s", self.args.model_config_file, e)

    def _update_health(self) -> None:
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        while not self._stopped.is_set():
            ready = self.core.ready()
            self.health.set("", serving if ready else not_serving)
            for name in self.core.all_models():
                self.health.set(name, serving if self.core.manager.available_versions(name) else not_serving)
            self._stopped.wait(1.0)

    def stop(self) -> None:
        """Stop accepting requests, let those in flight finish, unload every model."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("Shutting down: draining requests in flight")
        self.health.enter_graceful_shutdown()
        if self.rest_server is not None:
            self.rest_server.should_exit = True
            self.rest_thread.join(timeout=30)
        if self.grpc_server is not None:
            self.grpc_server.stop(grace=30).wait()
        self.core.stop()


def rest_protocol(headers_seconds: float) -> type:
    """uvicorn's httptools protocol, closing a connection that does not send a request's headers within
    `headers_seconds` of opening (or of its previous answer): uvicorn times out idle keep-alive connections
    only after a first answer, so a client could otherwise hold a socket forever."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Protocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._headers_timer = self.loop.call_later(headers_seconds, self._headers_timeout)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._headers_timer is None:
                self._headers_timer = self.loop.call_later(headers_seconds, self._headers_timeout)

        def on_headers_complete(self) -> None:
            self._headers_timer.cancel()
            self._headers_timer = None
            super().on_headers_complete()

        def connection_lost(self, exc) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
            super().connection_lost(exc)

        def _headers_timeout(self) -> None:
            self._headers_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return Protocol


def shared_socket(port: int) -> socket.socket:
    """A listening TCP socket on `port` that the other server processes share (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(4096)
    return sock


def raise_open_files_limit() -> None:
    """Many connections need many file descriptors: lift the soft limit to the hard one (often 1024 vs
    hundreds of thousands), as servers do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class AioGrpcServer:
    """A grpc.aio server on an event loop of its own thread, started and stopped like `grpc.server`'s.

    Handlers that are not coroutines (the health service) run on `pool`.
    """

    def __init__(self, options: list[tuple[str, object]], pool: concurrent.futures.Executor):
        self.loop = new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="grpc-aio", daemon=True).start()
        self.server = self._run(self._create(options, pool))

    @staticmethod
    async def _create(options, pool) -> grpc.aio.Server:
        return grpc.aio.server(migration_thread_pool=pool, options=options)

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def start(self) -> None:
        """Open the ports added to `server`."""
        self._run(self.server.start())

    def stop(self, grace: float | None) -> threading.Event:
        """Refuse new calls, let those in flight finish within `grace` seconds; the event is set when done."""
        done = threading.Event()

        async def stop():
            await self.server.stop(grace)
            done.set()

        asyncio.run_coroutine_threadsafe(stop(), self.loop)
        return done


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The gRPC event loop: uvloop's where it is installed (a dependency; measured ~20-30% more batched gRPC
    requests/s than asyncio's here), asyncio's otherwise."""
    if _event_loop() == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _event_loop() -> str:
    """The event loop both front-ends use: "uvloop" where it is installed, else "asyncio"."""
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio"


def ssl_credentials(ssl) -> grpc.ServerCredentials:
    """gRPC server credentials from an SSLConfig message (mutual TLS when client_verify)."""
    return grpc.ssl_server_credentials(
        [(ssl.server_key.encode(), ssl.server_cert.encode())],
        root_certificates=ssl.custom_ca.encode() or None,
        require_client_auth=ssl.client_verify,
    )

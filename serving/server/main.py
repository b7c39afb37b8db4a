"""tfzoo-model-server's entry point: flags -> config -> ServerCore -> gRPC and REST front-ends.

    tfzoo-model-server --port=8500 --rest_api_port=8501 --model_name=cnn --model_base_path=/abs/models/cnn
    tfzoo-model-server --rest_api_port=8501 --model_config_file=models/models.config
"""
from __future__ import annotations

import concurrent.futures
import gc
import logging
import os
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc  # noqa: E402

from serving import config as config_lib  # noqa: E402
from serving.server import flags  # noqa: E402
from serving.server.batching import BatchingOptions  # noqa: E402
from serving.server.core import Options, ServerCore  # noqa: E402
from serving.server.errors import ServingError  # noqa: E402
from serving.server.grpc_service import ModelService, PredictionService  # noqa: E402
from serving.server.metrics import Metrics  # noqa: E402

log = logging.getLogger("tfzoo.serving")

VERSION = "tfzoo-model-server 0.1.0 (TensorFlow Serving API 2.21 compatible)"


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

    def __init__(self, args):
        self.args = args
        self.monitoring = self._monitoring_config()
        self.core = ServerCore(Options(
            batching=self._batching_options(),
            metrics=Metrics() if self.monitoring else None,
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval_micros=args.load_retry_interval_micros,
            enable_model_warmup=args.enable_model_warmup,
            num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
            saved_model_tags=args.saved_model_tags,
            tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
            tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
            allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        ))
        self.grpc_server = None
        self.rest_server = None
        self.rest_thread = None
        self.health = health.HealthServicer()
        self._stopped = threading.Event()

    def _batching_options(self) -> BatchingOptions | None:
        if not self.args.enable_batching:
            return None
        from serving.server.protos import BatchingParameters

        params = (config_lib.read_text(self.args.batching_parameters_file, BatchingParameters)
                  if self.args.batching_parameters_file else BatchingParameters())
        return BatchingOptions.from_proto(params)

    def _monitoring_config(self):
        """The PrometheusConfig to serve, if --monitoring_config_file enables it."""
        if not self.args.monitoring_config_file:
            return None
        from serving.server.protos import MonitoringConfig

        monitoring = config_lib.read_text(self.args.monitoring_config_file, MonitoringConfig)
        if not monitoring.prometheus_config.enable:
            return None
        if not self.args.rest_api_port:
            raise config_lib.ConfigError("--monitoring_config_file needs --rest_api_port: Prometheus metrics are "
                                         "served on the REST port")
        return monitoring.prometheus_config.path or "/monitoring/prometheus/metrics"

    def initial_config(self):
        """The config from --model_config_file, or from --model_name/--model_base_path."""
        if self.args.model_config_file:
            self._config_text = open(self.args.model_config_file).read()
            return config_lib.parse_text(self._config_text, config_lib.ModelServerConfig)
        if not self.args.model_base_path:
            raise config_lib.ConfigError("Both --model_config_file and --model_base_path are empty: "
                                         "nothing to serve. Pass --model_base_path=/abs/path/to/model "
                                         "(holding <version>/saved_model.pb) or --model_config_file")
        return config_lib.single_model_config(self.args.model_name, self.args.model_base_path)

    def start(self) -> None:
        """Load the initial models, then open the gRPC and REST ports."""
        self.core.apply_config(self.initial_config())
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
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(self._grpc_threads(), "grpc"),
                             options=channel_arguments(args.grpc_channel_arguments))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.core), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.core), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if args.port:
            address = f"0.0.0.0:{args.port}"
            if args.ssl_config_file:
                server.add_secure_port(address, ssl_credentials(args.ssl_config_file))
            else:
                server.add_insecure_port(address)
        if args.grpc_socket_path:
            server.add_insecure_port(f"unix:{args.grpc_socket_path}")
        server.start()
        self.grpc_server = server
        if args.port:
            log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", args.port)
        if args.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", args.grpc_socket_path)

    def _grpc_threads(self) -> int:
        """--grpc_max_threads, raised with batching so that enough waiting requests can fill the batches.

        Each gRPC thread blocks while its request waits in a batch (TF Serving's C++ server does not),
        so fewer threads than `max_batch_size` x `num_batch_threads` would cap every batch's size.
        """
        batching = self.core.batch_scheduler
        if batching is None:
            return self.args.grpc_max_threads
        wanted = batching.options.max_batch_size * batching.options.num_batch_threads
        return max(self.args.grpc_max_threads, min(wanted, 256))

    def _start_rest(self) -> None:
        import uvicorn

        from serving.server.rest import RestApi

        app = RestApi(self.core, num_threads=self.args.rest_api_num_threads,
                      timeout_ms=self.args.rest_api_timeout_in_ms, metrics_path=self.monitoring)
        config = uvicorn.Config(app, host="0.0.0.0", port=self.args.rest_api_port, log_level="warning",
                                access_log=False, lifespan="off", http="httptools", loop=_event_loop(),
                                timeout_keep_alive=30)
        self.rest_server = uvicorn.Server(config)
        self.rest_thread = threading.Thread(target=self.rest_server.run, name="rest", daemon=True)
        self.rest_thread.start()
        while not self.rest_server.started:
            if not self.rest_thread.is_alive():
                raise OSError(f"could not start the REST API on port {self.args.rest_api_port}")
            threading.Event().wait(0.01)
        log.info("Exporting HTTP/REST API at:localhost:%d ...", self.args.rest_api_port)

    def _poll_config(self) -> None:
        while not self._stopped.wait(self.args.model_config_file_poll_wait_seconds):
            try:
                text = open(self.args.model_config_file).read()
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


def _event_loop() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio"


def ssl_credentials(path: str) -> grpc.ServerCredentials:
    """gRPC server credentials from an SSLConfig text proto (mutual TLS when client_verify)."""
    from serving.server.protos import SSLConfig

    ssl = config_lib.read_text(path, SSLConfig)
    return grpc.ssl_server_credentials(
        [(ssl.server_key.encode(), ssl.server_cert.encode())],
        root_certificates=ssl.custom_ca.encode() or None,
        require_client_auth=ssl.client_verify,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; exit 0 after draining."""
    args = flags.parse(argv)
    if args.version:
        print(VERSION)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
                        stream=sys.stderr)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # TF1 loader deprecation notices
    try:
        server = ModelServer(args)
    except (config_lib.ConfigError, ValueError) as e:
        print(f"Failed to start server. Error: {e}", file=sys.stderr)
        return 1
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        server.start()
    except config_lib.ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    except (ServingError, OSError, ValueError) as e:
        print(f"Failed to start server. Error: {getattr(e, 'message', e)}", file=sys.stderr)
        server.stop()
        return 1
    done.wait()
    server.stop()
    log.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

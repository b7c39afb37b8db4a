"""tensorflow_model_server's command line: the same flag names, meanings and defaults.

Flags take `--flag=value` or `--flag value`; booleans also take a bare `--flag`. An unknown flag
is an error, as in TF Serving.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

from serving.server.execution import Limits

CPUS = os.cpu_count() or 1


def parse_bool(text: str) -> bool:
    """TF Serving's boolean flag values."""
    value = text.lower()
    if value in ("true", "1", "yes", "t", "y"):
        return True
    if value in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The flag parser (help texts follow tensorflow_model_server's)."""
    p = argparse.ArgumentParser(
        prog="tfzoo-model-server",
        description="tfzoo-model-server: a drop-in for TensorFlow Serving's tensorflow_model_server "
                    "(same flags, config files, REST and gRPC APIs).",
        allow_abbrev=False,
    )

    def flag(name: str, kind, default, help: str) -> None:
        if kind is bool:
            p.add_argument(f"--{name}", type=parse_bool, nargs="?", const=True, default=default, help=help,
                           metavar="true|false")
        else:
            p.add_argument(f"--{name}", type=kind, default=default, help=help)

    flag("port", int, 8500, "TCP port to listen on for gRPC/HTTP API. Disabled if port set to zero.")
    flag("grpc_socket_path", str, "", "If non-empty, listen to a UNIX socket for gRPC API on the given path.")
    flag("rest_api_port", int, 0, "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will not "
                                  "be exported. This port must be different than the one specified in --port.")
    flag("rest_api_num_threads", int, 4 * CPUS, "Number of threads for HTTP/REST API processing.")
    flag("rest_api_timeout_in_ms", int, 30000, "Timeout for HTTP/REST API calls.")
    flag("rest_api_enable_cors_support", bool, False, "Enable CORS headers in response")
    flag("enable_batching", bool, False, "enable batching")
    flag("allow_version_labels_for_unavailable_models", bool, False,
         "If true, allows assigning unused version labels to models that are not available yet.")
    flag("batching_parameters_file", str, "", "If non-empty, read an ascii BatchingParameters protobuf from "
                                              "the supplied file name and use the contained values instead "
                                              "of the defaults.")
    flag("model_config_file", str, "", "If non-empty, read an ascii ModelServerConfig protobuf from the supplied "
                                       "file name, and serve the models in that file. If set, --model_name and "
                                       "--model_base_path are ignored.")
    flag("model_config_file_poll_wait_seconds", int, 0,
         "Interval in seconds between each poll of the file in model_config_file. If unset or 0, the file will "
         "not be polled.")
    flag("model_name", str, "default", "name of model (ignored if --model_config_file flag is set)")
    flag("model_base_path", str, "", "path to export (ignored if --model_config_file flag is set, otherwise "
                                     "required)")
    flag("max_num_load_retries", int, 5, "maximum number of times it retries loading a model after the first "
                                         "failure, before giving up.")
    flag("load_retry_interval_micros", int, 60 * 1000 * 1000,
         "The interval, in microseconds, between each servable load retry.")
    flag("file_system_poll_wait_seconds", int, 1,
         "Interval in seconds between each poll of the filesystem for new model version. If set to zero poll "
         "will be exactly done once and not periodically.")
    flag("flush_filesystem_caches", bool, True, "accepted for compatibility; there are no caches to flush here")
    flag("tensorflow_session_parallelism", int, 0, "Number of threads to use for running a Tensorflow session.")
    flag("tensorflow_intra_op_parallelism", int, 0, "Number of threads to use to parallelize the execution of "
                                                     "an individual op. Auto-configured by default.")
    flag("tensorflow_inter_op_parallelism", int, 0, "Controls the number of operators that can be executed "
                                                     "simultaneously. Auto-configured by default.")
    flag("ssl_config_file", str, "", "If non-empty, read an ascii SSLConfig protobuf from the supplied file name "
                                     "and set up a secure gRPC channel")
    flag("platform_config_file", str, "", "not supported by tfzoo-model-server (refused if set)")
    flag("per_process_gpu_memory_fraction", float, 0, "not supported by tfzoo-model-server (refused if set)")
    flag("saved_model_tags", str, "serve", "Comma-separated set of tags corresponding to the meta graph def to "
                                           "load from SavedModel.")
    flag("grpc_channel_arguments", str, "", "A comma separated list of arguments to be passed to the grpc "
                                            "server. (e.g. grpc.max_connection_age_ms=2000)")
    flag("grpc_max_threads", int, 4 * CPUS, "Max grpc server threads to handle grpc messages.")
    flag("enable_model_warmup", bool, True, "Enables model warmup, which triggers lazy initializations (such as "
                                            "TF optimizations) at load time, to reduce first request latency.")
    flag("num_request_iterations_for_warmup", int, 0, "Number of times a request is iterated during warmup "
                                                       "replay. This value is used only if > 0.")
    flag("monitoring_config_file", str, "", "If non-empty, read an ascii MonitoringConfig protobuf from the "
                                            "supplied file name")
    flag("version", bool, False, "Display version")
    # The rest of tensorflow_model_server's flags (main.cc / server.h defaults). HONOURED, ACCEPTED (logged: they
    # concern hardware or builds this server does not have) and REFUSED_VALUES below say what each one does here.
    flag("enable_signature_method_name_check", bool, False,
         "Enable method_name check for SignatureDef. Disable this if serving native TF2 regression/classification "
         "models.")
    flag("enable_grpc_healthcheck_service", bool, True,
         "Enable the standard gRPC healthcheck service (grpc.health.v1). TF Serving's default is false; "
         "tfzoo-model-server's is true (shared/SERVING.md): =false turns it off.")
    flag("enable_profiler", bool, True, "Enable profiler service.")
    flag("enable_per_model_batching_parameters", bool, False,
         "Enables model specific batching params read from `batching_params.pbtxt` in the SavedModel dir.")
    flag("enable_serialization_as_tensor_content", bool, False,
         "Enable serialization of predict response as tensor content (default: the repeated *_val fields).")
    flag("num_load_threads", int, 0, "The number of threads in the thread-pool used to load servables. If set "
                                     "as 0, servable loads are performed serially. (As in TF Serving, the models "
                                     "of the initial config load on 4 x cores threads.)")
    flag("num_unload_threads", int, 0, "The number of threads in the thread-pool used to unload servables.")
    flag("remove_unused_fields_from_bundle_metagraph", bool, True,
         "Removes unused fields from MetaGraphDef proto message to save memory.")
    flag("prefer_tflite_model", bool, False, "Prefer TensorFlow Lite model from `model.tflite` file in SavedModel "
                                             "directory, instead of the TensorFlow model from `saved_model.pb`.")
    flag("num_tflite_pools", int, CPUS, "Number of TFLite interpreter pools of a TfLiteSession. (Here: pools x "
                                        "interpreters per pool LiteRT interpreters serve each model.tflite, one "
                                        "request at a time each.)")
    flag("num_tflite_interpreters_per_pool", int, 1, "Number of TFLite interpreters in an interpreter pool.")
    flag("tensorflow_session_config_file", str, "",
         "If non-empty, read an ascii TensorFlow Session ConfigProto protobuf from the supplied file name. Parts "
         "of it (threads, parallelism) are overridden by the corresponding command line flags. (Here: without "
         "a file, TensorFlow's defaults with thread spinning off, `experimental { disable_thread_spinning: "
         "true }`, which leaves the cores to the request threads; a file is taken as written.)")
    flag("thread_pool_factory_config_file", str, "",
         "If non-empty, read an ascii ThreadPoolConfig protobuf from the supplied file name.")
    flag("mixed_precision", str, "", "specify mixed_precision mode")
    flag("xla_cpu_compilation_enabled", bool, False, "Enable XLA:CPU JIT (default is disabled).")
    flag("xla_gpu_compilation_enabled", bool, False, "Enable both XLA:CPU JIT and XLA:GPU JIT (default is "
                                                     "disabled).")
    flag("skip_initialize_tpu", bool, False, "Whether to skip auto initializing TPU.")
    flag("use_alts_credentials", bool, False, "Use Google ALTS credentials")
    # tfzoo-model-server's own bounds (TF Serving has no such flags): see serving/server/execution.py.
    limits = Limits()
    flag("max_request_bytes", int, limits.max_request_bytes,
         "tfzoo: largest REST body or gRPC message, in bytes (a larger REST body is answered 413 before it is "
         "read; gRPC answers RESOURCE_EXHAUSTED).")
    flag("max_request_elements", int, limits.max_request_elements,
         "tfzoo: most tensor elements one request may hold (JSON values or TensorProto elements as declared by "
         "its shape); more is INVALID_ARGUMENT / 400, refused before anything of that size is allocated.")
    flag("max_in_flight_bytes", int, limits.max_in_flight_bytes,
         "tfzoo: bytes all requests in flight may hold together (bodies, parsed values, decoded tensors); a "
         "request over it is answered UNAVAILABLE / 503 at once.")
    flag("model_threads", int, limits.model_threads,
         "tfzoo: threads that run each model's requests (every model has its own, and its own queue).")
    flag("max_enqueued_requests_per_model", int, limits.max_enqueued_requests_per_model,
         "tfzoo: requests one model may have queued or running; more are answered UNAVAILABLE / 503.")
    flag("tensorboard_logdir", str, "",
         "tfzoo: if set, write TensorBoard summaries of what each model version serves to DIR/<model>/<version> "
         "(requests, errors by code, latency p50/p99, batch sizes, predicted-class shares and their drift from the "
         "training labels, input pixel statistics, generated lengths): see serving/server/tensorboard_log.py.")
    flag("tensorboard_log_interval_seconds", float, 30.0,
         "tfzoo: seconds between two writes of the --tensorboard_logdir summaries (one step each).")
    flag("server_processes", int, 1,
         "tfzoo: server processes sharing the gRPC and REST ports (SO_REUSEPORT), each loading every model; "
         "see serving/server/processes.py for what differs from one process.")
    return p


def limits(args: argparse.Namespace) -> Limits:
    """The request bounds the flags set."""
    return Limits(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Limits)})


REFUSED = {
    "platform_config_file": "",
    "per_process_gpu_memory_fraction": 0,
    "tensorflow_session_parallelism": 0,
}
# Values whose behaviour this server would silently not give: refused, with the reason.
REFUSED_VALUES = {
    ("use_alts_credentials", True): "ALTS (Google's Application Layer Transport Security) is not available: use "
                                    "--ssl_config_file for TLS",
}
# Flags whose every value is accepted and only logged: they tune what this server does not have (TPUs, GPUs, C++
# thread-pool factories, the C++ MetaGraphDef kept in memory) or, for XLA, a compilation this server always does.
ACCEPTED = {
    "skip_initialize_tpu": "there is no TPU",
    "xla_gpu_compilation_enabled": "there is no GPU here",
    "thread_pool_factory_config_file": "C++ thread-pool factories do not exist in this server; each model has "
                                       "its own threads (--model_threads)",
    "remove_unused_fields_from_bundle_metagraph": "the MetaGraphDef is not kept in memory after loading",
    "xla_cpu_compilation_enabled": "XLA-compiled (jit_compile) functions always compile here; TF Serving refuses "
                                   "them unless this is true",
}


def notes(args: argparse.Namespace) -> list[str]:
    """What the server logs at start-up about the ACCEPTED flags set away from their defaults (and the
    defaults whose TF Serving behaviour differs here)."""
    defaults = vars(build_parser().parse_args([]))
    out = [f"--{name}={getattr(args, name)} is accepted and has no effect here: {why}"
           for name, why in ACCEPTED.items() if getattr(args, name) != defaults[name]]
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; flags tfzoo-model-server cannot honour are refused, never silently ignored."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in REFUSED.items():
        if getattr(args, name) != default:
            parser.error(f"--{name} is not supported by tfzoo-model-server; remove it, or use the real "
                         "tensorflow_model_server")
    for (name, value), why in REFUSED_VALUES.items():
        if getattr(args, name) == value:
            parser.error(f"--{name}={str(value).lower()} is not supported by tfzoo-model-server: {why}")
    if args.mixed_precision:
        parser.error(f"--mixed_precision={args.mixed_precision} is not supported by tfzoo-model-server: it would "
                     "serve float32 where bfloat16 was asked; remove the flag")
    if args.batching_parameters_file and not args.enable_batching:
        parser.error("--batching_parameters_file is set without --enable_batching: batching parameters are "
                     "only used with --enable_batching=true")
    for name in [field.name for field in dataclasses.fields(Limits)] + ["server_processes"]:
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    if args.tensorboard_log_interval_seconds <= 0:
        parser.error("--tensorboard_log_interval_seconds must be positive")
    if args.tensorboard_logdir and args.server_processes > 1:
        parser.error("--tensorboard_logdir writes one process's summaries: use it with --server_processes=1")
    if args.rest_api_port and args.rest_api_port == args.port:
        parser.error("--rest_api_port cannot be the same as --port")
    return args

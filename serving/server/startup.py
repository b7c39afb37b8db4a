"""Everything tensorflow_model_server checks before it loads a model: the config files named by flags.

Read here, before TensorFlow is imported, so that a bad flag or config file fails in a fraction of a
second with TF Serving's message, and the server starts from one validated `StartupConfig`.
"""
from __future__ import annotations

import argparse
import dataclasses

from tensorflow_serving.config import model_server_config_pb2

from serving import config as config_lib
from serving.server.batching import BatchingOptions
from serving.server.protos import BatchingParameters, MonitoringConfig, SSLConfig

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


@dataclasses.dataclass(frozen=True)
class StartupConfig:
    """The models to serve and the optional batching, monitoring and TLS settings."""

    models: model_server_config_pb2.ModelServerConfig
    models_text: str | None  # the --model_config_file text (polled for changes), None for --model_base_path
    batching: BatchingOptions | None
    prometheus_path: str | None
    ssl: object | None  # an SSLConfig message


def read(args: argparse.Namespace) -> StartupConfig:
    """Read and validate every config file the flags name; raise ConfigError with TF Serving's message."""
    models, text = _models(args)
    if args.tensorflow_session_config_file:  # parsed by the core, once TensorFlow (its ConfigProto) is loaded
        config_lib.read_file(args.tensorflow_session_config_file)
    return StartupConfig(models, text, _batching(args), _prometheus_path(args),
                         config_lib.read_text(args.ssl_config_file, SSLConfig) if args.ssl_config_file else None)


def _models(args: argparse.Namespace) -> tuple[model_server_config_pb2.ModelServerConfig, str | None]:
    if args.model_config_file:
        text = config_lib.read_file(args.model_config_file)
        return config_lib.parse_text(text, config_lib.ModelServerConfig), text
    if not args.model_base_path:
        raise config_lib.ConfigError("Both --model_config_file and --model_base_path are empty: nothing to serve. "
                                     "Pass --model_base_path=/abs/path/to/model (holding "
                                     "<version>/saved_model.pb) or --model_config_file")
    return config_lib.single_model_config(args.model_name, args.model_base_path), None


def _batching(args: argparse.Namespace) -> BatchingOptions | None:
    if not args.enable_batching:
        return None
    params = (config_lib.read_text(args.batching_parameters_file, BatchingParameters)
              if args.batching_parameters_file else BatchingParameters())
    try:
        return BatchingOptions.from_proto(params)
    except ValueError as e:
        raise config_lib.ConfigError(f"Invalid batching parameters: {e}") from None


def _prometheus_path(args: argparse.Namespace) -> str | None:
    if not args.monitoring_config_file:
        return None
    monitoring = config_lib.read_text(args.monitoring_config_file, MonitoringConfig)
    if not monitoring.prometheus_config.enable:
        return None
    if not args.rest_api_port:
        raise config_lib.ConfigError("--monitoring_config_file needs --rest_api_port: Prometheus metrics are "
                                     "served on the REST port")
    return monitoring.prometheus_config.path or DEFAULT_PROMETHEUS_PATH

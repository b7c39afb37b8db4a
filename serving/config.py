"""TF Serving's text-proto config files: read them, and write a models.config for a models directory.

ModelServerConfig comes from `tensorflow-serving-api` (`tensorflow_serving.config`). That package
does not ship MonitoringConfig, SSLConfig or BatchingParameters, so `serving.server.protos` builds
those three message types from descriptors with TF Serving's field names and numbers.
"""
from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

ModelServerConfig = model_server_config_pb2.ModelServerConfig
CONFIG_FILE_NAME = "models.config"


class ConfigError(ValueError):
    """A config file that TF Serving would refuse; the message is TF Serving's."""


def parse_text(text: str, message_type, what: str | None = None):
    """Parse a text proto into `message_type`, failing with TF Serving's message."""
    message = message_type()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        name = what or message.DESCRIPTOR.full_name
        raise ConfigError(f"Error parsing text-format {name}: {e}") from None
    return message


def read_file(path: str | os.PathLike) -> str:
    """A config file's text, or ConfigError naming the file and why it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"Failed to read config file {path}: {e.strerror}") from None


def read_text(path: str | os.PathLike, message_type, what: str | None = None):
    """Read and parse a text-proto file."""
    return parse_text(read_file(path), message_type, what)


def read_model_server_config(path: str | os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    """Parse a `--model_config_file`."""
    return read_text(path, ModelServerConfig)


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config TF Serving builds from `--model_name` and `--model_base_path`."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name, model.base_path, model.model_platform = name, base_path, "tensorflow"
    return config


def models_in(models_dir: str | os.PathLike) -> list[Path]:
    """Model base paths under `models_dir`: subdirectories holding at least one integer version."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and any(v.is_dir() and v.name.isdigit() for v in p.iterdir()))


def models_config(models_dir: str | os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    """A ModelServerConfig naming every model under `models_dir` (absolute base paths, latest version)."""
    config = ModelServerConfig()
    config.model_config_list.SetInParent()
    for base_path in models_in(models_dir):
        model = config.model_config_list.config.add()
        model.name, model.base_path, model.model_platform = base_path.name, str(base_path.resolve()), "tensorflow"
    return config


def write_models_config(models_dir: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Write `models.config` for `models_dir` (default: inside it); works with TF Serving and tfzoo alike."""
    models_dir = Path(models_dir)
    config = models_config(models_dir)
    if not config.model_config_list.config:
        raise FileNotFoundError(f"no models with integer versions under {models_dir}: train or export one first")
    path = Path(output) if output else models_dir / CONFIG_FILE_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text_format.MessageToString(config))
    os.replace(tmp, path)  # a server polling the file never reads half of it
    return path

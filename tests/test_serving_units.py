"""Server pieces without a server: flags, TF Serving's JSON rules, version policies, batching options."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import config
from serving.server import flags, tensors
from serving.server.batching import BatchingOptions
from serving.server.errors import HTTP_STATUS, ServingError
from serving.server.protos import BatchingParameters
from serving.server.source import apply_policy

FLOAT, INT64, STRING, BOOL = types_pb2.DT_FLOAT, types_pb2.DT_INT64, types_pb2.DT_STRING, types_pb2.DT_BOOL


# --- flags --------------------------------------------------------------------------------------------

def test_flags_have_tf_serving_defaults():
    args = flags.parse([])
    assert (args.port, args.rest_api_port, args.model_name) == (8500, 0, "default")
    assert args.file_system_poll_wait_seconds == 1
    assert (args.max_num_load_retries, args.load_retry_interval_micros) == (5, 60_000_000)
    assert args.enable_model_warmup is True and args.enable_batching is False and args.saved_model_tags == "serve"
    assert args.rest_api_timeout_in_ms == 30000 and args.model_config_file_poll_wait_seconds == 0


@pytest.mark.parametrize("argv, expected", [
    (["--enable_batching"], True), (["--enable_batching=true"], True), (["--enable_batching=false"], False),
    (["--enable_batching", "false"], False), (["--enable_batching=1"], True),
])
def test_boolean_flags_take_every_tf_serving_form(argv, expected):
    assert flags.parse(argv).enable_batching is expected


def test_value_flags_take_equals_or_space():
    assert flags.parse(["--port=9000", "--rest_api_port", "9001"]).rest_api_port == 9001


@pytest.mark.parametrize("argv, message", [
    (["--no_such_flag=1"], "unrecognized arguments"),
    (["--platform_config_file=x"], "not supported by tfzoo-model-server"),
    (["--batching_parameters_file=b.txt"], "without --enable_batching"),
    (["--port=9000", "--rest_api_port=9000"], "cannot be the same"),
])
def test_unknown_and_unsupported_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        flags.parse(argv)
    assert exit_.value.code != 0 and message in capsys.readouterr().err


# --- REST JSON rules --------------------------------------------------------------------------------

def test_json_numbers_become_the_signature_dtype():
    assert tensors.from_json([[1, 2.5]], FLOAT, "x").dtype == np.float32
    assert tensors.from_json([1, 2], INT64, "x").tolist() == [1, 2]
    assert tensors.from_json([True, False], BOOL, "x").tolist() == [True, False]


@pytest.mark.parametrize("value, dtype, message", [
    ([[1.0], [2.0, 3.0]], FLOAT, "ragged"),
    (["a"], FLOAT, "is not of expected type: float"),
    ([1.5], INT64, "is not of expected type: int64"),
    ([{"b64": "aGk="}], FLOAT, "is not of expected type: float"),
    ([1.0], STRING, "is not of expected type: string"),
    ([{"b64": "not base64!"}], STRING, "Unable to base64 decode"),
    ([1.0, 2.0], BOOL, "is not of expected type: bool"),
])
def test_json_values_of_the_wrong_kind_are_invalid_argument(value, dtype, message):
    with pytest.raises(ServingError) as error:
        tensors.from_json(value, dtype, "x")
    assert error.value.http_status == 400 and message in error.value.message


def test_strings_and_b64_become_bytes():
    array = tensors.from_json([["a", {"b64": "aGk="}]], STRING, "x")
    assert array.dtype == object and array.tolist() == [[b"a", b"hi"]]


def test_non_standard_json_numbers_are_accepted():
    assert np.isnan(tensors.loads(b'{"x": NaN}')["x"])
    assert tensors.loads(b'{"x": [Infinity, -Infinity]}')["x"] == [float("inf"), float("-inf")]


def test_outputs_ending_in_bytes_are_base64_and_nan_is_written_as_tf_serving_does():
    assert tensors.to_json_value(np.array([b"hi"], dtype=object), "image_bytes") == [{"b64": "aGk="}]
    assert tensors.to_json_value(np.array([b"hi"], dtype=object), "label") == ["hi"]
    body = tensors.dumps_checked({"y": np.array([np.nan, 1.0], np.float32)}, [np.array([np.nan])])
    assert body == b'{"y": [NaN, 1.0]}'


def test_tensor_proto_round_trip():
    for array in [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([b"a", b"bc"], dtype=object)]:
        back = tensors.to_ndarray(tensors.to_tensor_proto(array))
        assert back.shape == array.shape and back.tolist() == array.tolist()


def test_grpc_codes_map_to_tf_serving_http_statuses():
    import grpc

    assert HTTP_STATUS[grpc.StatusCode.INVALID_ARGUMENT] == 400 and HTTP_STATUS[grpc.StatusCode.NOT_FOUND] == 404
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503 and HTTP_STATUS[grpc.StatusCode.CANCELLED] == 499
    assert HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED] == 429 and HTTP_STATUS[grpc.StatusCode.UNIMPLEMENTED] == 501


# --- version policies and config --------------------------------------------------------------------

def model_config(policy: str = "") -> model_server_config_pb2.ModelConfig:
    return text_format.Parse(f'name: "m" base_path: "/m" {policy}', model_server_config_pb2.ModelConfig())


VERSIONS = {1: "/m/1", 3: "/m/3", 7: "/m/7"}


@pytest.mark.parametrize("policy, expected", [
    ("", [7]),
    ("model_version_policy { latest { num_versions: 2 } }", [3, 7]),
    ("model_version_policy { all {} }", [1, 3, 7]),
    ("model_version_policy { specific { versions: 1 versions: 9 } }", [1]),
])
def test_version_policies(policy, expected):
    assert sorted(apply_policy(model_config(policy), VERSIONS)) == expected


def test_unparseable_config_fails_with_tf_serving_message():
    with pytest.raises(config.ConfigError, match="^Error parsing text-format tensorflow.serving.ModelServerConfig"):
        config.parse_text("improperly formatted file", config.ModelServerConfig)


def test_models_config_names_every_model_with_a_version(tmp_path):
    (tmp_path / "a" / "1").mkdir(parents=True)
    (tmp_path / "b" / "tmp").mkdir(parents=True)  # no integer version: not a model
    path = config.write_models_config(tmp_path)
    parsed = config.read_model_server_config(path)
    assert [(c.name, c.base_path) for c in parsed.model_config_list.config] == [("a", str(tmp_path / "a"))]


# --- batching options ---------------------------------------------------------------------------------

def test_unset_batching_fields_take_tf_defaults():
    options = BatchingOptions.from_proto(BatchingParameters())
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches) == (1000, 0, 10)


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2", "monotonically increasing"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4", "must match max_batch_size"),
])
def test_allowed_batch_sizes_are_validated(text, message):
    with pytest.raises(ValueError, match=message):
        BatchingOptions.from_proto(text_format.Parse(text, BatchingParameters()))

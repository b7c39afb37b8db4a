"""Server pieces without a server: TF Serving's JSON rules, tensors, flags, config files, version policies."""
from __future__ import annotations

import asyncio
import base64
import json
import threading

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import types_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import client, config
from serving.server import flags, rest, tensors
from serving.server.batching import BatchingOptions
from serving.server.errors import HTTP_STATUS, ServingError
from serving.server.grpc_service import Mailbox
from serving.server.protos import BatchingParameters
from serving.server.servable import Signature
from serving.server.source import apply_policy, list_versions

FLOAT, INT64, INT32, STRING, BOOL = (types_pb2.DT_FLOAT, types_pb2.DT_INT64, types_pb2.DT_INT32,
                                     types_pb2.DT_STRING, types_pb2.DT_BOOL)


# --- JSON -> tensors ----------------------------------------------------------------------------------

def test_json_numbers_become_the_signatures_dtype():
    assert tensors.from_json([[1, 2.5]], FLOAT, "x").dtype == np.float32
    assert tensors.from_json([1, 2], INT64, "x").tolist() == [1, 2]
    assert tensors.from_json([1.0, 2.0], INT32, "x").dtype == np.int32  # integral floats are fine
    assert tensors.from_json([True, False], BOOL, "x").tolist() == [True, False]


@pytest.mark.parametrize("value, dtype, message", [
    ([[1.0], [2.0, 3.0]], FLOAT, "ragged"),
    ([["a"], ["b", "c"]], STRING, "ragged"),
    (["a"], FLOAT, "is not of expected type: float"),
    ([True], FLOAT, "is not of expected type: float"),
    ([1.5], INT64, "is not of expected type: int64"),
    ([{"b64": "aGk="}], FLOAT, "is not of expected type: float"),
    ([1.0], STRING, "is not of expected type: string"),
    ([{"b64": "not base64!"}], STRING, "Unable to base64 decode"),
    ([1.0, 2.0], BOOL, "is not of expected type: bool"),
])
def test_json_values_of_the_wrong_kind_are_invalid_argument(value, dtype, message):
    with pytest.raises(ServingError) as error:
        tensors.from_json(value, dtype, "x")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.message


def test_strings_and_b64_objects_become_bytes():
    array = tensors.from_json([["a", {"b64": "aGk="}]], STRING, "x")
    assert array.dtype == object and array.tolist() == [[b"a", b"hi"]]


def test_non_standard_json_numbers_are_accepted():
    assert np.isnan(tensors.loads(b'{"x": NaN}')["x"])
    assert tensors.loads(b'{"x": [Infinity, -Infinity]}')["x"] == [float("inf"), float("-inf")]


def test_bad_json_is_invalid_argument():
    with pytest.raises(ServingError, match="JSON Parse error"):
        tensors.loads(b"{nope")


# --- the fast path for numeric :predict bodies --------------------------------------------------------

def _general_inputs(body: bytes, sig: Signature) -> dict:
    """What the general path (orjson + from_json) makes of a body."""
    _, request = rest.parse_request(rest.ModelSpec("m"), body)
    build, _ = rest.predict_inputs(request)
    return build(sig)


def _regular_numbers(value) -> bool:
    """A non-empty nested list of numbers (no bools) with one length per depth."""
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return True
    return (all(isinstance(v, list) and len(v) == len(value[0]) for v in value)
            and all(_regular_numbers(v) for v in value) and len({np.shape(v) for v in value}) == 1)


numbers = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=False, allow_infinity=False, width=64))
nested_numbers = st.recursive(st.lists(numbers, min_size=1, max_size=4),
                              lambda inner: st.lists(inner, min_size=1, max_size=3), max_leaves=24)


@given(value=st.one_of(nested_numbers, st.lists(st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=2)),
                                                max_size=4), numbers),
       key=st.sampled_from(["instances", "inputs"]), name=st.sampled_from([None, "", "serving_default", "a b"]),
       spaces=st.booleans())
def test_the_numeric_fast_path_gives_the_general_paths_array_or_stands_aside(value, key, name, spaces):
    request = {key: value} if name is None else {"signature_name": name, key: value}
    body = json.dumps(request, separators=(", ", " : ") if spaces else (",", ":")).encode()
    sig = signature(x=FLOAT)
    fast = tensors.numeric_predict_body(body)
    assert (fast is not None) == _regular_numbers(value)  # else (ragged, not numbers...) the general path answers
    if fast is None:
        return
    assert fast[:2] == (key, name or "")
    np.testing.assert_array_equal(rest.numeric_inputs(fast[2], None, sig)["x"], _general_inputs(body, sig)["x"])


@pytest.mark.parametrize("body", [
    b'{"instances": [[1, 2], [3]]}', b'{"instances": [[1, 2], [3], [4, 5, 6]]}', b'{"instances": [1, [2]]}',
    b'{"instances": [1, true]}', b'{"instances": [1, null]}', b'{"instances": [NaN]}', b'{"instances": []}',
    b'{"instances": [[]]}', b'{"instances": 5}', b'{"instances": [1], "inputs": [2]}',
    b'{"instances": [1], "instances": [2]}', b'{"instances": [1], "other": 1}', b'[1]', b'{"instances": [1',
    b'{"instances": [1], "signature_name": 5}', b'{"\u0069nstances": [1]}', b'\xff',
    rb'{"instances": [1], "signature_name": "a\/b"}',
])
def test_the_numeric_fast_path_stands_aside_for_everything_else(body):
    assert tensors.numeric_predict_body(body) is None


def test_the_numeric_fast_path_reads_the_common_body():
    image = np.random.default_rng(0).random((2, 28, 28, 1)).astype(np.float32)
    body = tensors.dumps({"signature_name": "serving_default", "instances": image.tolist()})
    key, name, values = tensors.numeric_predict_body(body)
    assert (key, name, values.shape) == ("instances", "serving_default", (2, 28, 28, 1))
    np.testing.assert_array_equal(values.astype(np.float32), image)


def test_a_signature_the_fast_path_cannot_feed_gets_the_general_path():
    body = b'{"instances": [[1, 2], [3, 4]]}'
    _, _, values = tensors.numeric_predict_body(body)
    general = lambda: rest.parse_request(rest.ModelSpec("m"), body)  # noqa: E731
    assert rest.numeric_inputs(values, general, signature(x=INT64))["x"].dtype == np.int64
    with pytest.raises(ServingError, match="each element of 'instances' must be a JSON object"):
        rest.numeric_inputs(values, general, signature(a=FLOAT, b=FLOAT))


# --- tensors -> JSON ----------------------------------------------------------------------------------

def test_string_outputs_ending_in_bytes_are_base64_others_text():
    assert tensors.to_json_value(np.array([b"hi"], dtype=object), "image_bytes") == [{"b64": "aGk="}]
    assert tensors.to_json_value(np.array([b"hi"], dtype=object), "label") == ["hi"]


def test_non_finite_outputs_are_written_as_tf_serving_writes_them():
    array = np.array([np.nan, np.inf, 1.0], np.float32)
    assert tensors.dumps_checked({"y": array}, [array]) == b'{"y": [NaN, Infinity, 1.0]}'


def test_one_output_is_returned_without_its_name_several_by_name():
    one = {"y": np.array([1.0, 2.0], np.float32)}
    two = {"a": np.array([1, 2]), "b": np.array([[3], [4]])}
    assert tensors.dumps(rest.rows_output(one)) == b'{"predictions":[1.0,2.0]}'
    assert tensors.dumps(rest.rows_output(two)) == b'{"predictions":[{"a":1,"b":[3]},{"a":2,"b":[4]}]}'
    assert tensors.dumps(rest.columns_output(one)) == b'{"outputs":[1.0,2.0]}'
    assert tensors.dumps(rest.columns_output(two)) == b'{"outputs":{"a":[1,2],"b":[[3],[4]]}}'


def test_row_outputs_with_different_batch_sizes_are_invalid():
    with pytest.raises(ServingError, match="inconsistent batch size"):
        rest.rows_output({"a": np.array([1, 2]), "b": np.array([1])})


def signature(**inputs: int) -> Signature:
    from tensorflow.core.protobuf import meta_graph_pb2

    return Signature("s", "tensorflow/serving/predict",
                     {k: meta_graph_pb2.TensorInfo(name=f"{k}:0", dtype=d) for k, d in inputs.items()}, {})


def test_row_format_is_transposed_into_one_tensor_per_input():
    inputs = rest.rows_to_inputs([{"a": 1.0, "b": "x"}, {"a": 2.0, "b": "y"}], signature(a=FLOAT, b=STRING))
    assert inputs["a"].tolist() == [1.0, 2.0] and inputs["b"].tolist() == [b"x", b"y"]


def test_row_format_objects_must_all_have_the_same_keys():
    with pytest.raises(ServingError, match="Failed to process element: 1 of 'instances' list"):
        rest.rows_to_inputs([{"a": 1.0}, {"b": 2.0}], signature(a=FLOAT, b=FLOAT))


def test_plain_instances_need_a_single_input_signature():
    with pytest.raises(ServingError, match="each element of 'instances' must be a JSON object"):
        rest.rows_to_inputs([1.0], signature(a=FLOAT, b=FLOAT))


# --- gRPC tensors -------------------------------------------------------------------------------------

@given(hnp.arrays(st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.bool_]),
                  hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)))
def test_numeric_tensor_protos_round_trip(array):
    back = tensors.to_ndarray(tensors.to_tensor_proto(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_string_tensor_protos_round_trip():
    array = np.array([[b"a", b""], [b"\x00\xff", b"bc"]], dtype=object)
    assert tensors.to_ndarray(tensors.to_tensor_proto(array)).tolist() == array.tolist()


def test_grpc_codes_map_to_tf_servings_http_statuses():
    expected = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
                "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "ABORTED": 409,
                "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNKNOWN": 500, "INTERNAL": 500, "DATA_LOSS": 500,
                "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
    assert {code.name: HTTP_STATUS[code] for code in grpc.StatusCode if code.name in expected} == expected


# --- the client's conversions -------------------------------------------------------------------------

def test_client_sends_bytes_as_b64_and_reads_them_back():
    sent = client._to_json(np.array([b"\x00\xff"], dtype=object))
    assert sent == [{"b64": base64.b64encode(b"\x00\xff").decode()}]
    assert client._from_json(sent).tolist() == [b"\x00\xff"]


def test_client_builds_tf_examples_of_the_right_feature_kinds():
    example = client.example({"f": 1.5, "i": [1, 2], "s": "a", "b": b"\x00"})
    features = example.features.feature
    assert features["f"].float_list.value == [1.5] and features["i"].int64_list.value == [1, 2]
    assert features["s"].bytes_list.value == [b"a"] and features["b"].bytes_list.value == [b"\x00"]


# --- flags --------------------------------------------------------------------------------------------

def test_flags_have_tf_servings_defaults():
    args = flags.parse([])
    assert (args.port, args.rest_api_port, args.model_name, args.model_base_path) == (8500, 0, "default", "")
    assert (args.file_system_poll_wait_seconds, args.model_config_file_poll_wait_seconds) == (1, 0)
    assert (args.max_num_load_retries, args.load_retry_interval_micros) == (5, 60_000_000)
    assert args.enable_model_warmup is True and args.enable_batching is False and args.saved_model_tags == "serve"
    assert (args.rest_api_timeout_in_ms, args.num_request_iterations_for_warmup) == (30000, 0)
    assert args.rest_api_num_threads == args.grpc_max_threads == 4 * flags.CPUS
    assert args.allow_version_labels_for_unavailable_models is False


# The rest of tensorflow_model_server's flags, with TF Serving's defaults (main.cc / server.h); tfzoo's one
# deliberate difference: the gRPC health service is on by default (shared/SERVING.md).
TF_SERVING_DEFAULTS = {
    "enable_signature_method_name_check": False, "enable_grpc_healthcheck_service": True, "enable_profiler": True,
    "enable_per_model_batching_parameters": False, "enable_serialization_as_tensor_content": False,
    "num_load_threads": 0, "num_unload_threads": 0, "remove_unused_fields_from_bundle_metagraph": True,
    "prefer_tflite_model": False, "num_tflite_pools": flags.CPUS, "num_tflite_interpreters_per_pool": 1,
    "tensorflow_session_config_file": "", "thread_pool_factory_config_file": "", "mixed_precision": "",
    "xla_cpu_compilation_enabled": False, "xla_gpu_compilation_enabled": False, "skip_initialize_tpu": False,
    "use_alts_credentials": False,
}


def test_every_tf_serving_flag_exists_with_its_default():
    args = flags.parse([])
    assert {name: getattr(args, name) for name in TF_SERVING_DEFAULTS} == TF_SERVING_DEFAULTS


@pytest.mark.parametrize("argv", [
    ["--skip_initialize_tpu=true"],
    ["--xla_cpu_compilation_enabled=true", "--xla_gpu_compilation_enabled=true"],
    ["--remove_unused_fields_from_bundle_metagraph=false"],
    ["--thread_pool_factory_config_file=pools.txt"]
])
def test_flags_about_what_this_server_lacks_are_accepted_and_logged_with_the_reason(argv):
    args = flags.parse(argv)
    name = argv[0].removeprefix("--").split("=")[0]
    noted = [n for n in flags.notes(args) if f"--{name}=" in n]
    assert noted and "no effect here" in noted[0] and flags.ACCEPTED[name] in noted[0]


@pytest.mark.parametrize("argv, message", [
    (["--use_alts_credentials=true"], "ALTS"),
    (["--mixed_precision=bfloat16"], "would serve float32 where bfloat16 was asked"),
])
def test_flags_whose_behaviour_would_silently_be_missing_are_refused_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        flags.parse(argv)
    assert exit_.value.code != 0 and message in capsys.readouterr().err


@pytest.mark.parametrize("as_content", [False, True])
def test_predict_outputs_are_written_as_tf_serving_writes_them(as_content):
    """--enable_serialization_as_tensor_content: raw bytes; by default the typed repeated field (AsProtoField)."""
    from tensorflow import make_ndarray

    for array in (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64), np.array([True]),
                  np.array([1.5, -2], np.float16), np.array([1 + 2j], np.complex64), np.array([2**63], np.uint64)):
        proto = tensors.to_tensor_proto(array, as_content=as_content)
        assert bool(proto.tensor_content) is as_content
        np.testing.assert_array_equal(make_ndarray(proto), array)
        np.testing.assert_array_equal(tensors.to_ndarray(proto), array)
    assert tensors.to_tensor_proto(np.array([0.5], np.float32)).float_val == [0.5]


@pytest.mark.parametrize("argv, expected", [
    (["--enable_batching"], True), (["--enable_batching=true"], True), (["--enable_batching=false"], False),
    (["--enable_batching", "false"], False), (["--enable_batching=1"], True),
])
def test_boolean_flags_take_every_tf_serving_form(argv, expected):
    assert flags.parse(argv).enable_batching is expected


def test_value_flags_take_equals_or_a_space():
    args = flags.parse(["--port=9000", "--rest_api_port", "9001"])
    assert (args.port, args.rest_api_port) == (9000, 9001)


@pytest.mark.parametrize("argv, message", [
    (["--no_such_flag=1"], "unrecognized arguments"),
    (["--port_typo=1"], "unrecognized arguments"),
    (["--platform_config_file=x"], "not supported by tfzoo-model-server"),
    (["--per_process_gpu_memory_fraction=0.5"], "not supported by tfzoo-model-server"),
    (["--batching_parameters_file=b.txt"], "without --enable_batching"),
    (["--port=9000", "--rest_api_port=9000"], "cannot be the same"),
])
def test_unknown_and_unsupported_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        flags.parse(argv)
    assert exit_.value.code != 0 and message in capsys.readouterr().err


# --- config files and version policies ----------------------------------------------------------------

def model_config(policy: str = "") -> model_server_config_pb2.ModelConfig:
    return text_format.Parse(f'name: "m" base_path: "/m" {policy}', model_server_config_pb2.ModelConfig())


@pytest.mark.parametrize("policy, expected", [
    ("", [7]),
    ("model_version_policy { latest { num_versions: 2 } }", [3, 7]),
    ("model_version_policy { all {} }", [1, 3, 7]),
    ("model_version_policy { specific { versions: 1 versions: 9 } }", [1]),
])
def test_version_policies_pick_their_versions(policy, expected):
    assert sorted(apply_policy(model_config(policy), {1: "/m/1", 3: "/m/3", 7: "/m/7"})) == expected


def test_only_integer_subdirectories_are_versions(tmp_path):
    for name in ("1", "0042", "tmp", "1.5", "-3"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert list_versions(str(tmp_path)) == {1: str(tmp_path / "1"), 42: str(tmp_path / "0042")}
    assert list_versions(str(tmp_path / "missing")) is None


def test_unparseable_config_fails_with_tf_servings_message():
    with pytest.raises(config.ConfigError, match="^Error parsing text-format tensorflow.serving.ModelServerConfig: "):
        config.parse_text("improperly formatted file", config.ModelServerConfig)


def test_a_models_config_written_for_a_models_dir_reads_back(tmp_path):
    (tmp_path / "a" / "1").mkdir(parents=True)
    (tmp_path / "b" / "tmp").mkdir(parents=True)  # no integer version: not a model
    parsed = config.read_model_server_config(config.write_models_config(tmp_path))
    assert [(c.name, c.base_path) for c in parsed.model_config_list.config] == [("a", str(tmp_path / "a"))]


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


def test_mailbox_hands_a_burst_of_results_to_the_loop_with_one_wake_up():
    loop = asyncio.new_event_loop()
    mailbox = Mailbox(loop)
    futures = [loop.create_future() for _ in range(32)]
    wake_ups = []
    schedule = loop.call_soon_threadsafe
    loop.call_soon_threadsafe = lambda *args: (wake_ups.append(args), schedule(*args))[1]
    worker = threading.Thread(target=lambda: [mailbox.put(f, i) for i, f in enumerate(futures)])
    worker.start()
    worker.join()
    futures[5].cancel()  # a call whose client went away: skipped, the others still answered
    results = loop.run_until_complete(asyncio.gather(*futures, return_exceptions=True))
    assert len(wake_ups) == 1
    assert [r for i, r in enumerate(results) if i != 5] == [i for i in range(32) if i != 5]
    loop.close()
    mailbox.put(futures[0], "late")  # after the server's loop closed: dropped, no error


def test_serving_log_summarises_generated_lengths_batch_sizes_and_drift(tmp_path):
    """--tensorboard_logdir's summaries, read back with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorflow import make_ndarray

    from serving.server.tensorboard_log import ServingLog, predicted_classes, total_variation

    serving_log = ServingLog(tmp_path, interval_seconds=3600)
    serving_log.predicted("gpt", 1, str(tmp_path), {"prompt": np.array([b"a", b"b"], object)},
                          {"generated": np.array(["héllo".encode(), b"hi"], object)})
    serving_log.batch("gpt", 1, 3)
    serving_log.batch("gpt", 1, 5)
    serving_log.request("gpt", 1, "OK", 0.010)
    serving_log.request("gpt", 1, "INVALID_ARGUMENT", 0.002)
    serving_log.stop()
    events = EventAccumulator(str(tmp_path / "gpt" / "1"), size_guidance={"tensors": 0})
    events.Reload()
    value = lambda tag: make_ndarray(events.Tensors(tag)[0].tensor_proto)  # noqa: E731
    assert float(value("requests")) == 2 and float(value("errors/INVALID_ARGUMENT")) == 1
    assert float(value("batch_size/mean")) == 4
    lengths = value("outputs/generated_length")  # histogram buckets: (left, right, count)
    assert lengths[:, 2].sum() == 2 and lengths[0, 0] == 2 and lengths[-1, 1] == 5  # "hi", "héllo" in characters
    assert total_variation([1, 0], [0.5, 0.5]) == 0.5 and total_variation([0.2, 0.8], [0.2, 0.8]) == 0
    assert predicted_classes({"probabilities": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)}).tolist() == [1, 0]
    assert predicted_classes({"top_k_ids": np.array([[3, 1]], np.int32)}).tolist() == [3]
    assert predicted_classes({"y": np.zeros((2, 2), np.float32)}) is None

"""Starting and stopping: flags, config errors, empty or missing model directories, SIGTERM.

Flag and config-file mistakes are found before TensorFlow is imported, so those tests start no server.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from savedmodels import tf1_linear_model
from serving_helpers import NO_FIXTURES, TFSERVING_FIXTURES, get, post, wait_for, write_config
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.launch import ModelServerProcess
from serving.server import main as server_main

pytestmark = pytest.mark.integration


def run_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.server", *args], capture_output=True, text=True,
                          timeout=60)


def test_version_flag_prints_a_version_and_exits_zero():
    result = run_server("--version")
    assert result.returncode == 0 and result.stdout.strip() == server_main.VERSION


def test_the_console_script_is_the_same_server():
    script = Path(sys.executable).parent / "tfzoo-model-server"
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == server_main.VERSION


@pytest.mark.parametrize("args, message", [
    (["--no_such_flag=1"], "unrecognized arguments: --no_such_flag=1"),
    (["--platform_config_file=x.txt"], "--platform_config_file is not supported by tfzoo-model-server"),
    (["--port=notanumber"], "invalid int value"),
    (["--enable_batching=maybe"], "expected true or false"),
    (["--model_base_path=/m", "--batching_parameters_file=b.txt"], "without --enable_batching"),
    ([], "Both --model_config_file and --model_base_path are empty"),
])
def test_bad_command_lines_exit_non_zero_with_a_clear_message(args, message):
    result = run_server(*args)
    assert result.returncode != 0 and message in result.stderr


@pytest.mark.parametrize("flag, text, message", [
    ("--model_config_file", "improperly formatted file",
     "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1"),
    ("--monitoring_config_file", "prometheus_config { nope: 1 }",
     "Error parsing text-format tensorflow.serving.MonitoringConfig"),
    ("--ssl_config_file", "server_key: 7 7", "Error parsing text-format tensorflow.serving.SSLConfig"),
])
def test_unparseable_config_files_exit_non_zero_with_tf_servings_message(tmp_path, flag, text, message):
    (tmp_path / "config.txt").write_text(text)
    result = run_server("--model_base_path=/m", "--rest_api_port=1", f"{flag}={tmp_path / 'config.txt'}")
    assert result.returncode != 0 and message in result.stderr


def test_a_session_config_file_is_read_and_a_bad_one_is_a_startup_error(tmp_path, own_models):
    (tmp_path / "bad.txt").write_text("intra_op_parallelism_threads: many")
    result = run_server(f"--model_base_path={own_models / 'linear'}", "--port=0", "--rest_api_port=0",
                        f"--tensorflow_session_config_file={tmp_path / 'bad.txt'}")
    assert result.returncode != 0 and "Error parsing text-format tensorflow.ConfigProto" in result.stderr
    result = run_server("--model_base_path=/m", f"--tensorflow_session_config_file={tmp_path / 'missing.txt'}")
    assert result.returncode != 0 and "missing.txt" in result.stderr
    (tmp_path / "good.txt").write_text("intra_op_parallelism_threads: 1 inter_op_parallelism_threads: 1")
    with ModelServerProcess(embedded=True, model_name="linear", model_base_path=str(own_models / "linear"),
                            extra_args=[f"--tensorflow_session_config_file={tmp_path / 'good.txt'}",
                                        "--enable_serialization_as_tensor_content=true",
                                        "--enable_grpc_healthcheck_service=false"]) as server:
        import grpc
        import numpy as np
        import tensorflow as tf
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            with pytest.raises(grpc.RpcError) as error:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the health service is off, as asked
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "linear"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0], np.float32)))
            answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert answer.outputs["y"].tensor_content and not answer.outputs["y"].float_val
        np.testing.assert_allclose(tf.make_ndarray(answer.outputs["y"]), [2.5, 3.0])


@pytest.mark.skipif(not TFSERVING_FIXTURES.is_dir(), reason=NO_FIXTURES)
def test_with_the_method_name_check_classify_and_regress_refuse_predict_signatures():
    with ModelServerProcess(embedded=True, model_name="tf2",
                            model_base_path=str(TFSERVING_FIXTURES / "saved_model_half_plus_two_tf2_cpu"),
                            extra_args=["--enable_signature_method_name_check=true"]) as server:
        for verb, what in (("classify", "classification"), ("regress", "regression")):
            code, answer = post(server, f"tf2:{verb}", {"signature_name": f"{verb}_x_to_y", "examples": [{"x": 2.0}]})
            assert code == 400 and answer["error"] == (
                f"Expected {what} signature method_name to be tensorflow/serving/{verb}. "
                "Was: tensorflow/serving/predict")


def test_invalid_allowed_batch_sizes_are_a_startup_error(tmp_path):
    (tmp_path / "b.txt").write_text("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2")
    result = run_server("--model_base_path=/m", "--enable_batching", f"--batching_parameters_file={tmp_path / 'b.txt'}")
    assert result.returncode != 0 and "monotonically increasing" in result.stderr


def test_missing_or_empty_base_paths_are_logged_polled_and_served_once_a_version_appears(tmp_path):
    (tmp_path / "empty").mkdir()
    config = write_config(tmp_path / "models.config", {"empty": tmp_path / "empty", "missing": tmp_path / "missing"})
    with ModelServerProcess(embedded=True, extra_args=[f"--model_config_file={config}",
                                                       "--file_system_poll_wait_seconds=1"]) as server:
        log = server.log_text()
        assert f"No versions of servable empty found under base path {tmp_path / 'empty'}" in log
        assert f"base path {tmp_path / 'missing'} for servable missing does not exist" in log
        assert get(server, "/v1/models/empty") == (404, {"error": "Could not find any versions of model empty"})
        assert get(server, "/readyz") == (503, {"ready": False})
        tf1_linear_model(tmp_path / "staging")
        (tmp_path / "staging").rename(tmp_path / "missing")  # the base path appears, holding no version yet
        tf1_linear_model(tmp_path / "empty" / "3")
        wait_for(lambda: post(server, "empty:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]}),
                 what="version 3 of `empty` to be served")


def test_sigterm_drains_and_exits_zero(own_models):
    with ModelServerProcess(embedded=True, model_name="linear", model_base_path=str(own_models / "linear")) as server:
        assert post(server, "linear:predict", {"instances": [1.0]})[0] == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert "Shutting down: draining requests in flight" in server.log_text()
    assert "Server stopped" in server.log_text()


def test_the_initial_models_load_in_parallel_and_later_versions_with_num_load_threads(own_models, tmp_path):
    """TF Serving's ServerCore: the models of the initial config load on 4 x cores threads at once (every load
    starts before the first one finishes); later versions load on --num_load_threads (0: one at a time)."""
    models = {name: own_models / name for name in ("linear", "image", "keras_default", "two_versions")}
    path = write_config(tmp_path / "models.config", models)
    with ModelServerProcess(embedded=True, extra_args=[f"--model_config_file={path}", "--num_load_threads=2",
                                                       "--file_system_poll_wait_seconds=1"]) as server:
        for name in models:
            assert get(server, f"/v1/models/{name}")[0] == 200
        log = server.log_text()
        starts = [log.index(f"Loading servable version {{name: {name} version:") for name in models]
        first_done = log.index("Successfully loaded servable version")
        assert max(starts) < first_done, log
        # A model added by a reload loads on the --num_load_threads pool.
        tf1_linear_model(tmp_path / "added" / "1")
        config = model_server_config_pb2.ModelServerConfig()
        text_format.Parse(write_config(tmp_path / "models.config",
                                       {**models, "added": tmp_path / "added"}).read_text(), config)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=120)
        assert post(server, "added:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})


def test_thread_spinning_is_off_by_default_and_a_session_config_file_is_taken_as_written(tmp_path):
    from serving.server.core import Options, ServerCore

    config = ServerCore(Options()).model_session_config("cnn")
    assert config.experimental.disable_thread_spinning  # the request threads keep the cores
    assert [pool.global_name for pool in config.session_inter_op_thread_pool] == ["tfzoo-model:cnn"]
    (tmp_path / "spin.txt").write_text("inter_op_parallelism_threads: 2")
    core = ServerCore(Options(tensorflow_session_config_file=str(tmp_path / "spin.txt"),
                              tensorflow_intra_op_parallelism=1))
    config = core.model_session_config("cnn")
    assert not config.experimental.disable_thread_spinning  # TensorFlow's default, as the file asks
    assert (config.inter_op_parallelism_threads, config.intra_op_parallelism_threads) == (2, 1)
    assert config.session_inter_op_thread_pool[0].num_threads == 2

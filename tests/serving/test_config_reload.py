"""--model_config_file: several models, version policies, labels, polling the file, HandleReloadConfigRequest.

One server for the module; the tests run in order and each one changes its config.
"""
from __future__ import annotations

import grpc
import pytest
from savedmodels import tf1_linear_model
from serving_helpers import get, post, wait_for, write_config
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from serving import config
from serving.launch import ModelServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for version, intercept in ((1, 1.0), (2, 2.0), (3, 3.0)):
        tf1_linear_model(root / "three" / str(version), intercept=intercept)
    return root


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "models.config"
    write_config(path, {"latest2": models / "three", "all": models / "three", "specific": models / "three"}, {
        "latest2": "model_version_policy { latest { num_versions: 2 } }",
        "all": 'model_version_policy { all {} } version_labels { key: "stable" value: 1 }',
        "specific": "model_version_policy { specific { versions: 1 versions: 3 } }",
    })
    with ModelServerProcess(embedded=True, extra_args=[f"--model_config_file={path}",
                                                       "--model_config_file_poll_wait_seconds=1"]) as process:
        process.config_path = path
        yield process


def versions(server, name: str) -> dict[str, str]:
    code, body = get(server, f"/v1/models/{name}")
    return {s["version"]: s["state"] for s in body["model_version_status"]} if code == 200 else {}


def reload(server, text: str) -> model_management_pb2.ReloadConfigResponse:
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    new = config.parse_text(text, config.ModelServerConfig)
    return stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=new), timeout=120)


def test_version_policies_pick_latest_n_all_or_specific_versions(server):
    assert versions(server, "latest2") == {"3": "AVAILABLE", "2": "AVAILABLE"}
    assert versions(server, "all") == {"3": "AVAILABLE", "2": "AVAILABLE", "1": "AVAILABLE"}
    assert versions(server, "specific") == {"3": "AVAILABLE", "1": "AVAILABLE"}
    assert post(server, "latest2:predict", {"instances": [0.0]}) == (200, {"predictions": [3.0]})
    assert post(server, "all/labels/stable:predict", {"instances": [0.0]}) == (200, {"predictions": [1.0]})


def test_a_changed_config_file_is_polled_and_applied_exactly(server, models):
    write_config(server.config_path, {"renamed": models / "three"})
    wait_for(lambda: post(server, "renamed:predict", {"instances": [0.0]})[0] == 200, what="the new config")
    assert post(server, "latest2:predict", {"instances": [0.0]})[0] == 404  # absent models are unloaded
    assert get(server, "/v1/models")[1]["models"][0]["name"] == "renamed"


def test_reload_config_request_serves_exactly_the_new_config(server, models):
    response = reload(server, f'model_config_list {{ config {{ name: "again" base_path: "{models / "three"}" '
                              'model_version_policy { all {} } } }')
    assert response.status.error_code == 0
    assert post(server, "again/versions/2:predict", {"instances": [0.0]}) == (200, {"predictions": [2.0]})
    assert post(server, "renamed:predict", {"instances": [0.0]})[0] == 404


def test_a_model_removed_from_the_config_and_added_back_is_served_again(server, models):
    back = f'model_config_list {{ config {{ name: "again" base_path: "{models / "three"}" }} }}'
    reload(server, back)
    reload(server, f'model_config_list {{ config {{ name: "other" base_path: "{models / "three"}" }} }}')
    assert post(server, "again:predict", {"instances": [0.0]})[0] == 404
    assert reload(server, back).status.error_code == 0
    assert post(server, "again:predict", {"instances": [0.0]}) == (200, {"predictions": [3.0]})


def test_a_label_on_an_unavailable_version_is_refused(server, models):
    with pytest.raises(grpc.RpcError) as error:
        reload(server, f'model_config_list {{ config {{ name: "again" base_path: "{models / "three"}" '
                       'version_labels { key: "future" value: 7 } } }')
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Request to assign label to version 7 of model again" in error.value.details()


def test_a_config_naming_a_model_twice_is_invalid(server, models):
    twice = f'config {{ name: "x" base_path: "{models / "three"}" }}'
    with pytest.raises(grpc.RpcError) as error:
        reload(server, f"model_config_list {{ {twice} {twice} }}")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Illegal to list model x multiple times in config list" in error.value.details()

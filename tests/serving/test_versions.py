"""Version lifecycle on a running server: new versions are picked up, broken ones never replace good ones.

Runs on the session's `own_server` (1 s file-system polling), on its own model `rolling`.
"""
from __future__ import annotations

import shutil
import time

import pytest
from savedmodels import broken_export, tf1_linear_model
from serving_helpers import get, post, wait_for

pytestmark = pytest.mark.integration


def states(server) -> dict[str, str]:
    return {s["version"]: s["state"] for s in get(server, "/v1/models/rolling")[1]["model_version_status"]}


def test_a_new_version_dir_is_loaded_then_the_old_one_unloaded_with_no_failed_request(own_server, own_models):
    tf1_linear_model(own_models / "staging-2", intercept=3.0)
    (own_models / "staging-2").rename(own_models / "rolling" / "2")  # atomic, as an exporter does
    failures, answers = [], set()
    deadline = time.monotonic() + 60
    while states(own_server) != {"2": "AVAILABLE", "1": "END"} and time.monotonic() < deadline:
        code, body = post(own_server, "rolling:predict", {"instances": [1.0]})
        (answers.add(body["predictions"][0]) if code == 200 else failures.append(body))
    assert states(own_server) == {"2": "AVAILABLE", "1": "END"}
    assert failures == [] and answers <= {2.5, 3.5}  # every request answered, by version 1 or 2
    assert post(own_server, "rolling:predict", {"instances": [1.0]}) == (200, {"predictions": [3.5]})


def test_a_broken_new_version_is_reported_and_the_serving_version_stays(own_server, own_models):
    broken_export(own_models / "staging-9")
    (own_models / "staging-9").rename(own_models / "rolling" / "9")
    wait_for(lambda: states(own_server).get("9") == "END", what="version 9 to fail")
    status = next(s for s in get(own_server, "/v1/models/rolling")[1]["model_version_status"] if s["version"] == "9")
    assert status["status"]["error_code"] != "OK" and status["status"]["error_message"]
    assert states(own_server)["2"] == "AVAILABLE"
    assert post(own_server, "rolling:predict", {"instances": [1.0]}) == (200, {"predictions": [3.5]})
    shutil.rmtree(own_models / "rolling" / "9")

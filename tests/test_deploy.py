"""deploy/: what can be checked without a cluster or a container engine. The manifests parse; the names, ports
and paths of each agree with the others, with the Dockerfile and with the code; the training pod's shell
builds a TF_CONFIG the trainer accepts and a `tfzoo train` command line it parses; and tfzoo-model-server run
with the serving pods' own flags and configuration files answers their probes and the scraped metrics path."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import yaml

from pipelines import distributed, train
from serving.launch import ModelServerProcess, free_port
from serving.server import flags

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MOUNT = "/mnt/tfzoo"


def manifests(name: str) -> dict[str, dict]:
    """The documents of deploy/k8s/<name> by kind."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text())}


def container(deployment: dict) -> dict:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def test_the_image_keeps_runs_models_and_data_on_the_volume_the_pods_mount():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    env = dict(re.findall(r"(TFZOO_\w+_DIR)=(\S+)", dockerfile))
    assert env == {"TFZOO_RUNS_DIR": f"{MOUNT}/runs", "TFZOO_MODELS_DIR": f"{MOUNT}/models",
                   "TFZOO_DATA_DIR": f"{MOUNT}/tensorflow_datasets"}
    assert set(re.search(r"EXPOSE (.*)", dockerfile)[1].split()) == {"8500", "8501", "2222"}
    for package in re.findall(r"^COPY (\w+) \1$", dockerfile, re.M):
        assert (DEPLOY.parent / package / "__init__.py").is_file()
    claim = manifests("storage.yaml")["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # the workers and the servers at once


def test_the_training_pods_build_a_tf_config_and_a_command_line_the_trainer_accepts(tmp_path):
    docs = manifests("train-job.yaml")
    job, service = docs["Job"], docs["Service"]
    pod = job["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    env = {e["name"]: e["value"] for e in worker["env"]}
    workers = int(env["WORKERS"])
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == workers
    assert pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    port = service["spec"]["ports"][0]["port"]
    assert worker["ports"][0]["containerPort"] == port
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == manifests("storage.yaml")[
        "PersistentVolumeClaim"]["metadata"]["name"]
    assert worker["volumeMounts"][0]["mountPath"] == MOUNT

    # The pod's own script, with a `tfzoo` that records what it was given.
    (tmp_path / "tfzoo").write_text('#!/bin/bash\nprintf "%s" "$TF_CONFIG" > "$OUT/tf_config"\n'
                                    'printf "%s\\n" "$@" > "$OUT/argv"\n')
    (tmp_path / "tfzoo").chmod(0o755)
    assert worker["command"] == ["bash", "-c"]
    subprocess.run(["bash", "-c", worker["args"][0]], check=True, env={
        **env, "JOB_COMPLETION_INDEX": "1", "OUT": str(tmp_path), "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    config = distributed.cluster_config({"TF_CONFIG": (tmp_path / "tf_config").read_text()})
    name, subdomain = job["metadata"]["name"], service["metadata"]["name"]
    assert config["cluster"] == {"worker": [f"{name}-{i}.{subdomain}:{port}" for i in range(workers)]}
    assert config["task"] == {"type": "worker", "index": 1}
    argv = (tmp_path / "argv").read_text().split()
    assert argv[0] == "train"
    parser = train_parser()
    args = parser.parse_args(argv[1:])
    assert args.strategy == "multi_worker" and args.run_id == env["RUN_ID"]
    assert train.config_from_arguments(args).strategy == "multi_worker"


def test_both_serving_deployments_run_the_same_flags_and_answer_their_probes(tmp_path, trained_cnn):
    tfserving, tfzoo = manifests("serving-tfserving.yaml"), manifests("serving-tfzoo.yaml")
    official, ours = container(tfserving["Deployment"]), container(tfzoo["Deployment"])
    assert official["command"] == ["tensorflow_model_server"] and ours["command"] == ["tfzoo-model-server"]
    assert official["args"] == ours["args"]
    assert official["readinessProbe"] == ours["readinessProbe"] and official["livenessProbe"] == ours["livenessProbe"]
    parsed = flags.build_parser().parse_args(ours["args"])  # tfzoo-model-server knows every flag
    ports = {p["name"]: p["containerPort"] for p in ours["ports"]}
    assert (parsed.port, parsed.rest_api_port) == (ports["grpc"], ports["rest"])
    for deployment, service in ((d["Deployment"], d["Service"]) for d in (tfserving, tfzoo)):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"] == labels == deployment["spec"]["selector"]["matchLabels"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)

    # The ConfigMap's files at the pod's paths (here under tmp_path), the session's cnn on the "volume".
    config_map = manifests("serving-config.yaml")["ConfigMap"]
    mounts = {m["name"]: m["mountPath"] for m in ours["volumeMounts"]}
    volumes = {v["name"]: v for v in tfzoo["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]

    def here(path: str) -> str:
        return str(tmp_path) + path

    for file, text in config_map["data"].items():
        Path(here(f"{mounts['config']}/{file}")).parent.mkdir(parents=True, exist_ok=True)
        Path(here(f"{mounts['config']}/{file}")).write_text(text.replace(MOUNT, here(MOUNT)))
    base_path = re.search(r'base_path: "([^"]+)"', config_map["data"]["models.config"])[1]
    assert base_path.startswith(mounts["tfzoo"] + "/models/")
    shutil.copytree(trained_cnn.export_dir, here(base_path) + "/1")
    served = [arg.replace("/etc/tfzoo", here("/etc/tfzoo")) for arg in ours["args"]
              if not arg.startswith(("--port=", "--rest_api_port="))]  # the server process takes free ports
    annotations = tfzoo["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    with ModelServerProcess(embedded=True, extra_args=served, grpc_port=free_port()) as server:
        base = f"http://127.0.0.1:{server.rest_port}"
        for probe in ("readinessProbe", "livenessProbe"):
            with urllib.request.urlopen(base + ours[probe]["httpGet"]["path"], timeout=10) as reply:
                status = json.loads(reply.read())["model_version_status"][0]
                assert reply.status == 200 and status["state"] == "AVAILABLE"
        assert annotations["prometheus.io/port"] == str(ports["rest"])
        with urllib.request.urlopen(base + annotations["prometheus.io/path"], timeout=10) as reply:
            assert b":tensorflow:serving:request_count" in reply.read()


def test_the_kserve_predictor_reads_a_model_directory_of_the_shared_volume():
    service = manifests("kserve.yaml")["InferenceService"]
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "tensorflow"
    claim = manifests("storage.yaml")["PersistentVolumeClaim"]["metadata"]["name"]
    # pvc://<claim>/<path in the volume>: the volume's root is /mnt/tfzoo in the pods, models/<name> its versions.
    assert model["storageUri"] == f"pvc://{claim}/models/{service['metadata']['name']}"


def train_parser():
    import argparse

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser

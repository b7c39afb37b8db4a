"""`tfzoo`: the user command line. Each verb is also a `python -m` entry in its package.

  tfzoo list                         zoo models (name, task, dataset)
  tfzoo info cnn                     a model's spec: hyperparameters, recipe, inputs, labels
  tfzoo train cnn --epochs 2         train, evaluate on the test split, export to models/cnn/<version>
  tfzoo export cnn --run-id ID       export a run's checkpoint as the next version
  tfzoo evaluate cnn                 evaluate an exported version (what a server would serve) on a split
  tfzoo compress cnn --method tflite_int8   a smaller servable model, models/cnn_tflite_int8/<version>
  tfzoo serve                        serve models/ with tensorflow_model_server if installed, else tfzoo-model-server
  tfzoo predict cnn image.png        query a running server over REST or gRPC
  tfzoo play dqn --env CartPole-v1   play episodes with a served policy (every action from the server)
  tfzoo export-config                write models/models.config for every model in models/
  tfzoo tensorboard                  start TensorBoard on runs/
  tfzoo data prepare fashion_mnist   build a dataset into the data dir
  tfzoo data export shakespeare_char --to input.txt   write a text dataset's corpus as a plain text file
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from pipelines.errors import UserError, user_errors


def cmd_list(args: argparse.Namespace) -> int:
    """Print every zoo model with its task and default dataset."""
    import zoo

    for name in zoo.list_models(args.pattern):
        spec = zoo.get(name)
        print(f"{name:20s} {spec.task:30s} {spec.default_dataset:24s} {spec.description}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print a model's spec as JSON, with the recipe a run starts from (every key `--set` accepts)."""
    import zoo
    from pipelines import config

    spec = zoo.get(args.model)
    run = config.resolve(args.model)
    print(json.dumps({"name": spec.name, "task": spec.task, "description": spec.description,
                      "default_dataset": spec.default_dataset, "hparams": spec.hparams,
                      "recipe": dict(run.recipe), "input": spec.input_spec, "labels": list(spec.labels)}, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a zoo model (see `pipelines.train`)."""
    from pipelines import train

    return train.run(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate an exported SavedModel version on a dataset split."""
    from pipelines import evaluate

    return evaluate.run(args)


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run's checkpoint as the model's next version."""
    from pipelines import export

    path = export.export_checkpoint(args.model, args.run_id, epoch=args.epoch, runs_dir=args.runs_dir,
                                   models_dir=args.models_dir, data_dir=args.data_dir)
    print(f"exported: {path}")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    """Compress an exported version into a new servable model (see `pipelines.compress`)."""
    from pipelines import compress

    return compress.run(args)


def cmd_data(args: argparse.Namespace) -> int:
    """Build a dataset into the data dir and print its splits, or (`export`) write a text corpus to --to."""
    from pipelines import data

    if args.action == "export":
        if not args.to:
            raise UserError("data export needs --to FILE, e.g. `tfzoo data export shakespeare_char --to input.txt`")
        if not hasattr(data.OFFLINE_BUILDERS.get(args.dataset), "write_text"):
            raise UserError(f"{args.dataset} is not a text corpus; datasets with a plain-text export: "
                             + ", ".join(n for n, c in data.OFFLINE_BUILDERS.items() if hasattr(c, "write_text")))
        print(f"wrote {data.builder(args.dataset, args.data_dir).write_text(args.to)}")
        return 0
    b = data.builder(args.dataset, args.data_dir)
    print(f"{args.dataset}: {b.info.full_name} in {b.data_dir}")
    for name, split in b.info.splits.items():
        print(f"  {name}: {split.num_examples} examples")
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    """Run TensorBoard on the runs directory (foreground)."""
    from pipelines import paths

    logdir = str(paths.runs_dir(args.runs_dir))  # training runs, and serving logs in <runs>/serving (tfzoo serve)
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--port", str(args.port),
           "--host", args.host]
    print("running: tensorboard --logdir " + logdir, file=sys.stderr)
    return subprocess.call(cmd)


def cmd_export_config(args: argparse.Namespace) -> int:
    """Write a ModelServerConfig naming every model under the models dir."""
    from pipelines import paths

    path = write_models_config(paths.models_dir(args.models_dir).resolve(), args.output)
    print(f"wrote {path}")
    return 0


def write_models_config(models: Path, output: str | None = None) -> Path:
    """`serving.config.write_models_config`, its "no models here" a user error (serving never imports pipelines)."""
    from serving import config

    try:
        return config.write_models_config(models, output)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Write models.config, then exec the real tensorflow_model_server if on PATH, else tfzoo-model-server."""
    from pipelines import paths
    from serving import launch

    models = paths.models_dir(args.models_dir).resolve()
    path = write_models_config(models)
    server = None if args.embedded or args.tensorboard else launch.find_tensorflow_model_server()
    argv = [server or sys.executable, *([] if server else ["-m", "serving.server"]),
            f"--port={args.port}", f"--rest_api_port={args.rest_api_port}", f"--model_config_file={path}"]
    if args.tensorboard:  # tfzoo-model-server's own flag: the real tensorflow_model_server has no such logs
        logdir = paths.runs_dir(args.runs_dir) / "serving"
        argv.append(f"--tensorboard_logdir={logdir.resolve()}")
        print(f"serving logs: tensorboard --logdir {logdir.parent}   (or: tfzoo tensorboard: training runs "
              "and serving logs side by side)", file=sys.stderr)
    which = (f"TensorFlow Serving ({server})" if server else "tfzoo-model-server (embedded; "
             + ("--tensorboard is its own" if args.tensorboard else "tensorflow_model_server is not on PATH") + ")")
    print(f"serving {models} with {which}: gRPC :{args.port}, REST :{args.rest_api_port}", file=sys.stderr)
    os.execv(argv[0], argv)


def cmd_predict(args: argparse.Namespace) -> int:
    """Send encoded images to a served model and print its top classes."""
    import numpy as np

    from serving import client

    images = np.array([Path(f).read_bytes() for f in args.images], dtype=object)
    if args.protocol == "rest":
        c = client.RestClient(args.host, args.port or 8501)
    else:
        c = client.GrpcClient(args.host, args.port or 8500)
    outputs = c.predict(args.model, {"image_bytes": images}, signature_name=args.signature)
    for i, path in enumerate(args.images):
        row = {k: v[i].tolist() for k, v in outputs.items()}
        print(path, json.dumps(row, default=json_bytes))
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    """Play a gymnasium environment with a served policy (see `pipelines.play`)."""
    from pipelines import play

    return play.run(args)


def json_bytes(value) -> object:
    """Bytes in printed JSON: text as text, anything else (a PNG mask) as {"b64": ...}, TF Serving's REST way."""
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}


def build_parser() -> argparse.ArgumentParser:
    """The `tfzoo` argument parser with one sub-command per verb."""
    from pipelines import train

    parser = argparse.ArgumentParser(prog="tfzoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("list", help="list zoo models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'res*'")
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser("info", help="show a model's spec")
    p.add_argument("model")
    p.set_defaults(func=cmd_info)

    p = verbs.add_parser("train", help="train, evaluate and export a zoo model",
                         description=train.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_arguments(p)
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("export", help="export a run's checkpoint as the model's next version")
    p.add_argument("model")
    p.add_argument("--run-id", required=True, help="the run (a directory name under runs/<model>/)")
    p.add_argument("--epoch", type=int, help="checkpoint epoch (default: the last)")
    p.add_argument("--runs-dir")
    p.add_argument("--models-dir")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser("evaluate", help="evaluate an exported version on a dataset split")
    p.add_argument("model")
    p.add_argument("--version", type=int, help="exported version (default: the newest)")
    p.add_argument("--dataset", help="dataset (default: the one in the model card)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--models-dir")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_evaluate)

    from pipelines import compress

    p = verbs.add_parser("compress", help="quantize, prune or convert an exported version into a new servable "
                         "model", description=compress.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    compress.add_arguments(p)
    p.set_defaults(func=cmd_compress)

    p = verbs.add_parser("data", help="prepare a dataset into the data dir, or export a text corpus as a file")
    p.add_argument("action", choices=["prepare", "export"],
                   help="prepare: build it into the data dir; export: build it and write its text to --to")
    p.add_argument("dataset")
    p.add_argument("--data-dir")
    p.add_argument("--to", metavar="FILE", help="export: the plain text file to write (e.g. input.txt)")
    p.set_defaults(func=cmd_data)

    p = verbs.add_parser("tensorboard", help="start TensorBoard on the runs directory")
    p.add_argument("--runs-dir")
    p.add_argument("--port", type=int, default=6006)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_tensorboard)

    add_serving_verbs(verbs)
    return parser


def add_serving_verbs(verbs) -> None:
    """serve, predict, export-config: the verbs that use `serving` (never the other way round)."""
    p = verbs.add_parser("serve", help="serve every model in the models dir (real TF Serving if installed)")
    p.add_argument("--models-dir", help="models root (default $TFZOO_MODELS_DIR or ./models)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    p.add_argument("--rest-api-port", type=int, default=8501, help="REST port (default 8501)")
    p.add_argument("--embedded", action="store_true",
                   help="use tfzoo-model-server even if tensorflow_model_server is on PATH")
    p.add_argument("--tensorboard", action="store_true",
                   help="log what each model version serves to <runs-dir>/serving for TensorBoard (tfzoo-model-server "
                        "only: implies --embedded)")
    p.add_argument("--runs-dir", help="runs root, where --tensorboard writes serving/ (default $TFZOO_RUNS_DIR or "
                                      "./runs)")
    p.set_defaults(func=cmd_serve)

    p = verbs.add_parser("export-config", help="write <models-dir>/models.config for every model, start nothing")
    p.add_argument("--models-dir", help="models root (default $TFZOO_MODELS_DIR or ./models)")
    p.add_argument("--output", help="config path (default <models-dir>/models.config)")
    p.set_defaults(func=cmd_export_config)

    p = verbs.add_parser("predict", help="send images to a running server and print the top classes")
    p.add_argument("model", help="served model name")
    p.add_argument("images", nargs="+", help="PNG/JPEG files")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="server port (default 8501 for REST, 8500 for gRPC)")
    p.add_argument("--protocol", choices=["rest", "grpc"], default="rest")
    p.add_argument("--signature", default="encoded_image")
    p.set_defaults(func=cmd_predict)

    from pipelines import play

    p = verbs.add_parser("play", help="play an environment with a served policy, every action from the server",
                         description=play.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    play.add_arguments(p)
    p.set_defaults(func=cmd_play)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tfzoo` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    return user_errors(args.func, args, f"tfzoo {args.verb}")


if __name__ == "__main__":
    sys.exit(main())

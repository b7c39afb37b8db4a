"""The main job (`make demo`): train `cnn` on the real Fashion-MNIST, export it, serve it, query it.

Trains for a couple of epochs, exports models/cnn/<version>, starts tfzoo-model-server (or the real
tensorflow_model_server if it is on PATH) on free local ports, sends real test images over REST
(as base64 PNG to the `encoded_image` signature) and over gRPC (as float tensors to
`serving_default`), prints predicted vs true labels and the accuracy of those requests, and stops
the server.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import tensorflow as tf

from pipelines import data, paths, train
from pipelines.tasks.common import to_unit_range
from serving import client, launch
from zoo.labels import FASHION_MNIST_LABELS


def test_images(dataset: str, count: int, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` test images (uint8 [N, 28, 28, 1]) and labels."""
    ds = data.builder(dataset, data_dir).as_dataset(split=f"test[:{count}]", as_supervised=True)
    images, labels = zip(*((x.numpy(), int(y)) for x, y in ds), strict=False)
    return np.stack(images), np.array(labels)


def main(argv: list[str] | None = None) -> int:
    """Run the demo end to end."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--requests", type=int, default=32, help="test images to send over each protocol")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)

    print(f"== 1/3 training cnn on {args.dataset} for {args.epochs} epochs")
    try:
        result = train.train("cnn", dataset=args.dataset, recipe_overrides={"epochs": args.epochs},
                             data_dir=args.data_dir)
    except data.MissingDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"   test accuracy {result.metrics['test_accuracy']:.4f}; exported {result.export_dir}")

    images, labels = test_images(args.dataset, args.requests, args.data_dir)
    png = np.array([tf.io.encode_png(im).numpy() for im in images], dtype=object)
    base_path = result.export_dir.parent.resolve()

    print(f"== 2/3 serving {base_path}")
    with launch.ModelServerProcess(model_name="cnn", model_base_path=str(base_path)) as server:
        print(f"   {server.description}: gRPC 127.0.0.1:{server.grpc_port}, REST 127.0.0.1:{server.rest_port}")
        rest = client.RestClient("127.0.0.1", server.rest_port)
        grpc = client.GrpcClient("127.0.0.1", server.grpc_port)
        by_rest = rest.predict("cnn", {"image_bytes": png}, signature_name="encoded_image")["top_k_ids"][:, 0]
        by_grpc = np.argmax(grpc.predict("cnn", {"image": to_unit_range(images).numpy()})["probabilities"], -1)

        print("== 3/3 predictions (REST: PNG bytes -> encoded_image; gRPC: float tensor -> serving_default)")
        print(f"   {'#':>3}  {'true':12s} {'REST':12s} {'gRPC':12s}")
        for i, (t, r, g) in enumerate(zip(labels, by_rest, by_grpc, strict=False)):
            mark = "" if r == t else "  x"
            print(f"   {i:3d}  {FASHION_MNIST_LABELS[t]:12s} {FASHION_MNIST_LABELS[r]:12s} "
                  f"{FASHION_MNIST_LABELS[g]:12s}{mark}")
        print(f"   accuracy of these requests: REST {np.mean(by_rest == labels):.3f}, "
              f"gRPC {np.mean(by_grpc == labels):.3f} ({len(labels)} test images)")
        if not np.array_equal(by_rest, by_grpc):
            print("   note: REST and gRPC disagree on some images (PNG round trip vs float input)")
    print("server stopped.")
    print(f"inspect the run: tensorboard --logdir {paths.runs_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

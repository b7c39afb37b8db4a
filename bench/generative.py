"""Generative zoo benchmark: each model trained on the real Fashion-MNIST by the one trainer, measured on `test`.

Figures (all on the `test` split, 10,000 images; models trained on train[:90%], validated on train[90%:]):
  autoencoder  reconstruction MSE of noisy test inputs (the recipe's noise_stddev) through the exported
               `reconstruct` signature, beside the MSE of the noisy input itself (doing nothing)
  vae          negative ELBO in nats per image (one posterior sample per image; Bernoulli pixels)
  dcgan, cgan  FD-cnn of 10,000 samples from the exported `generate` signature against the test images,
               beside the FD-cnn of 10,000 real train images against them (the floor); for cgan, 1,000
               samples per class and the share the classifier assigns to the requested class (target >= 80%)
FD-cnn is the Fréchet distance on the penultimate features of the zoo's `cnn`, trained here first on the
same splits. CPU minutes are the process's CPU time (user + system, all threads; resource.getrusage)
for the training run (fit, test evaluation, export) and for the measurement.

    nice -n 15 .venv/bin/python bench/generative.py             # full run, writes bench/results/generative.md
    nice -n 15 .venv/bin/python bench/generative.py --quick     # synthetic data, 1 epoch: a smoke run
                                                                # (writes bench/.runs/generative/generative-quick.md)
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

import tensorflow as tf  # noqa: E402

from pipelines import data, fid, tasks, train  # noqa: E402
from pipelines import export as exporter  # noqa: E402
from pipelines.tasks import image_generation  # noqa: E402

EPOCHS = {"cnn": 3, "cgan": 5, "dcgan": 5, "vae": 5, "autoencoder": 3}  # a few CPU minutes each on 2 cores
ACCURACY_TARGET = 0.80
FLOOR_IMAGES = 10_000


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """CPU minutes and wall seconds of a block."""

    def __enter__(self):
        self.cpu, self.wall = cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu_minutes = (cpu_seconds() - self.cpu) / 60
        self.wall_seconds = time.perf_counter() - self.wall


def split_arrays(dataset: str, split: str, data_dir) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 in [0, 1], labels) of a whole split."""
    batches = list(data.load(dataset, split, batch_size=10_000, data_dir=data_dir, cache=False))
    images = np.concatenate([b[0].numpy() for b in batches]).astype(np.float32) / 255.0
    return images, np.concatenate([b[1].numpy() for b in batches])


def train_model(name: str, args, epochs: int) -> tuple[train.RunResult, Meter]:
    print(f"== training {name} ({epochs} epochs on {args.dataset})", flush=True)
    with Meter() as meter:
        run = train.train(name, dataset=args.dataset, recipe_overrides={"epochs": epochs}, runs_dir=args.runs_dir,
                          models_dir=args.models_dir, data_dir=args.data_dir, verbose=2)
    return run, meter


def measure_autoencoder(run: train.RunResult, args) -> dict:
    """MSE of reconstructions of noisy test images, and of the noisy images themselves, to the clean ones."""
    reconstruct = tf.saved_model.load(str(run.export_dir)).signatures["reconstruct"]
    noisy_test = data.load(args.dataset, tasks.TEST_SPLIT, batch_size=image_generation.MAX_COUNT, cache=False,
                           data_dir=args.data_dir,
                           preprocess=image_generation.ImageGeneration(run.config).preprocess(training=False))
    squared = {"reconstruction": 0.0, "noisy": 0.0, "clean_input": 0.0}
    pixels = 0
    for noisy, clean in noisy_test:
        squared["reconstruction"] += float(tf.reduce_sum((reconstruct(image=noisy)["images"] - clean) ** 2))
        squared["noisy"] += float(tf.reduce_sum((noisy - clean) ** 2))
        squared["clean_input"] += float(tf.reduce_sum((reconstruct(image=clean)["images"] - clean) ** 2))
        pixels += int(tf.size(clean))
    return {"noise_stddev": run.config.recipe["noise_stddev"], **{f"mse_{k}": v / pixels for k, v in squared.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="synthetic data, 1 epoch each (a smoke run)")
    parser.add_argument("--models", default=",".join(m for m in EPOCHS if m != "cnn"),
                        help="comma-separated subset, measured in this order")
    parser.add_argument("--epochs", action="append", default=[], metavar="MODEL=N",
                        help=f"override a model's epochs (defaults {EPOCHS})")
    parser.add_argument("--classifier", help="reuse this cnn run directory for FD-cnn instead of training one")
    parser.add_argument("--output", default=str(BENCH / "results" / "generative.md"))
    args = parser.parse_args(argv)
    args.dataset = "synthetic_fashion_mnist" if args.quick else "fashion_mnist"
    args.runs_dir, args.models_dir = BENCH / ".runs" / "generative", BENCH / ".models" / "generative"
    args.data_dir = None
    epochs = {**EPOCHS, **{k: int(v) for k, v in (e.split("=") for e in args.epochs)}}
    if args.quick:
        epochs = dict.fromkeys(epochs, 1)
        args.output = str(args.runs_dir / "generative-quick.md")  # a smoke run's figures are not results

    rows, notes = [], []
    if args.classifier:
        classifier_run, cnn_meter = Path(args.classifier), None
    else:
        run, cnn_meter = train_model("cnn", args, epochs["cnn"])
        classifier_run = run.run_dir
        notes.append(f"classifier trained here: `cnn`, {epochs['cnn']} epochs, {cnn_meter.cpu_minutes:.2f} CPU min")
    os.environ[fid.CLASSIFIER_ENV] = str(classifier_run)  # FD-cnn per epoch in TensorBoard, and at the end
    classifier = fid.Classifier(classifier_run)

    with Meter() as floor_meter:
        train_images, _ = split_arrays(args.dataset, "train", args.data_dir)
        test_images, test_labels = split_arrays(args.dataset, tasks.TEST_SPLIT, args.data_dir)
        picked = np.random.default_rng(0).permutation(len(train_images))[:min(FLOOR_IMAGES, len(test_images))]
        test_features, test_predicted = classifier(test_images)
        floor = fid.frechet_distance(classifier(train_images[picked])[0], test_features)
    classifier_accuracy = float(np.mean(test_predicted == test_labels))
    notes.append(f"classifier run: `{classifier_run.name}`, test accuracy {classifier_accuracy:.4f}")
    print(f"FD-cnn floor (train vs test): {floor:.3f}; classifier test accuracy {classifier_accuracy:.4f}", flush=True)

    for name in args.models.split(","):
        run, train_meter = train_model(name, args, epochs[name])
        with Meter() as measure:
            if name == "autoencoder":
                m = measure_autoencoder(run, args)
                figures = [(f"test MSE, noisy input (noise σ={m['noise_stddev']}) → reconstruction",
                            f"{m['mse_reconstruction']:.5f}", f"noisy input itself: {m['mse_noisy']:.5f}; "
                            f"clean input → reconstruction: {m['mse_clean_input']:.5f}", "")]
            elif name == "vae":
                metrics = run.metrics
                figures = [("test negative ELBO, nats/image", f"{metrics['test_loss']:.2f}",
                            f"reconstruction {metrics['test_reconstruction_loss']:.2f} "
                            f"+ KL {metrics['test_kl_loss']:.2f}", "")]
            else:
                loaded = tf.saved_model.load(str(run.export_dir))
                test = data.load(args.dataset, tasks.TEST_SPLIT, batch_size=1000, data_dir=args.data_dir, cache=False)
                m = image_generation.ImageGeneration.evaluate_export(loaded, test, exporter.read_model_card(
                    run.export_dir))
                figures = [(f"FD-cnn, {m['examples']:,} samples vs test", f"{m['fd_cnn']:.3f}",
                            f"floor (real train vs test): {floor:.3f}", "")]
                if "class_accuracy" in m:
                    met = "MET" if m["class_accuracy"] >= ACCURACY_TARGET else "NOT MET"
                    figures.append(("share classified as the requested class", f"{m['class_accuracy']:.4f}",
                                    f"classifier's test accuracy on real images: {classifier_accuracy:.4f}",
                                    f"≥ {ACCURACY_TARGET:.0%}: {met}"))
        for figure, value, reference, target in figures:
            rows.append((name, figure, value, reference, target, epochs[name], train_meter.cpu_minutes,
                         measure.cpu_minutes, train_meter.wall_seconds))
        print(rows[-len(figures):], flush=True)
        write_report(Path(args.output), argv, args, rows, notes, floor, floor_meter)  # after each model
    print(f"wrote {args.output}")
    return 0


def write_report(path: Path, argv, args, rows, notes, floor, floor_meter) -> None:
    command = "nice -n 15 .venv/bin/python bench/generative.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Generative zoo: quality on Fashion-MNIST",
        "",
        f"Command: `{command.strip()}` (from the repository root). Data: `{args.dataset}`; training on "
        f"`{tasks.TRAIN_SPLIT}`, validation on `{tasks.VALIDATION_SPLIT}`, figures on `{tasks.TEST_SPLIT}` "
        "(10,000 images). Each model: `pipelines.train.train` with its zoo recipe and the epochs below, "
        "exported, and measured through the exported SavedModel's signatures (VAE: the trainer's test evaluation).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other work "
        f"(run under `nice -n 15`); TensorFlow {tf.__version__}. CPU minutes: process user+system time "
        "(resource.getrusage), all threads.",
        "",
        "| model | figure | value | reference | target | epochs | train CPU min | measure CPU min | train wall s |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {n} | {f} | {v} | {r} | {t} | {e} | {tc:.2f} | {mc:.2f} | {w:.0f} |"
          for n, f, v, r, t, e, tc, mc, w in rows),
        "",
        f"FD-cnn floor: {floor:.3f} between {FLOOR_IMAGES:,} random train images and the test images "
        f"({floor_meter.cpu_minutes:.2f} CPU min including reading both splits).",
        *(f"- {note}" for note in notes),
        "",
        "FD-cnn uses the penultimate (64-unit) features of the classifier above (`pipelines/fid.py`); values are "
        "comparable only with the same classifier. The VAE's likelihood treats grey levels as Bernoulli means "
        "(the common convention for Fashion-MNIST), so its nats are not those of a discrete 256-level model.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

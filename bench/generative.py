"""Generative zoo benchmark: each model trained on the real Fashion-MNIST by the one trainer, measured on `test`.

Figures (all on the `test` split, 10,000 images; models trained on train[:90%], validated on train[90%:]):
  autoencoder  reconstruction MSE of noisy test inputs (the recipe's noise_stddev) through the exported
               `reconstruct` signature, beside the MSE of the noisy input itself (doing nothing)
  vae          negative ELBO in nats per image (one posterior sample per image; Bernoulli pixels)
  dcgan, cgan  FD-cnn of 10,000 samples from the exported `generate` signature against the test images,
               beside the FD-cnn of 10,000 real train images against them (the floor); for cgan, 1,000
               samples per class and the share the classifier assigns to the requested class (target >= 80%)
  cgan, judged by classifiers it never trained against (bench/cas.py): the share of the same 10,000
               samples a zoo `resnet` trained here after the cgan, on the real train split only, assigns to
               the requested class; and the classification accuracy score: the zoo `cnn` trained only on
               54,000 cgan samples (the train split's class counts), tested on the real test split, beside the
               same cnn trained on the 54,000 real train images
FD-cnn is the Fréchet distance on the penultimate features of the zoo's `cnn`, trained here first on the
same splits. CPU minutes are the process's CPU time (user + system, all threads; resource.getrusage)
for the training run (fit, test evaluation, export) and for the measurement.

Every model's figures are recorded in bench/results/generative.json (kept across invocations, one entry per
model, the latest run wins, each with its command and commit); bench/results/generative.md is rendered from
all of them, so a run of some models leaves the others' figures in the report.

    nice -n 15 .venv/bin/python bench/generative.py               # every model, rewrites the report
    nice -n 15 .venv/bin/python bench/generative.py --models cgan # cnn, cgan and its judges only
    nice -n 15 .venv/bin/python bench/generative.py --report      # rewrite the report from the record
    nice -n 15 .venv/bin/python bench/generative.py --quick       # synthetic data, 1 epoch: a smoke run
                                                                  # (writes bench/.runs/generative/generative-quick.md)
"""
from __future__ import annotations

import argparse
import json
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

import cas  # noqa: E402
import tensorflow as tf  # noqa: E402
from provenance import git_commit  # noqa: E402

from pipelines import data, fid, tasks, train  # noqa: E402
from pipelines import export as exporter  # noqa: E402
from pipelines.tasks import image_generation  # noqa: E402
from pipelines.tasks.common import to_unit_range  # noqa: E402

MODELS = ("cgan", "dcgan", "vae", "autoencoder")  # measured, and reported, in this order
JUDGE = "resnet"  # cgan's independent judge: the zoo's resnet as registered (depth 20), on real images only
# A few CPU minutes each on 2 cores. The judge's epochs were fixed by that budget before it judged any sample.
EPOCHS = {"cnn": 3, JUDGE: 4, "cgan": 5, "dcgan": 5, "vae": 5, "autoencoder": 3}
ACCURACY_TARGET = 0.80
FLOOR_IMAGES = 10_000
JUDGED = "cgan_judges"  # the record's entry of cgan's judges and classification accuracy score


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
    """(uint8 images, labels) of a whole split."""
    batches = list(data.load(dataset, split, batch_size=10_000, data_dir=data_dir, cache=False))
    return np.concatenate([b[0].numpy() for b in batches]), np.concatenate([b[1].numpy() for b in batches])


def unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1], the zoo's one input scaling."""
    return np.asarray(to_unit_range(images))


def relative(path: str | os.PathLike) -> str:
    """`path` relative to the repository root (where the bench keeps its runs), else as it is."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def train_model(name: str, args, epochs: int, export: bool = True) -> tuple[train.RunResult, Meter]:
    print(f"== training {name} ({epochs} epochs on {args.dataset})", flush=True)
    with Meter() as meter:
        run = train.train(name, dataset=args.dataset, recipe_overrides={"epochs": epochs}, runs_dir=args.runs_dir,
                          models_dir=args.models_dir, data_dir=args.data_dir, export=export, verbose=2)
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


def measure(name: str, run: train.RunResult, args, floor: float, classifier_accuracy: float) -> list[list[str]]:
    """The model's figures on the test split: [figure, value, reference, target] rows."""
    if name == "autoencoder":
        m = measure_autoencoder(run, args)
        return [[f"test MSE, noisy input (noise σ={m['noise_stddev']}) → reconstruction",
                 f"{m['mse_reconstruction']:.5f}", f"noisy input itself: {m['mse_noisy']:.5f}; "
                 f"clean input → reconstruction: {m['mse_clean_input']:.5f}", ""]]
    if name == "vae":
        metrics = run.metrics
        return [["test negative ELBO, nats/image", f"{metrics['test_loss']:.2f}",
                 f"reconstruction {metrics['test_reconstruction_loss']:.2f} + KL {metrics['test_kl_loss']:.2f}", ""]]
    loaded = tf.saved_model.load(str(run.export_dir))
    test = data.load(args.dataset, tasks.TEST_SPLIT, batch_size=1000, data_dir=args.data_dir, cache=False)
    m = image_generation.ImageGeneration.evaluate_export(loaded, test, exporter.read_model_card(run.export_dir))
    figures = [[f"FD-cnn, {m['examples']:,} samples vs test", f"{m['fd_cnn']:.3f}",
                f"floor (real train vs test): {floor:.3f}", ""]]
    if "class_accuracy" in m:
        met = "MET" if m["class_accuracy"] >= ACCURACY_TARGET else "NOT MET"
        figures.append(["share classified as the requested class (judge: the FD cnn, which cgan's recipe was "
                        "tuned against; an independent judge below)", f"{m['class_accuracy']:.4f}",
                        f"the cnn's test accuracy on real images: {classifier_accuracy:.4f}",
                        f"≥ {ACCURACY_TARGET:.0%}: {met}"])
    return figures


def judge_cgan(cgan: train.RunResult, args, epochs: dict[str, int], fd_classifier: fid.Classifier,
               test_images: np.ndarray, test_labels: np.ndarray) -> dict:
    """cgan's class consistency by an independent judge (and by the FD cnn and its own auxiliary head, on the
    same samples) and its classification accuracy score; choices on validation only, the test split last."""
    card = exporter.read_model_card(cgan.export_dir)
    sampler = tf.saved_model.load(str(cgan.export_dir)).signatures["generate"]
    num_classes = len(cgan.config.labels)

    # The judge is trained now, after the cgan was trained and exported: it cannot have shaped it.
    judge_run, judge_meter = train_model(JUDGE, args, epochs[JUDGE], export=False)
    judge = fid.Classifier(judge_run.run_dir)
    if judge.sha256 == card["fd_classifier"]["sha256"]:
        raise RuntimeError("the independent judge is the cgan's FD classifier")

    print(f"== classification accuracy score: the {cas.CAS_CLASSIFIER} on cgan samples and on real images",
          flush=True)
    with Meter() as generate_meter:
        real_images, real_labels = split_arrays(args.dataset, tasks.TRAIN_SPLIT, args.data_dir)
        generated = cas.as_pixels(cas.generate(sampler, real_labels, cas.FIRST_CAS_SEED))
    pair = {}
    for trained_on, images in (("generated", generated), ("real", real_images)):
        with Meter() as fit_meter:
            model, val_accuracy = cas.fit_classifier(images, real_labels, args.dataset, epochs[cas.CAS_CLASSIFIER],
                                                     args.data_dir)
        pair[trained_on] = (model, {"images": len(images), "val_accuracy": val_accuracy,
                                    "train_cpu_minutes": fit_meter.cpu_minutes})

    with Meter() as measure_meter:  # the test split, read by nothing above
        samples = cas.generate(sampler, test_labels, 0, seeds_per_class=0)  # evaluate_export's samples
        consistency = {
            "judge": cas.shares(cas.predicted_classes(judge, samples), test_labels, num_classes),
            "fd_classifier": cas.shares(cas.predicted_classes(fd_classifier, samples), test_labels, num_classes),
            "auxiliary_head": cas.shares(cas.auxiliary_head_classes(cgan.run_dir, samples, test_labels),
                                         test_labels, num_classes),
        }
        test = unit_range(test_images)
        judge_accuracy, judge_recall = cas.shares(cas.predicted_classes(judge, test), test_labels, num_classes)
        fd_recall = cas.shares(cas.predicted_classes(fd_classifier, test), test_labels, num_classes)[1]
        for model, record in pair.values():
            record["test_accuracy"], record["test_per_class"] = cas.shares(cas.predicted_classes(model, test),
                                                                           test_labels, num_classes)
    return {
        "cgan": {"run": relative(cgan.run_dir), "export": relative(cgan.export_dir)},
        "judge": {"model": JUDGE, "hparams": dict(judge_run.config.hparams), "epochs": epochs[JUDGE],
                  "run": relative(judge_run.run_dir), "checkpoint": relative(judge.checkpoint), "sha256": judge.sha256,
                  "val_accuracy": judge_run.metrics["val_accuracy"], "test_accuracy": judge_accuracy,
                  "test_per_class": judge_recall, "train_cpu_minutes": judge_meter.cpu_minutes},
        "fd_classifier": {**card["fd_classifier"], "checkpoint": relative(card["fd_classifier"]["checkpoint"]),
                          "test_per_class": fd_recall},
        "samples": len(samples),
        "consistency": {name: {"share": share, "per_class": per_class}
                        for name, (share, per_class) in consistency.items()},
        "cas": {"classifier": cas.CAS_CLASSIFIER, "epochs": epochs[cas.CAS_CLASSIFIER],
                "first_seed": cas.FIRST_CAS_SEED, "generate_cpu_minutes": generate_meter.cpu_minutes,
                **{trained_on: record for trained_on, (_, record) in pair.items()}},
        "labels": list(cgan.config.labels),
        "measure_cpu_minutes": measure_meter.cpu_minutes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="synthetic data, 1 epoch each (a smoke run)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset, measured in this order")
    parser.add_argument("--epochs", action="append", default=[], metavar="MODEL=N",
                        help=f"override a model's epochs (defaults {EPOCHS})")
    parser.add_argument("--classifier", help="reuse this cnn run directory for FD-cnn instead of training one")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the record")
    parser.add_argument("--output", default=str(BENCH / "results" / "generative.md"))
    args = parser.parse_args(argv)
    args.dataset = "synthetic_fashion_mnist" if args.quick else "fashion_mnist"
    args.runs_dir, args.models_dir = BENCH / ".runs" / "generative", BENCH / ".models" / "generative"
    args.data_dir = None
    epochs = {**EPOCHS, **{k: int(v) for k, v in (e.split("=") for e in args.epochs)}}
    if args.quick:
        epochs = dict.fromkeys(epochs, 1)
        args.output = str(args.runs_dir / "generative-quick.md")  # a smoke run's figures are not results
    output = Path(args.output)
    record_path = output.with_suffix(".json")
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if args.report:
        output.write_text(report(records))
        print(f"wrote {output}")
        return 0

    command = (f"nice -n {os.nice(0)} " if os.nice(0) else "") + ".venv/bin/python bench/generative.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    run_info = {"command": command.strip(), "commit": git_commit(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dataset": args.dataset,
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "tensorflow": tf.__version__}
    if args.classifier:
        classifier_run = Path(args.classifier)
    else:
        run, cnn_meter = train_model("cnn", args, epochs["cnn"])
        classifier_run = run.run_dir
        run_info["classifier_trained"] = {"epochs": epochs["cnn"], "cpu_minutes": cnn_meter.cpu_minutes}
    os.environ[fid.CLASSIFIER_ENV] = str(classifier_run)  # FD-cnn per epoch in TensorBoard, and at the end
    classifier = fid.Classifier(classifier_run)

    with Meter() as floor_meter:
        train_images, _ = split_arrays(args.dataset, "train", args.data_dir)
        test_images, test_labels = split_arrays(args.dataset, tasks.TEST_SPLIT, args.data_dir)
        picked = np.random.default_rng(0).permutation(len(train_images))[:min(FLOOR_IMAGES, len(test_images))]
        test_features, test_predicted = classifier(unit_range(test_images))
        floor = fid.frechet_distance(classifier(unit_range(train_images[picked]))[0], test_features)
    classifier_accuracy = float(np.mean(test_predicted == test_labels))
    run_info.update(classifier={"run": classifier_run.name, "checkpoint": relative(classifier.checkpoint),
                                "sha256": classifier.sha256, "test_accuracy": classifier_accuracy},
                    floor=floor, floor_cpu_minutes=floor_meter.cpu_minutes)
    print(f"FD-cnn floor (train vs test): {floor:.3f}; classifier test accuracy {classifier_accuracy:.4f}", flush=True)

    for name in args.models.split(","):
        run, train_meter = train_model(name, args, epochs[name])
        with Meter() as measure_meter:
            figures = measure(name, run, args, floor, classifier_accuracy)
        records[name] = {"run": run_info, "epochs": epochs[name], "train_cpu_minutes": train_meter.cpu_minutes,
                         "measure_cpu_minutes": measure_meter.cpu_minutes,
                         "train_wall_seconds": train_meter.wall_seconds, "figures": figures}
        print(figures, flush=True)
        if name == "cgan":
            records[JUDGED] = {"run": run_info, **judge_cgan(run, args, epochs, classifier, test_images, test_labels)}
            print(json.dumps(records[JUDGED], indent=2), flush=True)
        run_info["load_average_1m"] = os.getloadavg()[0]  # how busy the machine was (other work inflates CPU min)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(records, indent=2, ensure_ascii=False))
        output.write_text(report(records))  # after each model
    print(f"wrote {output}")
    return 0


def report(records: dict) -> str:
    """The markdown report of every recorded model (and cgan's judges), each row naming the run it comes from."""
    models = [name for name in MODELS if name in records]
    runs = list({json.dumps(records[name]["run"], sort_keys=True): records[name]["run"]
                 for name in [*models, *([JUDGED] if JUDGED in records else [])]}.values())
    run_number = {json.dumps(run, sort_keys=True): i + 1 for i, run in enumerate(runs)}

    def number(name: str) -> int:
        return run_number[json.dumps(records[name]["run"], sort_keys=True)]

    lines = [
        "# Generative zoo: quality on Fashion-MNIST",
        "",
        f"Data: training on `{tasks.TRAIN_SPLIT}`, validation on `{tasks.VALIDATION_SPLIT}`, figures on "
        f"`{tasks.TEST_SPLIT}` (10,000 images). Each model: `pipelines.train.train` with its zoo recipe and the "
        "epochs below, exported, and measured through the exported SavedModel's signatures (VAE: the trainer's test "
        "evaluation). CPU minutes: process user+system time (resource.getrusage), all threads. Each row names the "
        "run it comes from (`bench/results/generative.json` keeps every model's latest run), listed below the table.",
        "",
        "| model | figure | value | reference | target | epochs | train CPU min | measure CPU min | train wall s "
        "| run |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {name} | {' | '.join(figure)} | {r['epochs']} | {r['train_cpu_minutes']:.2f} | "
          f"{r['measure_cpu_minutes']:.2f} | {r['train_wall_seconds']:.0f} | {number(name)} |"
          for name in models for r in [records[name]] for figure in r["figures"]),
        "",
        "Runs:",
        *(f"{i}. {run_line(run)}" for i, run in enumerate(runs, 1)),
        "",
        "FD-cnn uses the penultimate (64-unit) features of the run's FD classifier (`pipelines/fid.py`); values are "
        "comparable only with the same classifier. The VAE's likelihood treats grey levels as Bernoulli means "
        "(the common convention for Fashion-MNIST), so its nats are not those of a discrete 256-level model.",
        "",
    ]
    if JUDGED in records:
        lines += judges_report(records[JUDGED], number(JUDGED))
    return "\n".join(lines)


def run_line(run: dict) -> str:
    """One run: command, commit, date, machine, and the FD classifier with its test accuracy and FD-cnn floor."""
    classifier = run["classifier"]
    trained = run.get("classifier_trained")
    how = (f"trained by this run, {trained['epochs']} epochs, {trained['cpu_minutes']:.2f} CPU min" if trained
           else "reused")
    conditions = [
        *([f"run under `{' '.join(run['command'].split()[:3])}`"] if run["command"].startswith("nice") else []),
        *([f"load average {run['load_average_1m']:.1f} at its last write"] if "load_average_1m" in run else [])]
    return (f"`{run['command']}` · commit {run['commit']} · {run['date']} · data `{run['dataset']}` · "
            f"{run['machine']}{' (' + ', '.join(conditions) + ')' if conditions else ''}, TensorFlow "
            f"{run['tensorflow']} · FD classifier: `cnn` run `{classifier['run']}` ({how}), test accuracy "
            f"{classifier['test_accuracy']:.4f} · FD-cnn floor "
            f"{run['floor']:.3f} between {FLOOR_IMAGES:,} random train images and the test images "
            f"({run['floor_cpu_minutes']:.2f} CPU min, reading both splits included)"
            + "".join(f". {note}" for note in run.get("notes", [])))


def judges_report(j: dict, run_number: int) -> list[str]:
    """The section of cgan's class consistency by three judges and its classification accuracy score."""
    judge, fd, consistency, pair = j["judge"], j["fd_classifier"], j["consistency"], j["cas"]
    generated, real = pair["generated"], pair["real"]
    cpu = (judge["train_cpu_minutes"] + pair["generate_cpu_minutes"] + generated["train_cpu_minutes"]
           + real["train_cpu_minutes"] + j["measure_cpu_minutes"])
    judges = [
        ("judge", f"independent: zoo `{judge['model']}`, depth {judge['hparams']['depth']} (run "
                  f"`{Path(judge['run']).name}`, checkpoint `{Path(judge['checkpoint']).name}`, SHA-256 "
                  f"{judge['sha256'][:12]})", "no", "no", f"{judge['test_accuracy']:.4f}"),
        ("fd_classifier", f"the FD classifier, zoo `cnn` (run `{Path(fd['checkpoint']).parent.parent.name}`, "
                          f"checkpoint `{Path(fd['checkpoint']).name}`, SHA-256 {fd['sha256'][:12]})", "no",
         "yes: its share (73%) is why the auxiliary head was added", f"{j['run']['classifier']['test_accuracy']:.4f}"),
        ("auxiliary_head", "cgan's own auxiliary classifier head (its discriminator's class logits)", "yes",
         "it is the loss", "—"),
    ]
    per_class = zip(j["labels"], consistency["judge"]["per_class"], judge["test_per_class"],
                    consistency["fd_classifier"]["per_class"], fd["test_per_class"],
                    consistency["auxiliary_head"]["per_class"], generated["test_per_class"], real["test_per_class"],
                    strict=True)
    return [
        "## cgan judged by classifiers it never trained against",
        "",
        f"Run {run_number} above, after its cgan row (the same cgan export, `{Path(j['cgan']['export']).parent.name}/"
        f"{Path(j['cgan']['export']).name}`, run `{Path(j['cgan']['run']).name}`); `bench/cas.py`. Every "
        f"classifier below trained on `{tasks.TRAIN_SPLIT}` (real, or generated images as many) and was validated on "
        f"`{tasks.VALIDATION_SPLIT}`; no choice was made on `{tasks.TEST_SPLIT}`: these figures read it after all "
        "four classifiers were trained. "
        f"{cpu:.2f} CPU minutes in all: judge {judge['train_cpu_minutes']:.2f}, generating "
        f"{generated['images']:,} images {pair['generate_cpu_minutes']:.2f}, the two CAS classifiers "
        f"{generated['train_cpu_minutes']:.2f} + {real['train_cpu_minutes']:.2f}, test measures "
        f"{j['measure_cpu_minutes']:.2f}.",
        "",
        f"**Class consistency**: the share of the cgan's {j['samples']:,} samples (the test split's class counts, "
        "the samples of the table's cgan rows) that a classifier assigns to the requested class.",
        "",
        "| judge | in cgan's loss | consulted when cgan's recipe was chosen | its test accuracy on real images "
        "| share in the requested class |",
        "|---|---|---|---|---|",
        *(f"| {name} | {in_loss} | {consulted} | {accuracy} | {consistency[key]['share']:.4f} |"
          for key, name, in_loss, consulted, accuracy in judges),
        "",
        f"The independent judge is the zoo's `{judge['model']}` with its zoo recipe and {judge['epochs']} epochs "
        f"(validation accuracy {judge['val_accuracy']:.4f}), trained by this run on real images only after the "
        "cgan was trained and exported, so it cannot have shaped the cgan's weights; the bench checks that its "
        "checkpoint is not the cgan's FD classifier (the model card's `fd_classifier`); its settings were fixed "
        "(by CPU budget) before it judged any sample. A cgan setting chosen by its score would end its independence. "
        "The FD `cnn` is not in cgan's loss, but cgan's recipe was tuned against it: the auxiliary classifier head "
        "was added (commit 3b6c608) when it counted 73% of a projection-only cgan's samples in their class.",
        "",
        f"**Classification accuracy score** (Ravuri & Vinyals, 2019): the zoo `{pair['classifier']}` (its zoo "
        f"recipe, {pair['epochs']} epochs, seed 0: the FD classifier's settings) trained only on "
        f"{generated['images']:,} cgan samples (the class counts of `{tasks.TRAIN_SPLIT}`, each labelled with the "
        f"class it was requested for, seeds from {pair['first_seed']:,}, as uint8 pixels), and the same classifier "
        f"trained on the {real['images']:,} real `{tasks.TRAIN_SPLIT}` images, by the same code; both tested on the "
        "real test split.",
        "",
        "| trained on | images | validation accuracy (real) | test accuracy (real) | train CPU min |",
        "|---|---|---|---|---|",
        f"| cgan samples (CAS) | {generated['images']:,} | {generated['val_accuracy']:.4f} | "
        f"**{generated['test_accuracy']:.4f}** | {generated['train_cpu_minutes']:.2f} |",
        f"| real images | {real['images']:,} | {real['val_accuracy']:.4f} | **{real['test_accuracy']:.4f}** | "
        f"{real['train_cpu_minutes']:.2f} |",
        "",
        f"CAS / real-data accuracy: **{generated['test_accuracy'] / real['test_accuracy']:.3f}**.",
        "",
        "Per class: the share of samples in the requested class by each judge, beside the judge's recall of that "
        "class on the real test images (a judge that confuses a class on real images also does on samples); "
        "test recall of the two CAS classifiers.",
        "",
        "| class | independent judge: share | its real recall | FD cnn: share | its real recall | auxiliary head: "
        "share | CAS classifier: recall | real-data classifier: recall |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {label} | " + " | ".join(f"{v:.3f}" for v in values) + " |" for label, *values in per_class),
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())

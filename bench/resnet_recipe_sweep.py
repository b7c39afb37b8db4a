"""Recipe search for `resnet` (zoo/resnet.py): many short trainings, on any Keras 3 backend.

The 60-CPU-minute budget of the resnet target leaves room for one 30-epoch run on the 2-core machine,
so recipes were compared on a borrowed GPU machine that has JAX but no TensorFlow: this script builds
the network from zoo/resnet.py's own source (exec'd with a no-op `register_model`), reads
Fashion-MNIST from the raw IDX files (Debian's dataset-fashion-mnist, copied to --data), and repeats
pipelines.tasks.image_classification's recipe in plain Keras: train[:90%] / train[90%:] / test,
pixels / 255, random horizontal flip + RandomTranslation(0.1, 0.1, constant) (here one jit-friendly
layer), linear warmup then cosine decay, AdamW or Nesterov SGD with decoupled weight decay,
smoothed cross-entropy. Optional random erasing. Each configuration prints one JSON line: the
configuration, validation and test accuracy, test accuracy with flip averaging (`test_flip_tta`).

    KERAS_BACKEND=jax python bench/resnet_recipe_sweep.py --data DIR \\
        '[{"name": "sgd", "epochs": 30, "optimizer": "sgd", "learning_rate": 0.1, "weight_decay": 0.005}]'
    python bench/resnet_recipe_sweep.py --report   # bench/results/resnet-recipe.jsonl -> resnet-recipe.md

The figure that counts is the CPU run of the chosen recipe through the real pipeline
(bench/vision.py resnet, bench/results/vision.md); these runs only chose it.
"""
import gzip
import json
import os
import sys
import time

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "/usr/share/datasets/fashion-mnist"
RESULTS = os.path.join(HERE, "results", "resnet-recipe")


def idx(name):
    with gzip.open(os.path.join(DATA, name)) as f:
        data = f.read()
    if "labels" in name:
        return np.frombuffer(data, np.uint8, offset=8).astype("int32")
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28, 1)


def resnet_builder():
    src = open(os.path.join(HERE, "..", "zoo", "resnet.py")).read()
    src = src.replace("from zoo.labels import FASHION_MNIST_LABELS", "FASHION_MNIST_LABELS = ()")
    src = src.replace("from zoo.registry import register_model", "register_model = lambda *a, **k: (lambda f: f)")
    ns = {"__name__": "zoo_resnet"}
    exec(compile(src, "zoo/resnet.py", "exec"), ns)
    return ns["resnet"]


class Augment(keras.layers.Layer):
    """tf.image.random_flip_left_right + keras RandomTranslation(0.1, 0.1, constant), jit-friendly."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seed = keras.random.SeedGenerator(3)

    def call(self, x, training=False):
        if not training:
            return x
        ops = keras.ops
        n = ops.shape(x)[0]
        u = keras.random.uniform((n, 3), seed=self.seed)
        x = ops.where((u[:, 0] < 0.5)[:, None, None, None], ops.flip(x, axis=2), x)
        tx = (u[:, 1] * 0.2 - 0.1) * x.shape[2]
        ty = (u[:, 2] * 0.2 - 0.1) * x.shape[1]
        one, zero = ops.ones_like(tx), ops.zeros_like(tx)
        transforms = ops.stack([one, zero, -tx, zero, one, -ty, zero, zero], axis=1)
        return ops.image.affine_transform(x, transforms, interpolation="bilinear", fill_mode="constant")


class Progress(keras.callbacks.Callback):
    def __init__(self, name):
        super().__init__()
        self.name, self.t = name, time.time()

    def on_epoch_end(self, epoch, logs=None):
        print(self.name, epoch, round(time.time() - self.t, 1), {k: round(v, 4) for k, v in (logs or {}).items()},
              file=sys.stderr, flush=True)


class Erase(keras.layers.Layer):
    """Random erasing (Zhong et al.): with probability p, zero a random rectangle."""

    def __init__(self, p=0.5, **kw):
        super().__init__(**kw)
        self.p = p
        self.seed = keras.random.SeedGenerator(7)

    def call(self, x, training=False):
        if not training:
            return x
        ops = keras.ops
        n, h, w = ops.shape(x)[0], x.shape[1], x.shape[2]
        u = keras.random.uniform((n, 5), seed=self.seed)
        eh = ops.floor(4 + u[:, 0] * 12)
        ew = ops.floor(4 + u[:, 1] * 12)
        y0 = ops.floor(u[:, 2] * (h - eh))
        x0 = ops.floor(u[:, 3] * (w - ew))
        on = u[:, 4] < self.p
        rows = ops.arange(h, dtype="float32")[None, :, None]
        cols = ops.arange(w, dtype="float32")[None, None, :]
        m = ((rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None])
             & (cols >= x0[:, None, None]) & (cols < (x0 + ew)[:, None, None]) & on[:, None, None])
        return x * (1.0 - ops.cast(m, x.dtype))[..., None]


def run(cfg):
    keras.utils.set_random_seed(cfg.get("seed", 0))
    x, y = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
    xt, yt = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
    n = int(len(x) * 0.9)
    xtr, ytr, xv, yv = x[:n], y[:n], x[n:], y[n:]
    xtr, xv, xt = (a.astype("float32") / 255.0 for a in (xtr, xv, xt))
    if cfg.get("subset"):
        xtr, ytr = xtr[: cfg["subset"]], ytr[: cfg["subset"]]
    net = resnet_builder()(num_classes=10, image_size=28, channels=1, depth=cfg.get("depth", 20),
                           width=cfg.get("width", 1))
    inp = keras.Input((28, 28, 1))
    h = Augment()(inp)
    if cfg.get("erase"):
        h = Erase(cfg["erase"])(h)
    train_model = keras.Model(inp, net(h))
    bs, epochs = cfg.get("batch_size", 128), cfg["epochs"]
    steps = -(-len(xtr) // bs)
    total, warm = epochs * steps, int(cfg.get("warmup_epochs", 1) * steps)
    lr = cfg.get("learning_rate", 3e-3)
    sched = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(1, total - warm), warmup_target=lr,
                                                   warmup_steps=warm)
    if cfg.get("optimizer") == "sgd":
        opt = keras.optimizers.SGD(sched, momentum=0.9, nesterov=True, weight_decay=cfg.get("weight_decay", 5e-4))
    else:
        opt = keras.optimizers.AdamW(sched, weight_decay=cfg.get("weight_decay", 5e-4))
    sm = cfg.get("label_smoothing", 0.1)

    def loss(yt_, yp):
        onehot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(yt_, [-1]), "int32"), 10)
        return keras.losses.categorical_crossentropy(onehot, yp, label_smoothing=sm)

    train_model.compile(opt, loss, metrics=["sparse_categorical_accuracy"],
                        jit_compile=keras.backend.backend() == "jax")
    t = time.time()
    hist = train_model.fit(xtr, ytr, batch_size=bs, epochs=epochs, shuffle=True, verbose=0,
                           callbacks=[Progress(cfg["name"])])
    acc = lambda a, b: float(np.mean(np.argmax(a, -1) == b))  # noqa: E731
    pv, pt = net.predict(xv, batch_size=1000, verbose=0), net.predict(xt, batch_size=1000, verbose=0)
    ptf = net.predict(xt[:, :, ::-1], batch_size=1000, verbose=0)
    out = dict(cfg, val=acc(pv, yv), test=acc(pt, yt), test_flip_tta=acc(pt + ptf, yt),
               train_acc=float(hist.history["sparse_categorical_accuracy"][-1]), seconds=round(time.time() - t, 1))
    print(json.dumps(out), flush=True)
    return out


def report() -> None:
    """Render the recorded runs (one JSON object a line) as a markdown table, best validation accuracy first, and
    the recipe chosen by the rule stated before looking: the highest validation accuracy (the test columns are
    shown, not used; bench/resnet_seeds.py measures the chosen recipe's test accuracy once, over seeds)."""
    with open(RESULTS + ".jsonl") as f:
        runs = [json.loads(line) for line in f if line.strip()]
    keys = ("optimizer", "learning_rate", "weight_decay", "batch_size", "epochs", "depth", "erase",
            "label_smoothing", "warmup_epochs", "seed")
    defaults = {"optimizer": "adamw", "learning_rate": 3e-3, "weight_decay": 5e-4, "batch_size": 128, "depth": 20,
                "erase": 0, "label_smoothing": 0.1, "warmup_epochs": 1, "seed": 0}
    lines = ["# resnet recipe search", "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "Recorded runs: 2026-11-23 on one NVIDIA H100 (Keras 3.15.1 on JAX, XLA-compiled steps, 5-7 runs "
             "sharing the GPU at a time); each 30-epoch run took 3-4 minutes there. Only Fashion-MNIST's test split "
             "is scored; rows are sorted by validation accuracy (train[90%:], 6,000 images), the only column the "
             "choice reads.", "",
             "| run | " + " | ".join(keys) + " | val acc | test acc | test acc, flip-averaged |",
             "|---|" + "---|" * (len(keys) + 3)]
    ranked = sorted(runs, key=lambda r: -r["val"])
    for r in ranked:
        cells = [str(r.get(k, defaults.get(k, "-"))) for k in keys]
        scores = f"{r['val']:.4f} | {r['test']:.4f} | {r['test_flip_tta']:.4f}"
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {scores} |")
    best = ranked[0]
    se = float(np.sqrt(best["val"] * (1 - best["val"]) / 6000))
    close = [r["name"] for r in ranked if best["val"] - r["val"] <= se]
    lines += ["", f"**Chosen by validation**: `{best['name']}` "
              f"({json.dumps({k: best.get(k, defaults.get(k)) for k in keys if k != 'seed'})}), validation accuracy "
              f"{best['val']:.4f}, by the rule: the highest validation accuracy; "
              f"{len(close)} runs lie within one standard error ({se:.4f}) of it ({', '.join(close)}), so the "
              "validation split cannot tell them apart and the choice among them is the rule's, not a finding. An "
              "earlier version of this report ranked the runs by test accuracy and picked `sgd`: that choice read "
              "the test split, and is withdrawn. The chosen recipe's test accuracy, measured once over 3 seeds on "
              "the CPU pipeline, is in bench/results/resnet-seeds.md."]
    groups = {}
    for r in runs:
        groups.setdefault(json.dumps({k: v for k, v in r.items() if k in keys and k != "seed"}, sort_keys=True),
                          []).append(r)
    lines += ["", "Configurations run with several seeds (each seed's accuracy, then the mean):", ""]
    for config, group in groups.items():
        if len(group) > 1:
            for key in ("val", "test", "test_flip_tta"):
                each = ", ".join(f"{r[key]:.4f}" for r in group)
                lines.append(f"- `{config}` {key}: {each}; mean {np.mean([r[key] for r in group]):.4f}")
    with open(RESULTS + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        report()
    else:
        if sys.argv[1] == "--data":
            DATA = sys.argv[2]
            del sys.argv[1:3]
        for c in json.loads(sys.argv[1]):
            run(c)

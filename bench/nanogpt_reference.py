"""nanoGPT's model and training loop in PyTorch: the reference that bench/language.py runs beside `tfzoo train gpt`.

Written for this bench after karpathy/nanoGPT's model.py and train.py; what carries over:
  model      token + learned position embeddings, pre-LayerNorm blocks (causal self-attention through
             F.scaled_dot_product_attention, a 4x GELU MLP), a final LayerNorm, the output projection tied to
             the token embedding; biases in LayerNorm and Linear layers only with bias=True; initialisation
             normal(0, 0.02), the two residual projections of each block normal(0, 0.02 / sqrt(2 * n_layer)).
  optimizer  AdamW (betas 0.9 / beta2, eps 1e-8, not fused: CPU) with weight decay on the 2-D parameters only
             (matrices and embeddings), none on LayerNorm gains and biases; learning rate warmed up linearly as
             lr * (it + 1) / (warmup_iters + 1), then a cosine to min_lr at lr_decay_iters; gradients clipped
             to a global norm of grad_clip.
  data       get_batch: batch_size windows of block_size + 1 tokens at uniform random offsets of a split's
             token ids (train.bin / val.bin, uint16, as nanoGPT's prepare.py writes them).
  loop       the next batch drawn between forward and backward; estimate_loss (eval_iters random batches of
             train and of val) every eval_interval iterations; a checkpoint of the model and the optimizer
             whenever the validation loss improves; float32, eager, as nanoGPT's README runs it on a CPU
             (--device=cpu --compile=False).
The defaults are that README's CPU command (config/train_shakespeare_char.py --eval_iters=20 --block_size=64
--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0);
bench/language.py passes the zoo gpt's own figures. One difference: nanoGPT's loop takes one more step after
its evaluation at max_iters; this one stops there, after max_iters updates, as tfzoo's recipe does.

    python bench/nanogpt_reference.py --data DIR [--eval FILE.npz] [--out_dir DIR] [--n_layer 4 ...]

--eval names windows to score after training, as tfzoo scores its model: `validation_x`/`validation_y`
[batches, batch, T] (tfzoo's fixed validation batches) and `test_x`/`test_y` [windows, T] (every
non-overlapping window of the validation text). Prints nanoGPT's evaluation lines, then one JSON line: the
losses, ms/iteration (mean and median of the gaps between consecutive updates, after the first `warmup_gaps`
and without those across an evaluation), the same in process CPU time, and time.time() stamps of the phases.
"""
from __future__ import annotations

import time

STARTED = time.time()  # before importing torch: the import is part of a whole run

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

IMPORTED = time.time()


@dataclasses.dataclass
class Config:
    """Model and training settings; defaults: nanoGPT's README command for Shakespeare characters on a CPU."""

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    batch_size: int = 12
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    max_iters: int = 2000
    lr_decay_iters: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    seed: int = 1337
    warmup_gaps: int = 10  # timing only: the first updates (allocator, thread pool) are not representative


class CausalSelfAttention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.n_head, self.dropout = c.n_head, c.dropout
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)  # q, k, v in one matrix multiply
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.resid_dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        batch, length, width = x.shape
        # [B, T, 3C] -> three [B, heads, T, head_dim]
        q, k, v = self.c_attn(x).view(batch, length, 3, self.n_head, width // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(batch, length, width)))


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # exact (erf) GELU, as nn.GELU()


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd, eps=1e-5, bias=c.bias)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd, eps=1e-5, bias=c.bias)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.h = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, eps=1e-5, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying: one matrix embeds and reads out
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        # Each block adds two residual branches: scaling their output projections keeps the residual
        # stream's variance from growing with depth (GPT-2).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.n_layer))

    def forward(self, idx, targets):
        """Mean next-token cross-entropy of `idx` [B, T] against `targets` [B, T]."""
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(idx.shape[1])))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def configure_optimizer(self, c: Config) -> torch.optim.AdamW:
        """AdamW with weight decay on the 2-D parameters only: matrices and embeddings, not gains or biases."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": c.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=c.learning_rate, betas=(c.beta1, c.beta2))


def learning_rate(c: Config, it: int) -> float:
    """Linear warmup, then cosine decay from learning_rate to min_lr at lr_decay_iters."""
    if it < c.warmup_iters:
        return c.learning_rate * (it + 1) / (c.warmup_iters + 1)
    if it > c.lr_decay_iters:
        return c.min_lr
    ratio = (it - c.warmup_iters) / (c.lr_decay_iters - c.warmup_iters)
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c.learning_rate - c.min_lr)


def get_batch(ids: np.ndarray, c: Config):
    """batch_size (inputs, targets) windows at random offsets of `ids`."""
    starts = torch.randint(len(ids) - c.block_size, (c.batch_size,))
    x = torch.stack([torch.from_numpy(ids[i:i + c.block_size].astype(np.int64)) for i in starts])
    y = torch.stack([torch.from_numpy(ids[i + 1:i + 1 + c.block_size].astype(np.int64)) for i in starts])
    return x, y


@torch.no_grad()
def estimate_loss(model: GPT, splits: dict[str, np.ndarray], c: Config) -> dict[str, float]:
    """Mean loss of eval_iters random batches of each split."""
    model.eval()
    out = {name: statistics.fmean(model(*get_batch(ids, c)).item() for _ in range(c.eval_iters))
           for name, ids in splits.items()}
    model.train()
    return out


@torch.no_grad()
def mean_loss(model: GPT, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    """Mean loss over every token of the windows `x`, `y` [N, T] (rows of [..., T] arrays)."""
    model.eval()
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    total = sum(model(torch.from_numpy(x[i:i + batch_size]).long(), torch.from_numpy(y[i:i + batch_size]).long())
                .item() * len(x[i:i + batch_size]) for i in range(0, len(x), batch_size))
    model.train()
    return total / len(x)


def train(c: Config, data: Path, out_dir: Path, eval_file: Path | None) -> dict:
    """nanoGPT's training loop; the run's losses, step times and phase stamps."""
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(c.seed)
    splits = {name: np.memmap(data / f"{name}.bin", dtype=np.uint16, mode="r") for name in ("train", "val")}
    model = GPT(c)
    optimizer = model.configure_optimizer(c)
    out_dir.mkdir(parents=True, exist_ok=True)
    best_val, evals, train_losses = math.inf, [], []
    wall_gaps, cpu_gaps, last = [], [], None
    x, y = get_batch(splits["train"], c)
    train_begin = time.time()
    for it in range(c.max_iters + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(c, it)
        if it % c.eval_interval == 0 or it == c.max_iters:
            losses = estimate_loss(model, splits, c)
            evals.append({"iteration": it, **losses})
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
            if losses["val"] < best_val:
                best_val = losses["val"]
                if it > 0:
                    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "config": dataclasses.asdict(c), "iter_num": it, "best_val_loss": best_val},
                               out_dir / "ckpt.pt")
            last = None  # the gap across an evaluation is not a step time
        if it == c.max_iters:
            break
        loss = model(x, y)
        x, y = get_batch(splits["train"], c)  # the next batch, drawn before backward as nanoGPT does
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_losses.append(loss.item())
        now = (time.perf_counter(), time.process_time())
        if last is not None:
            wall_gaps.append(1000 * (now[0] - last[0]))
            cpu_gaps.append(1000 * (now[1] - last[1]))
        last = now
    train_end = time.time()
    wall_gaps, cpu_gaps = wall_gaps[c.warmup_gaps:], cpu_gaps[c.warmup_gaps:]
    result = {
        "iterations": len(train_losses), "val_loss_estimate": evals[-1]["val"],
        "train_loss_estimate": evals[-1]["train"], "evals": evals,
        "train_loss": statistics.fmean(train_losses[-c.eval_interval:]),
        "ms_per_iteration": statistics.fmean(wall_gaps), "ms_per_iteration_median": statistics.median(wall_gaps),
        "cpu_ms_per_iteration": statistics.fmean(cpu_gaps), "cpu_ms_per_iteration_median": statistics.median(cpu_gaps),
        "timed_gaps": len(wall_gaps),
        "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "config": dataclasses.asdict(c),
    }
    if eval_file is not None:
        windows = np.load(eval_file)
        result["val_loss"] = mean_loss(model, windows["validation_x"], windows["validation_y"], c.batch_size)
        result["test_loss"] = mean_loss(model, windows["test_x"], windows["test_y"], c.batch_size)
        result["test_windows"] = len(windows["test_x"])
    result["stamps"] = {"started": STARTED, "imported": IMPORTED, "train_begin": train_begin,
                        "train_end": train_end, "end": time.time()}
    return result


ARGUMENT_TYPES = {"int": int, "float": float, "bool": lambda s: s.lower() in ("1", "true")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="directory with train.bin and val.bin (uint16)")
    parser.add_argument("--eval", type=Path, help="npz of windows to score after training (see above)")
    parser.add_argument("--out_dir", type=Path, default=Path("out-nanogpt-reference"), help="checkpoint directory")
    for field in dataclasses.fields(Config):
        parser.add_argument(f"--{field.name}", type=ARGUMENT_TYPES[field.type], default=field.default,
                            metavar=field.type.upper())
    args = vars(parser.parse_args(argv))
    data, eval_file, out_dir = args.pop("data"), args.pop("eval"), args.pop("out_dir")
    print(json.dumps(train(Config(**args), data, out_dir, eval_file)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

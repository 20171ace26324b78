"""The tiny-shakespeare quality anchor, timed against a nanoGPT-style reference in the same run.

Three processes run one after another, each timed from process start to exit (start-up, data
preparation and periodic evaluation included), on the same machine in the same minute:

1. reference: a minimal plain-PyTorch character GPT trained with the well-known CPU recipe
   (nanoGPT's shakespeare_char recipe with its CPU overrides: 4 layers, 4 heads, d=128, block 64,
   batch 12, 2000 iterations, AdamW lr 1e-3 → 1e-4 cosine, 100 warm-up, betas (0.9, 0.99),
   weight decay 0.1 on matrices, clipping 1.0, dropout 0, no biases), with torch's fused AdamW
   (as ours) and our evaluation work: every 400 iterations 2 × 128 validation blocks (not at
   the last iteration), then the whole validation split once;
2. ours, same recipe: `nlpattn pretrain --config configs/pretrain/clm-shakespeare-char.yaml`
   with RECIPE as `train.*` overrides (max_steps=2000 lr=1e-3 ...);
3. ours, shipped config: `nlpattn pretrain --config configs/pretrain/clm-shakespeare-char.yaml`.

All three report the validation loss over the whole held-out 10%. `describe()` gives the
reference's and ours' settings side by side (printed first; tests/test_benchmarks.py checks
they match). The ratio reference / ours is the figure to quote; absolute seconds depend on how
busy the machine is.

    python benchmarks/shakespeare_anchor.py [--skip-reference]
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "tinyshakespeare" / "input.txt.gz"
CONFIG = REPO / "configs" / "pretrain" / "clm-shakespeare-char.yaml"
# The recipe both sides train with; ours gets it as overrides of CONFIG, the reference reads it.
RECIPE = {"max_steps": 2000, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100, "batch_size": 12,
          "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.1, "clip_grad": 1.0, "eval_every": 400,
          "eval_batches": 2, "eval_batch_size": 128, "precision": "fp32"}
OURS_RECIPE = [f"train.{k}={v}" for k, v in RECIPE.items()]


def describe() -> dict:
    """Both sides' settings (nothing is run): {"ours": {...}, "reference": {...}}."""
    sys.path.insert(0, str(REPO))
    from nlpattn.config import load_config

    t = load_config(CONFIG, OURS_RECIPE).train
    ours = {"optimizer": "AdamW", "fused": True, "lr": t.lr, "min_lr": t.min_lr, "betas": (t.beta1, t.beta2),
            "eps": t.adam_eps, "weight_decay": t.weight_decay, "batch": t.batch_size, "steps": t.max_steps,
            "schedule": (t.schedule, t.warmup_steps), "clip": t.clip_grad,
            "eval": (t.eval_every, t.eval_batches, t.eval_batch_size, t.final_eval_batches),
            "precision": t.precision}
    r = RECIPE
    reference = {"optimizer": "AdamW", "fused": True, "lr": r["lr"], "min_lr": r["min_lr"],
                 "betas": (r["beta1"], r["beta2"]), "eps": 1e-8, "weight_decay": r["weight_decay"],
                 "batch": r["batch_size"], "steps": r["max_steps"], "schedule": ("cosine", r["warmup_steps"]),
                 "clip": r["clip_grad"], "eval": (r["eval_every"], r["eval_batches"], r["eval_batch_size"], None),
                 "precision": "fp32"}  # plain float32 training
    return {"ours": ours, "reference": reference}


def train_reference(seed: int = 0) -> dict:
    """Train the reference character GPT with the published recipe; return its losses."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    text = gzip.open(DATA, "rt", encoding="utf-8").read()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    n_train = int(0.9 * len(data))
    splits = {"train": data[:n_train], "val": data[n_train:]}
    vocab, d, n_layers, n_heads, block, batch = len(chars), 128, 4, 4, 64, RECIPE["batch_size"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
            self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
            self.fc, self.fc_out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = (t.view(B, T, n_heads, d // n_heads).transpose(1, 2)
                       for t in self.qkv(self.ln1(x)).split(d, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(B, T, d))
            return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))

    class CharGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(block, d)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layers))
            self.ln_f = nn.LayerNorm(d, bias=False)
            self.head = nn.Linear(d, vocab, bias=False)
            self.tok.weight = self.head.weight
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("proj.weight", "fc_out.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, idx, targets):
            x = self.tok(idx) + self.pos.weight[: idx.shape[1]]
            for blk in self.blocks:
                x = blk(x)
            logits = self.head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, vocab), targets.reshape(-1))

    def get_batch(split, size=batch):
        src = splits[split]
        start = torch.randint(len(src) - block, (size,))
        x = torch.stack([src[i:i + block] for i in start])
        y = torch.stack([src[i + 1:i + 1 + block] for i in start])
        return x, y

    model = CharGPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": RECIPE["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=RECIPE["lr"],
                            betas=(RECIPE["beta1"], RECIPE["beta2"]), eps=1e-8, fused=True)

    def lr_at(it, max_lr=RECIPE["lr"], min_lr=RECIPE["min_lr"], warmup=RECIPE["warmup_steps"],
              total=RECIPE["max_steps"]):
        if it < warmup:
            return max_lr * (it + 1) / (warmup + 1)
        ratio = (it - warmup) / (total - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)

    @torch.no_grad()
    def estimate(split, iters=RECIPE["eval_batches"], size=RECIPE["eval_batch_size"]):
        model.eval()
        loss = sum(model(*get_batch(split, size)).item() for _ in range(iters)) / iters
        model.train()
        return loss

    @torch.no_grad()
    def full_val_loss():
        model.eval()
        val = splits["val"]
        n_blocks = (len(val) - 1) // block
        x = val[: n_blocks * block].view(n_blocks, block)
        y = val[1: n_blocks * block + 1].view(n_blocks, block)
        total = sum(model(x[i:i + 128], y[i:i + 128]).item() * len(x[i:i + 128]) for i in range(0, n_blocks, 128))
        return total / n_blocks

    steps, every = RECIPE["max_steps"], RECIPE["eval_every"]
    for it in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        loss = model(*get_batch("train"))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), RECIPE["clip_grad"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (it + 1) % every == 0 and it + 1 < steps:  # as ours: periodic evals, not at the last step
            estimate("val")
    return {"final_val_loss": full_val_loss()}


def timed(cmd: list[str]) -> tuple[float, str]:
    """Run `cmd`, return (wall seconds from start to exit, stdout); raise if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def run_ours(out_dir: Path, overrides: list[str]) -> dict:
    """Time `nlpattn pretrain` on the anchor config; return wall time and summary.json."""
    cmd = [sys.executable, "-m", "nlpattn", "pretrain", "--config", str(CONFIG),
           f"output_dir={out_dir}", "train.progress=false", *overrides]
    wall, _ = timed(cmd)
    summary = json.loads((out_dir / "summary.json").read_text())
    return {"wall_s": wall, "final_val_loss": summary["final_val_loss"], "steps": summary["steps"],
            "train_s": summary["train_s"]}


def main() -> None:
    """Run the reference and both of our configurations; print a table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", action="store_true", help="(internal) train the reference and print JSON")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    if args.reference:
        print(json.dumps(train_reference()))
        return
    for side, facts in describe().items():
        print(f"{side}: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    rows = []
    if not args.skip_reference:
        wall, out = timed([sys.executable, __file__, "--reference"])
        ref = json.loads(out.strip().splitlines()[-1])
        rows.append(("reference (nanoGPT-style, recipe)", RECIPE["max_steps"], wall, ref["final_val_loss"]))
    with tempfile.TemporaryDirectory() as tmp:
        same = run_ours(Path(tmp) / "recipe", OURS_RECIPE)
        shipped = run_ours(Path(tmp) / "shipped", [])
    rows.append(("nlpattn, same recipe", same["steps"], same["wall_s"], same["final_val_loss"]))
    rows.append(("nlpattn, shipped config", shipped["steps"], shipped["wall_s"], shipped["final_val_loss"]))
    print("| run | steps | wall s (everything) | val loss (whole split) |\n|---|---|---|---|")
    for name, steps, wall, loss in rows:
        print(f"| {name} | {steps} | {wall:.1f} | {loss:.3f} |")
    if not args.skip_reference:
        print(f"same recipe, reference wall / ours: x{rows[0][2] / same['wall_s']:.2f}; "
              f"shipped config reaches <= 1.89: {shipped['final_val_loss'] <= 1.89}, "
              f"in {shipped['wall_s']:.1f} s (target <= 60 s)")


if __name__ == "__main__":
    main()

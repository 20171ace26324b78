"""`model.attention`'s two paths in one process: SDPA (PyTorch's fused kernel) against the math
path (softmax(QKᵀ/√d)V spelled out), in a training step and an inference pass of models from
train_throughput.py, blocks of steps alternating between the paths (ab.py). This is the
measurement behind `model.attention=auto`'s rule (`nlpattn.attention.math_is_faster`).

    python benchmarks/attention_path.py --threads 2                      # fp32, batch 16 × 128
    python benchmarks/attention_path.py --threads 2 --shapes 8x512 --dtype bf16
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402
from ab import alternate, model_step  # noqa: E402

from nlpattn.attention import MultiHeadAttention  # noqa: E402

MODELS = "nlpattn-mlm,nlpattn-clm,nlpattn-mlm[norm=pre,bias=false,position=rope]"
PATHS = ("sdpa", "math")


@contextlib.contextmanager
def attention_path(model: torch.nn.Module, path: str):
    """Every MultiHeadAttention of `model` takes `path` inside the block (no per-call `auto` choice)."""
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    saved = [(m.use_sdpa, m.auto) for m in layers]
    for m in layers:
        m.use_sdpa, m.auto = path == "sdpa", False
    try:
        yield
    finally:
        for m, (use_sdpa, auto) in zip(layers, saved):
            m.use_sdpa, m.auto = use_sdpa, auto


def main(argv: list[str] | None = None) -> int:
    """Print, per model, shape and mode, the median ms of each path and SDPA ÷ math."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("d", 256), ("layers", 4), ("heads", 4), ("ffn", 1024), ("vocab", 8192),
                          ("blocks", 12), ("per-block", 5), ("threads", 0)):
        p.add_argument(f"--{flag}", type=int, default=default)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast, as the Trainer")
    p.add_argument("--shapes", default="16x128", help="comma-separated batch x sequence length")
    p.add_argument("--models", default=MODELS, help="comma-separated train_throughput.py names")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.dtype}; d {a.d}, {a.layers} layers, "
          f"{a.heads} heads; median ms, {a.blocks} alternating blocks of {a.per_block} steps")
    print("| model | batch × seq | mode | SDPA ms | math ms | SDPA ÷ math |\n|---|---|---|---|---|---|")
    for shape in a.shapes.split(","):
        a.batch, a.seq = (int(n) for n in shape.split("x"))
        for name in tt.split_models(a.models):
            for mode in ("train", "inference"):
                model, step = model_step(name, a, mode == "train")
                variants = {path: lambda path=path: attention_path(model, path) for path in PATHS}
                ms = alternate(step, variants, a.blocks, a.per_block)
                print(f"| {name} | {shape} | {mode} | {ms['sdpa']:.1f} | {ms['math']:.1f} | "
                      f"{ms['sdpa'] / ms['math']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

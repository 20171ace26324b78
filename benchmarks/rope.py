"""Rotary position embedding: our rotation (`nlpattn.attention.RotaryEmbedding`) against
transformers' Llama formula (`q·cos + rotate_half(q)·sin`, autograd for the backward), on q and k
alone and inside a whole training step or inference pass of a model from train_throughput.py.

Each comparison runs in one process, blocks of steps alternating between the two rotations (ab.py).

    python benchmarks/rope.py --threads 2       # q, k (16, 4, 128, 64); the shipped MLM layout
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

from nlpattn.attention import RotaryEmbedding  # noqa: E402

MODELS = "nlpattn-mlm[norm=pre,bias=false,position=rope],nlpattn-clm[position=rope]"


def llama_forward(self: RotaryEmbedding, x: torch.Tensor, offset: int = 0,
                  positions: torch.Tensor | None = None) -> torch.Tensor:
    """RotaryEmbedding.forward as transformers' Llama computes it (its apply_rotary_pos_emb)."""
    from transformers.models.llama.modeling_llama import rotate_half

    table = slice(offset, offset + x.shape[-2])
    cos = (self.cos[positions][:, None] if positions is not None else self.cos[table]).to(x.dtype)
    sin = (self.sin[positions][:, None] if positions is not None else self.sin[table]).to(x.dtype)
    return x * cos + rotate_half(x) * sin


ROTATIONS = {"ours": RotaryEmbedding.forward, "llama": llama_forward}


@contextlib.contextmanager
def rotation(name: str):
    """Every RotaryEmbedding computes with ROTATIONS[name] inside the block."""
    RotaryEmbedding.forward = ROTATIONS[name]
    try:
        yield
    finally:
        RotaryEmbedding.forward = ROTATIONS["ours"]


def op_steps(a: argparse.Namespace, train: bool):
    """A step rotating q and k of one layer, sliced from a fused QKV output as attention does."""
    rope = RotaryEmbedding(a.head_dim, a.seq)
    qkv = torch.randn(a.batch, a.seq, 3 * a.heads * a.head_dim, requires_grad=train)

    def step() -> None:
        with torch.set_grad_enabled(train):
            q, k, _ = (t.view(a.batch, a.seq, a.heads, a.head_dim).transpose(1, 2) for t in qkv.chunk(3, -1))
            out = rope(q) * rope(k)
            if train:
                out.sum().backward()
                qkv.grad = None
    return step


def main(argv: list[str] | None = None) -> int:
    """Print, per workload, the median ms under each rotation and llama ÷ ours."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("d", 256), ("layers", 4), ("heads", 4), ("ffn", 1024), ("vocab", 8192), ("seq", 128),
                          ("batch", 16), ("blocks", 12), ("per-block", 5), ("op-repeats", 20), ("threads", 0)):
        p.add_argument(f"--{flag}", type=int, default=default)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--models", default=MODELS, help="comma-separated train_throughput.py names")
    a = p.parse_args(argv)
    a.head_dim = a.d // a.heads
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {a.batch}, seq {a.seq}, "
          f"d {a.d}, {a.heads} heads; median ms, {a.blocks} alternating blocks")
    print("| workload | ours ms | llama ms | llama ÷ ours |\n|---|---|---|---|")
    workloads = [(f"q, k rotation, {mode}", op_steps(a, mode == "train"), a.op_repeats)
                 for mode in ("train", "inference")]
    workloads += [(f"{name} {mode}", model_step(name, a, mode == "train")[1], a.per_block)
                  for name in tt.split_models(a.models) for mode in ("train", "inference")]
    for label, step, per_block in workloads:
        ms = alternate(step, {name: lambda name=name: rotation(name) for name in ROTATIONS}, a.blocks, per_block)
        print(f"| {label} | {ms['ours']:.2f} | {ms['llama']:.2f} | {ms['llama'] / ms['ours']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

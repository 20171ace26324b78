"""The causal LM's head and loss alone: F.linear + F.cross_entropy against the fused
`linear_cross_entropy` at several chunk sizes, forward + backward, fp32 and bf16 autocast.

    python benchmarks/lm_head_loss.py --threads 2                  # N 2048, d 256, V 8192
    python benchmarks/lm_head_loss.py --rows 2048 --d 768 --vocab 50257 --chunks 64,256
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from nlpattn.linear_cross_entropy import linear_cross_entropy


def median_ms(loss_fn, hidden: torch.Tensor, weight: torch.Tensor, bf16: bool, steps: int, warmup: int) -> float:
    """Median milliseconds of loss_fn(h, w) forward + backward."""
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(h, w)
        loss.backward()
        h.grad = w.grad = None
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    """Print one line per dtype: the plain head's time and the fused one's per chunk size."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("rows", 2048), ("d", 256), ("vocab", 8192), ("steps", 20), ("warmup", 3), ("threads", 0)):
        p.add_argument(f"--{flag}", type=int, default=default)
    p.add_argument("--chunks", default="64,128,256,512", help="rows per chunk of the fused head")
    p.add_argument("--dtypes", default="fp32,bf16")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    hidden, weight = torch.randn(a.rows, a.d), 0.02 * torch.randn(a.vocab, a.d)
    targets = torch.randint(0, a.vocab, (a.rows,))
    targets[127::128] = -100  # the last position of each 128-token row predicts nothing
    print(f"N {a.rows}, d {a.d}, V {a.vocab}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median ms of {a.steps} forward + backward")
    for dtype in a.dtypes.split(","):
        bf16 = dtype == "bf16"
        plain = median_ms(lambda h, w: F.cross_entropy(F.linear(h, w).float(), targets), hidden, weight, bf16,
                          a.steps, a.warmup)
        fused = {int(rows): median_ms(lambda h, w, r=int(rows): linear_cross_entropy(h, w, targets, r), hidden,
                                      weight, bf16, a.steps, a.warmup) for rows in a.chunks.split(",")}
        print(f"{dtype}: plain {plain:.1f} ms; fused " + ", ".join(f"{r} rows {ms:.1f}" for r, ms in fused.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The masked-LM loss alone: cross-entropy + backward on the masked rows' logits (N, V), as
PyTorch's upcast path (F.cross_entropy on float32 copies, whole or in 256-row chunks, the rule
shipped before 2026-12-05) against `nlpattn.heads.chunked_cross_entropy`, which takes bf16
logits through one pass that computes the loss and its gradient together.

    python benchmarks/masked_lm_loss.py --threads 2     # V 8192; N 320 (benchmark shape) and 1024 (shipped recipe)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from nlpattn.heads import IGNORE_INDEX, chunked_cross_entropy

UPCAST_CHUNK_ROWS, UPCAST_ONE_CALL_ROWS = 256, 512  # the rule before: one call up to 512 rows at V 8192


def upcast_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The previous path: F.cross_entropy on float32 copies, one call or 256-row chunks."""
    if logits.shape[0] <= UPCAST_ONE_CALL_ROWS:
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
    total = sum(F.cross_entropy(part.float(), t, ignore_index=IGNORE_INDEX, reduction="sum")
                for part, t in zip(logits.split(UPCAST_CHUNK_ROWS), targets.split(UPCAST_CHUNK_ROWS)))
    return total / (targets != IGNORE_INDEX).sum()


def median_ms(loss_fn, logits: torch.Tensor, targets: torch.Tensor, steps: int, warmup: int) -> float:
    """Median milliseconds of loss_fn(logits, targets) and its backward."""
    x = logits.clone().requires_grad_()

    def once() -> float:
        start = time.perf_counter()
        loss_fn(x, targets).backward()
        x.grad = None
        return time.perf_counter() - start

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(steps)) * 1e3


def main(argv: list[str] | None = None) -> int:
    """Print one markdown row per rows × dtype: both paths' milliseconds and their ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("vocab", 8192), ("steps", 25), ("warmup", 3), ("threads", 0)):
        p.add_argument(f"--{flag}", type=int, default=default)
    p.add_argument("--rows", default="320,1024", help="comma-separated masked-row counts")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; V {a.vocab}; loss + backward, "
          f"median of {a.steps} after {a.warmup}, the lower of two alternated sets")
    print("| rows | dtype | upcast path ms | chunked_cross_entropy ms | speed-up |")
    print("|---|---|---|---|---|")
    for rows in map(int, a.rows.split(",")):
        torch.manual_seed(0)
        logits = torch.randn(rows, a.vocab) * 3
        targets = torch.randint(0, a.vocab, (rows,))
        for dtype in (torch.float32, torch.bfloat16):
            x = logits.to(dtype)
            # alternated, the lower median of two for each: the first timed set otherwise pays for warm-up
            old, new = (min(pair) for pair in zip(*[(median_ms(upcast_cross_entropy, x, targets, a.steps, a.warmup),
                                                      median_ms(chunked_cross_entropy, x, targets, a.steps, a.warmup))
                                                     for _ in range(2)]))
            print(f"| {rows} | {str(dtype).removeprefix('torch.')} | {old:.2f} | {new:.2f} | {old / new:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

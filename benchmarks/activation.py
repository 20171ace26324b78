"""The feed-forward activations alone: exact GELU against the tanh form GPT-2 uses, and the tanh
form computed in float32 for a bf16 input (then rounded once), forward + backward, fp32 and bf16.

    python benchmarks/activation.py --threads 2          # 2048 × 1024, the benchmark model's FFN
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def gelu_tanh_via_float32(x: torch.Tensor) -> torch.Tensor:
    """The tanh GELU computed in float32 and rounded back to x's dtype."""
    return F.gelu(x.float(), approximate="tanh").to(x.dtype)


ACTIVATIONS = {"gelu (exact)": F.gelu, "gelu tanh": lambda x: F.gelu(x, approximate="tanh"),
               "gelu tanh via float32": gelu_tanh_via_float32}


def median_ms(fn, x: torch.Tensor, steps: int, warmup: int) -> float:
    """Median milliseconds of fn(x) forward + backward."""
    x = x.detach().clone().requires_grad_()
    grad = torch.ones_like(x)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        fn(x).backward(grad)
        x.grad = None
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    """Print one line per dtype with each activation's time."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("rows", 2048), ("width", 1024), ("steps", 30), ("warmup", 3), ("threads", 0)):
        p.add_argument(f"--{flag}", type=int, default=default)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.randn(a.rows, a.width)
    print(f"{a.rows} × {a.width}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median ms of {a.steps} forward + backward")
    for dtype in (torch.float32, torch.bfloat16):
        times = {name: median_ms(fn, x.to(dtype), a.steps, a.warmup) for name, fn in ACTIVATIONS.items()}
        print(f"{str(dtype).removeprefix('torch.')}: " + ", ".join(f"{n} {ms:.2f}" for n, ms in times.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

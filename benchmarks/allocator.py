"""Page faults from glibc handing memory back, and what `nlpattn.allocator.keep_freed_memory` saves.

Workloads, each repeated: "step", a training step's activations (40 blocks of 4 MiB allocated,
filled and freed together), and "logits", an LM head's (rows, vocab) output (`F.linear`, 64 MiB in
float32 at the default shape, 33 MB in bf16). Settings: glibc's default; `keep_freed_memory()`
(trim threshold 1 GiB, mmap threshold 32 MiB), as the nlpattn command applies it; that and PyTorch's
huge pages for blocks of 2 MiB and more (THP_MEM_ALLOC_ENABLE=1, not applied); and `keep_freed_memory()`
with the mmap threshold at 1 GiB, which also keeps blocks above 32 MiB in the heap. Each workload × setting
runs in a fresh process (mallopt is process-wide, and glibc's adaptive thresholds remember what
was freed before). Reports median ms, minor page faults per call and the resident memory the
process grew by over the repetitions.

    python benchmarks/allocator.py --threads 2        # rows 2048 (batch 16 × seq 128), d 256, vocab 8192
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nlpattn.allocator import TORCH_HUGE_PAGES_ENV

# name → (keep_freed_memory's mmap threshold or None for glibc's default, PyTorch's huge pages)
SETTINGS = {"glibc default": (None, False), "kept (mmap 32 MiB)": (32 << 20, False),
            "kept + huge pages": (32 << 20, True), "kept, mmap 1 GiB": (1 << 30, False)}
WORKLOADS = ("step", "logits fp32", "logits bf16")


def rss_mib() -> float:
    """Resident memory now, MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def measure(fn, a: argparse.Namespace) -> dict:
    """Median ms, page faults per call and RSS growth (MiB) of `fn` over a.steps calls after a.warmup."""
    for _ in range(a.warmup):
        fn()
    times, faults, rss = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt, rss_mib()
    for _ in range(a.steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"ms": statistics.median(times) * 1e3, "rss_growth_mib": rss_mib() - rss,
            "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / a.steps}


def workloads(a: argparse.Namespace) -> dict:
    """name → a zero-argument function doing one repetition."""
    torch.manual_seed(0)
    h, w = torch.randn(a.rows, a.d), torch.randn(a.vocab, a.d)
    hb, wb = h.bfloat16(), w.bfloat16()

    def step() -> None:
        blocks = [torch.ones(a.block_mib << 18) for _ in range(a.blocks)]  # float32: 4 bytes each
        del blocks

    def logits(x, y) -> None:
        with torch.inference_mode():
            F.linear(x, y)

    return {"step": step, "logits fp32": lambda: logits(h, w), "logits bf16": lambda: logits(hb, wb)}


def worker(a: argparse.Namespace) -> dict:
    """One workload under one setting, in this process."""
    if a.threads:
        torch.set_num_threads(a.threads)
    mmap_threshold, _ = SETTINGS[a.worker]
    if mmap_threshold is not None:
        from nlpattn.allocator import keep_freed_memory

        if not keep_freed_memory(mmap_threshold=mmap_threshold):
            raise SystemExit("this C library has no glibc mallopt: nothing to compare")
    return measure(workloads(a)[a.workload], a)


def main(argv: list[str] | None = None) -> int:
    """Run each workload × setting in its own process and print a table."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("rows", 2048), ("d", 256), ("vocab", 8192), ("blocks", 40), ("block-mib", 4),
                          ("steps", 12), ("warmup", 2), ("threads", 0)):
        p.add_argument(f"--{flag}", type=int, default=default)
    p.add_argument("--worker", choices=SETTINGS, help=argparse.SUPPRESS)
    p.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a)), flush=True)
        return 0
    results = {setting: {} for setting in SETTINGS}
    for name in WORKLOADS:
        for setting in SETTINGS:
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", setting, "--workload", name]
            # PyTorch reads its huge-page switch at its first allocation: it goes in the worker's environment
            env = {**os.environ, TORCH_HUGE_PAGES_ENV: "1"} if SETTINGS[setting][1] else None
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            results[setting][name] = json.loads(out.strip().splitlines()[-1])
    print(f"torch {torch.__version__}, {a.threads or torch.get_num_threads()} threads; step: {a.blocks} × "
          f"{a.block_mib} MiB; logits: ({a.rows} × {a.d}) → ({a.rows} × {a.vocab}); {a.steps} calls after {a.warmup}")
    print("| workload | " + " | ".join(SETTINGS) + " |")
    print("|---|" + "---|" * len(SETTINGS))
    for name in WORKLOADS:
        cells = [f"{r['ms']:.2f} ms, {r['faults']:,.0f} faults, +{r['rss_growth_mib']:.0f} MiB"
                 for r in (results[s][name] for s in SETTINGS)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

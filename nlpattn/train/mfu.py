"""MFU (model FLOPs utilisation = achieved training FLOP/s ÷ peak FLOP/s) of a run: the
training FLOPs of a micro-batch (analytic, `nlpattn.cost.analytic`) and the device's peak.

The peak is what a large square matmul achieves here (`torch.matmul`, n×n, the best of a few
repetitions), in the run's dtype and with its thread count: a measured, attainable peak rather
than a datasheet number, so MFU compares the model's step with the best the same kernels reach.
It is measured once per machine and cached in `~/.cache/nlpattn/peak_flops.json` (or
`$XDG_CACHE_HOME/nlpattn/`), keyed by device name, dtype, threads and torch version; a run can
give it instead with `train.peak_flops`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from typing import Callable

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_flops_fn(model: torch.nn.Module) -> Callable[[dict], int] | None:
    """FLOPs of forward + backward of one micro-batch `model(**batch)` for one of our models
    (it has `cfg` and `task`), from the batch's shapes; None for any other model."""
    from nlpattn.cost.analytic import batch_training_flops

    cfg, task = getattr(model, "cfg", None), getattr(model, "task", None)
    if not hasattr(cfg, "body") or not isinstance(task, str):
        return None
    num_labels = getattr(model, "num_labels", None) or 2
    return lambda batch: batch_training_flops(cfg, task, batch, num_labels)


def device_name(device: torch.device | str = "cpu") -> str:
    """The GPU's name, or the CPU's model name."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from nlpattn.train.runtime import cpu_model

    return cpu_model()


def matmul_peak_flops(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                      n: int | None = None, reps: int = 3, min_seconds: float = 0.2) -> float:
    """Best FLOP/s of an n×n @ n×n matmul (2·n³ FLOPs; n = 2048 on CPU, 8192 on GPU) over `reps`
    or more timed repetitions (until `min_seconds` have passed), after one warm-up; current threads."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)
    best, spent, done = float("inf"), 0.0, 0
    while done < reps or spent < min_seconds:
        _sync(device)
        t = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        elapsed = time.perf_counter() - t
        best, spent, done = min(best, elapsed), spent + elapsed, done + 1
    return 2 * n ** 3 / max(best, 1e-12)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cache_path() -> Path:
    """Where measured peaks are kept: $XDG_CACHE_HOME/nlpattn/peak_flops.json (~/.cache by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "nlpattn" / "peak_flops.json"


def cache_key(precision: str, device: torch.device | str = "cpu", threads: int | None = None) -> str:
    """The cache key: device name | precision | threads (CPU) | torch version."""
    device = torch.device(device)
    threads = (threads or torch.get_num_threads()) if device.type == "cpu" else None
    parts = [device_name(device), precision] + ([f"{threads} threads"] if threads else []) + [f"torch {torch.__version__}"]
    return " | ".join(parts)


def peak_flops(precision: str, device: torch.device | str = "cpu") -> tuple[float, str]:
    """(peak FLOP/s, 'cached' | 'measured') for `precision` (fp32 | bf16 | fp16) on `device`,
    with the current torch threads: from the cache, else measured now and cached."""
    from nlpattn.fileio import atomic_write_json

    key, path = cache_key(precision, device), cache_path()
    cache = _read_cache(path)
    if isinstance(cache.get(key), (int, float)) and cache[key] > 0:
        return float(cache[key]), "cached"
    value = matmul_peak_flops(DTYPES[precision], device)
    try:
        atomic_write_json(path, {**_read_cache(path), key: value})
    except Exception:  # noqa: BLE001 - an unwritable cache only costs a new measurement next run
        pass
    return value, "measured"


def run_peak(given: float | None, precision: str, device: torch.device | str, needed: bool = True
             ) -> tuple[float, str] | None:
    """A run's (peak FLOP/s, source): `train.peak_flops` if given, else `peak_flops` when the run
    can count its FLOPs (`needed`), else None."""
    if given is not None:
        return float(given), "train.peak_flops"
    return peak_flops(precision, device) if needed else None


def mfu_fields(flops: float | None, tokens: float, seconds: float, peak: float | None) -> dict:
    """{"flops_per_token", "mfu"} of `flops` (None = not known) over `tokens` in `seconds` on a
    `peak` FLOP/s device (all processes); None where it cannot be said."""
    known = flops is not None and tokens > 0
    return {"flops_per_token": flops / tokens if known else None,
            "mfu": flops / seconds / peak if known and peak and seconds > 0 else None}


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

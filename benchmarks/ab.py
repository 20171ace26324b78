"""A/B timing in one process: blocks of steps alternate between variants, so the host's drift
between processes (20-30 % per round on a shared machine) cancels out of the ratio."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, ContextManager

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402


def alternate(step: Callable[[], None], variants: dict[str, Callable[[], ContextManager]],
              blocks: int, per_block: int) -> dict[str, float]:
    """Median ms of step() under each variant's context, blocks in turn (one untimed step per block)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for block in range(blocks):
        name = names[block % len(names)]
        with variants[name]():
            step()
            for _ in range(per_block):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def model_step(name: str, a: argparse.Namespace, train: bool) -> tuple[torch.nn.Module, Callable[[], None]]:
    """(model, step) of a train_throughput.py model: a training step (forward, backward, fused AdamW)
    or an inference pass, under bf16 autocast when `a.dtype` is bf16."""
    torch.manual_seed(0)
    model = tt.build(name, a).train(train)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch = tt.make_batch(tt.objective_of(name), a, torch.device("cpu"))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=getattr(a, "dtype", "fp32") == "bf16")

    def step() -> None:
        if not train:
            with torch.inference_mode(), autocast:
                model(input_ids=batch["input_ids"])
            return
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, step

"""A/B timing in one process: blocks of steps alternate between variants, so the host's drift
between processes (20-30 % per round on a shared machine) cancels out of the ratio."""
from __future__ import annotations

import statistics
import time
from typing import Callable, ContextManager


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


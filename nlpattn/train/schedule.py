"""Learning-rate schedules (linear warm-up, then cosine / linear decay or constant) and AdamW
parameter groups (no weight decay on biases, norms and embeddings)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from nlpattn.config import TrainConfig
from nlpattn.errors import ConfigError


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Warm-up length in optimizer steps: `warmup_ratio * total` when set, else `warmup_steps`."""
    if cfg.warmup_ratio is not None:
        if not 0.0 <= cfg.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
        return int(round(cfg.warmup_ratio * total_steps))
    if cfg.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0, got {cfg.warmup_steps}")
    return cfg.warmup_steps


class BudgetClock:
    """The fraction of the wall-clock budget (`train.max_minutes`) used so far; the Trainer sets
    it, with one value agreed by every process, before each scheduler step."""

    def __init__(self) -> None:
        self.fraction = 0.0


def _decayed(kind: str, progress: float, min_ratio: float) -> float:
    """The factor after warm-up at `progress` (0 → 1) of the decay."""
    if kind == "constant":
        return 1.0
    progress = min(1.0, max(0.0, progress))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * decay


def lr_multiplier(kind: str, warmup: int, total: int, min_ratio: float,
                  clock: BudgetClock | None = None) -> Callable[[int], float]:
    """f(step) → factor on the peak lr: linear warm-up over `warmup` steps, then `kind` decay
    (cosine | linear | constant) from 1 down to `min_ratio` at `total` steps — or, given a
    `clock`, at the end of the wall-clock budget (the lower of warm-up ramp and decay)."""
    if kind not in ("cosine", "linear", "constant"):
        raise ConfigError(f"train.schedule must be cosine, linear or constant; got '{kind}'")

    def by_steps(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return _decayed(kind, (step - warmup) / max(1, total - warmup), min_ratio)

    def by_clock(step: int) -> float:
        ramp = (step + 1) / warmup if step < warmup else 1.0
        return min(ramp, _decayed(kind, clock.fraction, min_ratio))

    return by_steps if clock is None else by_clock


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
                    clock: BudgetClock | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR implementing `train.schedule` with `train.warmup_*` and `train.min_lr`; with
    `train.decay_over=minutes`, the decay follows `clock` (the budget used) instead of the step."""
    min_ratio = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    f = lr_multiplier(cfg.schedule, warmup_steps(cfg, total_steps), total_steps, min_ratio, clock)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def budget_clock(cfg: TrainConfig) -> BudgetClock | None:
    """A BudgetClock when `train.decay_over=minutes` (which needs `train.max_minutes`), else None."""
    if cfg.decay_over not in ("steps", "minutes"):
        raise ConfigError(f"train.decay_over must be steps or minutes; got '{cfg.decay_over}'")
    if cfg.decay_over == "steps":
        return None
    if not cfg.max_minutes or cfg.max_minutes <= 0:
        raise ConfigError("train.decay_over=minutes needs train.max_minutes > 0 (the budget the decay ends with)")
    if cfg.warmup_ratio is not None:
        raise ConfigError("train.warmup_ratio is a share of max_steps; with train.decay_over=minutes set train.warmup_steps")
    return BudgetClock()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices, and undecayed biases / norm weights / embeddings."""
    no_decay_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # shared (tied) parameters appear once
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in no_decay_ids else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups` with the betas / eps / lr / weight decay of `cfg`."""
    if cfg.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {cfg.lr}")
    groups = param_groups(model, cfg.weight_decay)
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    try:  # one fused kernel per tensor: ~5x faster steps than the per-tensor loop on CPU
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.AdamW(groups, **kwargs)

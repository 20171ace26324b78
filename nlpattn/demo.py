"""`make demo`: the main job end to end on the bundled real data, showing each stage.

Stages (each prints what it did and where its output is):
  1. models   — build each configs/model/*.yaml model, print parameters and forward FLOPs
"""
from __future__ import annotations

import sys
from pathlib import Path

from nlpattn.config import load_config


def describe_model(config_path: str | Path, overrides: list[str] | None = None,
                   seq_len: int = 128) -> dict:
    """Build the model a config describes; return its parameter count and one-forward FLOPs."""
    from nlpattn.cost.measure import model_forward_flops
    from nlpattn.models import build_model

    cfg = load_config(config_path, overrides)
    task = {"encoder": "mlm", "decoder": "clm", "encoder-decoder": "seq2seq"}[cfg.model.arch]
    model = build_model(cfg.model, task).eval()
    seq_len = min(seq_len, cfg.model.max_len)
    return {"config": str(config_path), "task": task, "params": model.num_parameters(),
            "seq_len": seq_len, "forward_flops": model_forward_flops(model, 1, seq_len)}


def print_model_table(rows: list[dict]) -> None:
    """Print a small table of models, their size and cost."""
    print(f"{'config':45s} {'task':8s} {'params':>12s} {'GFLOPs/fwd':>11s}  (batch 1 × seq_len)")
    for r in rows:
        print(f"{r['config']:45s} {r['task']:8s} {r['params']:12,d} {r['forward_flops'] / 1e9:11.3f}"
              f"  (1 × {r['seq_len']})")


def stage_models() -> None:
    """Stage 1: every shipped model config, its parameter count and forward FLOPs."""
    print("== 1. models: parameters and FLOPs of one forward pass (FlopCounterMode) ==")
    rows = [describe_model(p) for p in sorted(Path("configs/model").glob("*.yaml"))]
    print_model_table(rows)


def cli_info(args) -> int:
    """`nlpattn info --config X [k=v]`: build the model, print its parameters and FLOPs."""
    from nlpattn.errors import ConfigError

    if not args.config:
        raise ConfigError("info needs --config CONFIG.yaml")
    print_model_table([describe_model(args.config, args.overrides)])
    return 0


def main() -> int:
    """Run every demo stage in order."""
    stage_models()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`nlpattn cost`: run the Table 1 sweep and write runs/cost/table1.md, table1.json and PNGs;
`nlpattn cost compare`: the equal-budget training comparison (nlpattn.cost.compare)."""
from __future__ import annotations

import difflib
import json
import time
from pathlib import Path

import torch

from nlpattn.config import Config, CostConfig, load_config
from nlpattn.cost.analytic import LAYER_KINDS
from nlpattn.cost.markdown import table1_markdown
from nlpattn.errors import ConfigError
from nlpattn.fileio import atomic_write_json, atomic_write_text


def validate_cost(c: CostConfig, source: str) -> None:
    """Reject cost settings that cannot be measured, naming the key."""
    for kind in c.layers:
        if kind not in LAYER_KINDS:
            close = difflib.get_close_matches(kind, LAYER_KINDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: key 'cost.layers' has unknown layer '{kind}'{hint}; "
                              f"choose from {', '.join(LAYER_KINDS)}")
    if not c.layers or not c.lengths or min(c.lengths) < 2:
        raise ConfigError(f"{source}: keys 'cost.layers' and 'cost.lengths' must be non-empty, lengths >= 2")
    for d in [c.d_model, *c.d_models]:
        if d % c.n_heads:
            raise ConfigError(f"{source}: key 'cost.d_model(s)' value {d} is not divisible by cost.n_heads={c.n_heads}")
    if c.repeats < 1 or c.warmup < 0 or c.batch_size < 1 or c.window < 1 or c.kernel_size < 2:
        raise ConfigError(f"{source}: keys 'cost.repeats', 'cost.batch_size', 'cost.window' must be >= 1, "
                          f"'cost.kernel_size' >= 2, 'cost.warmup' >= 0")
    if (c.dilation or c.kernel_size) < 2:
        raise ConfigError(f"{source}: key 'cost.dilation' must be >= 2 (the dilated conv's base)")
    if c.device not in ("cpu", "cuda") or (c.device == "cuda" and not torch.cuda.is_available()):
        raise ConfigError(f"{source}: key 'cost.device' must be cpu, or cuda on a machine with a GPU; "
                          f"got '{c.device}'")


def write_table1(results: dict, out_dir: Path, command: str) -> list[Path]:
    """Write table1.json, table1.md and the PNG plots into out_dir."""
    from nlpattn.cost.plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    results["command"] = command
    atomic_write_json(out_dir / "table1.json", results)
    pngs = write_plots(results, out_dir)
    atomic_write_text(out_dir / "table1.md", table1_markdown(results, [p.name for p in pngs]))
    return [out_dir / "table1.md", out_dir / "table1.json", *pngs]


def run_cost(cfg: Config, source: str, command: str) -> list[Path]:
    """Validate, measure, and write the Table 1 outputs into cfg.output_dir."""
    from nlpattn.cost.sweep import run_table1

    validate_cost(cfg.cost, source)
    start = time.perf_counter()
    print(f"nlpattn cost: measuring {len(cfg.cost.layers)} layer kinds × {len(cfg.cost.lengths)} lengths "
          f"+ {len(cfg.cost.d_models)} widths on {cfg.cost.device}", flush=True)
    results = run_table1(cfg.cost, log=lambda line: print(line, flush=True), model=cfg.model)
    results["wall_s"] = time.perf_counter() - start
    paths = write_table1(results, Path(cfg.output_dir), command)
    print(f"nlpattn cost: done in {results['wall_s']:.0f} s; wrote " + ", ".join(str(p) for p in paths))
    return paths


def cli_main(args) -> int:
    """`nlpattn cost [compare] --config X [k=v ...]`."""
    source = args.config or "<defaults>"
    cfg = load_config(args.config, args.overrides)
    command = " ".join(["nlpattn cost", *([args.action] if args.action else []),
                        *([f"--config {args.config}"] if args.config else []), *args.overrides])
    if args.action == "compare":
        from nlpattn.cost.compare import run_compare

        run_compare(cfg, args.config, command, args.overrides)
        return 0
    if args.action is not None:
        raise ConfigError(f"cost: unknown action '{args.action}' (use `nlpattn cost` or `nlpattn cost compare`)")
    run_cost(cfg, source, command)
    return 0


def load_results(path: str | Path) -> dict:
    """Read a table1.json written by `nlpattn cost`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))

"""The Table 1 experiment: every layer kind over a sweep of n (fixed d) and of d (fixed n).

For each (layer, n, d) we record analytic and counted FLOPs, forward and forward+backward
time, peak and activation memory, and the sequential-op depth; for small n the path length
from input 0 to output n-1; then log-log exponents and attention/recurrence crossovers.
"""
from __future__ import annotations

import dataclasses
import platform
from typing import Callable

import torch

from nlpattn.config import CostConfig, ModelConfig
from nlpattn.cost import analytic
from nlpattn.cost.analytic import LayerSpec
from nlpattn.cost.fit import crossover, fit_tail
from nlpattn.cost.layers import build_layer, countable
from nlpattn.cost.measure import (count_flops, forward_fn, median_seconds, peak_memory_bytes,
                                  saved_tensor_bytes, train_fn)
from nlpattn.cost.paths import measured_path_length, sequential_ops

ATTENTION_KINDS = ("self-attention", "self-attention-math")
RECURRENT_KINDS = ("lstm", "gru")
FIT_KEYS = ("flops_analytic", "time_fwd_s", "time_train_s", "mem_fwd_bytes", "mem_train_bytes", "saved_bytes")


def layer_spec(cfg: CostConfig, kind: str, d_model: int | None = None,
               model: ModelConfig | None = None) -> LayerSpec:
    """The LayerSpec of `kind` under the cost config (d_model overrides cfg.d_model); conv kinds
    carry the CNN gates that `model` (model.se, model.spatial, model.spatial_kernel) switches on."""
    conv = kind in ("conv", "dilated-conv") and model is not None
    return LayerSpec(kind, d_model or cfg.d_model, n_heads=cfg.n_heads, window=cfg.window,
                     kernel_size=cfg.kernel_size, dilation=cfg.dilation or cfg.kernel_size,
                     causal=cfg.causal, se=conv and model.se, spatial=conv and model.spatial,
                     spatial_kernel=model.spatial_kernel if conv else 7)


def measure_point(spec: LayerSpec, n: int, cfg: CostConfig, device: torch.device) -> dict:
    """Every measured and analytic quantity of one layer at sequence length n."""
    torch.manual_seed(0)
    layer = build_layer(spec)
    x_cpu = torch.randn(cfg.batch_size, n, spec.d_model)
    with countable(layer):
        counted = count_flops(layer, x_cpu)
    depth, ops = sequential_ops(layer, x_cpu, spec.kind)
    row = {"n": n, "d": spec.d_model, "flops_analytic": analytic.forward_flops(spec, n, cfg.batch_size),
           "flops_counted": counted, "flops_counted_fast": count_flops(layer, x_cpu),
           "seq_ops": depth, "ops": ops}
    layer, x = layer.to(device), x_cpu.to(device)
    fwd, train = forward_fn(layer, x), train_fn(layer, x)
    row["time_fwd_s"] = median_seconds(fwd, cfg.repeats, cfg.warmup, device)
    row["time_train_s"] = median_seconds(train, cfg.repeats, cfg.warmup, device)
    row["mem_fwd_bytes"] = peak_memory_bytes(fwd, device)
    row["mem_train_bytes"] = peak_memory_bytes(train, device)
    row["saved_bytes"] = saved_tensor_bytes(layer, x.detach().requires_grad_(True))
    return row


def path_lengths(spec: LayerSpec, max_n: int) -> list[dict]:
    """Measured vs derived path length for n = 8, 16, … ≤ max_n (CPU, float64). Which output
    depends on which input does not depend on the width, so the layers are 4·heads wide."""
    spec = dataclasses.replace(spec, d_model=4 * spec.n_heads)
    rows, n = [], 8
    while n <= max_n:
        measured = measured_path_length(spec, n)
        rows.append({"n": n, "measured": measured, "expected": analytic.expected_path_length(spec, n),
                     "closed_form": analytic.causal_path_length(spec, n) if spec.causal else None})
        n *= 2
    return rows


def fits(rows: list[dict], x_key: str, x_from: int | None) -> dict:
    """Log-log exponents of every FIT_KEYS quantity against rows[x_key]."""
    out = {}
    xs = [r[x_key] for r in rows]
    for key in FIT_KEYS:
        ys = [r[key] for r in rows]
        try:
            out[key] = dataclasses.asdict(fit_tail(xs, ys, x_from))
        except ValueError:  # e.g. zero memory measured at every point
            out[key] = None
    return out


def crossovers(layers: dict, x_key: str, sweep: str, rising: str) -> dict:
    """For each attention × recurrent pair, where the `rising` one (attention | recurrent) first
    costs more than the other: in n attention overtakes, in d the recurrent layer does."""
    out = {}
    for a in (k for k in ATTENTION_KINDS if k in layers):
        for r in (k for k in RECURRENT_KINDS if k in layers):
            up, down = (layers[a][sweep], layers[r][sweep]) if rising == "attention" else \
                (layers[r][sweep], layers[a][sweep])
            xs = [row[x_key] for row in up]
            out[f"{a} vs {r}"] = {key: crossover(xs, [row[key] for row in up], [row[key] for row in down])
                                  for key in ("flops_analytic", "time_fwd_s", "time_train_s", "mem_train_bytes")}
    return out


def environment(cfg: CostConfig, device: torch.device) -> dict:
    """Where and how the numbers were measured."""
    env = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _sweep(cfg: CostConfig, kinds: list[str], points: list[tuple[int, int]], device: torch.device,
           log: Callable[[str], None], model: ModelConfig | None = None) -> dict[str, list[dict]]:
    """Measure every kind at every (n, d); kinds are interleaved at each point so that a burst
    of load from other processes lands on all of them alike."""
    rows: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for n, d in points:
        log(f"  n={n:<6d} d={d:<5d} " + " ".join(kinds))
        for kind in kinds:
            rows[kind].append(measure_point(layer_spec(cfg, kind, d, model), n, cfg, device))
    return rows


def _layer_entry(cfg: CostConfig, kind: str, by_n: list[dict], by_d: list[dict],
                 model: ModelConfig | None = None) -> dict:
    """Everything table1.json stores about one layer kind."""
    spec = layer_spec(cfg, kind, model=model)
    seq = [(r["n"], r["seq_ops"]) for r in by_n]
    per_token = (seq[-1][1] - seq[0][1]) / (seq[-1][0] - seq[0][0]) if len(seq) > 1 else 0.0
    return {"spec": dataclasses.asdict(spec), "params": analytic.parameters(spec),
            "params_counted": sum(p.numel() for p in build_layer(spec).parameters()),
            "paper": dict(zip(("complexity", "sequential", "path"), analytic.paper_row(kind))),
            "length_sweep": by_n, "width_sweep": by_d, "paths": path_lengths(spec, cfg.max_path_n),
            "fits_n": fits(by_n, "n", cfg.fit_from), "fits_d": fits(by_d, "d", None),
            "seq_ops_per_token": per_token}


def run_table1(cfg: CostConfig, log: Callable[[str], None] = print, model: ModelConfig | None = None) -> dict:
    """Run the whole sweep; returns the results dictionary that table1.json stores. `model`
    supplies the CNN gates (model.se, model.spatial) of the conv layers."""
    device = torch.device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    by_n = _sweep(cfg, cfg.layers, [(n, cfg.d_model) for n in cfg.lengths], device, log, model)
    by_d = _sweep(cfg, cfg.layers, [(cfg.fixed_length, d) for d in cfg.d_models], device, log, model)
    log("  path lengths (gradients, float64)")
    layers = {kind: _layer_entry(cfg, kind, by_n[kind], by_d[kind], model) for kind in cfg.layers}
    return {"config": dataclasses.asdict(cfg), "environment": environment(cfg, device), "layers": layers,
            "crossover_n": crossovers(layers, "n", "length_sweep", rising="attention"),
            "crossover_d": crossovers(layers, "d", "width_sweep", rising="recurrent")}

"""table1.md: the paper's Table 1 next to ours, crossovers, per-n tables, and how we measured."""
from __future__ import annotations

from nlpattn.cost.analytic import sequential_ops_order
from nlpattn.cost.plots import STYLE

MiB = 2 ** 20

NOTES = """## How each number was measured

- **One layer** is the sequence-mixing sublayer alone, built from the code the bodies train
  with: `MultiHeadAttention` with its QKV/output projections (SDPA fast path, or the math
  path that materialises the n² scores), one unidirectional `nn.LSTM`/`nn.GRU` layer with d
  units, the CNN body's `ConvUnit` (conv d → 2d channels, GLU). *Transformer block* adds the
  feed-forward sublayer (d_ff = 4d) and LayerNorms. *restricted (mask)* is
  `MultiHeadAttention(window=r)`: it masks, so it still computes all n² scores;
  *restricted (banded)* computes only the r (+1) scores per query (`nlpattn.cost.layers`).
- **FLOPs** count a multiply-add as 2 and only matrix products, as FlopCounterMode does.
  FlopCounterMode sees 0 FLOPs in two fast CPU kernels: SDPA
  (`aten._scaled_dot_product_flash_attention_for_cpu`, the n² part) and the fused oneDNN
  LSTM (`aten.mkldnn_rnn_layer`). So the counted column runs the same function on a path it
  can see: attention on the math path (bmm), the LSTM with oneDNN off (per-step addmm). The
  "fast path counted" column shows what it reports on the kernels we time.
- **Time**: median of `repeats` calls after `warmup` calls; forward under `no_grad`;
  forward+backward = forward + `torch.autograd.grad` of a fixed random output gradient with
  respect to the input and every weight. Shared, busy CPU cores make absolute times noisy
  (`cost.threads: 1` avoids thread barriers stalling on busy neighbours); exponents and
  ratios are what to read.
- **Peak memory**: on CUDA the allocator's peak; on CPU the maximum running sum of every
  allocation and free the profiler records through PyTorch's CPU allocator
  (`profile_memory=True`), in time order. Inputs and weights are excluded (allocated
  before); forward+backward includes the weight gradients (a floor constant in n, e.g.
  4d² floats for attention). *Saved* = bytes of the tensors autograd keeps for backward
  (`saved_tensors_hooks`), parameters and the input excluded.
- **Sequential operations**: the critical path of the aten ops a forward pass dispatches
  (an op is one step deeper than the deepest op that produced its inputs; views are free).
  A fused kernel counts as one op, so the LSTM is counted with oneDNN off, as above.
- **Path length**: fresh layers are stacked (float64) until d out[n−1] / d in[0] ≠ 0. For
  the RNNs one layer already connects them, so we count recurrent steps: the gradient may
  cross only the last s state transitions (the state is detached before), and we report the
  smallest s that connects them. *expected* is derived from each layer's connectivity.
- **Exponents**: least squares of log(cost) on log(n) over the largest half of the lengths
  (fixed per-call overheads dominate small n). **Crossover**: the first n at which the
  attention layer costs more than the recurrent one, interpolated on the log-log scale.
"""


def _ms(s: float) -> str:
    return f"{s * 1e3:.3g}"


def _mib(b: float) -> str:
    return f"{b / MiB:.3g}"


def _exp(fit: dict | None) -> str:
    return "–" if fit is None else f"{fit['exponent']:.2f}"


def _label(kind: str) -> str:
    return STYLE.get(kind, ("", "", kind))[2]


def _gates(entry: dict) -> str:
    """' + SE + spatial gate (k=7)' for conv layers measured with the CNN body's gates."""
    spec = entry.get("spec", {})
    se = " + SE" if spec.get("se") else ""
    return se + (f" + spatial gate (k={spec.get('spatial_kernel')})" if spec.get("spatial") else "")


def _header(results: dict) -> list[str]:
    c, env = results["config"], results["environment"]
    threads = f"{env['threads']} thread{'s' if env['threads'] > 1 else ''}"
    where = env.get("gpu", f"CPU {env['cpu']}, {threads}")
    return [
        "# Table 1 of “Attention Is All You Need”, measured", "",
        f"Command: `{results.get('command', 'nlpattn cost')}`  ",
        f"torch {env['torch']} · {where} · fp32 · d = {c['d_model']} · batch {c['batch_size']} · "
        f"{'causal' if c['causal'] else 'bidirectional'} · heads {c['n_heads']} · window r = {c['window']} · "
        f"kernel k = {c['kernel_size']} · dilation base {c['dilation'] or c['kernel_size']} · "
        f"median of {c['repeats']} after {c['warmup']} warm-up · {results.get('wall_s', 0):.0f} s", "",
    ]


def side_by_side(results: dict) -> list[str]:
    """The paper's three columns next to our measured ones."""
    lengths = results["config"]["lengths"]
    lines = ["## Side by side: the paper's Table 1 | measured here", "",
             "| Layer | Paper: complexity / layer | FLOPs ∝ n^p | time ∝ n^p (fwd / fwd+bwd) | "
             "peak mem ∝ n^p (fwd+bwd) | Paper: sequential ops | sequential ops, n = "
             f"{lengths[0]} → {lengths[-1]} (per token) | Paper: max path length | path length, n = "
             + "/".join(str(p["n"]) for p in next(iter(results["layers"].values()))["paths"]) + " |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, e in results["layers"].items():
        f, sweep, paths = e["fits_n"], e["length_sweep"], e["paths"]
        unit = " steps" if kind in ("lstm", "gru") else " layers"
        measured = "/".join("∞" if p["measured"] is None else str(p["measured"]) for p in paths)
        ok = "= expected" if all(p["measured"] == p["expected"] for p in paths) else "≠ expected!"
        lines.append(
            f"| {_label(kind)}{_gates(e)} | {e['paper']['complexity']} | {_exp(f['flops_analytic'])} | "
            f"{_exp(f['time_fwd_s'])} / {_exp(f['time_train_s'])} | {_exp(f['mem_train_bytes'])} | "
            f"{e['paper']['sequential']} | {sweep[0]['seq_ops']} → {sweep[-1]['seq_ops']} "
            f"({e['seq_ops_per_token']:.2g}/token, {sequential_ops_order(kind)}) | {e['paper']['path']} | "
            f"{measured}{unit} ({ok}) |")
    return lines + [""]


def _crossover_cell(c: dict) -> str:
    lo, hi = c["range"]
    if c["status"] == "crossed":
        return f"≈ {c['x']:.0f} (between {lo} and {hi})"
    return f"< {lo}" if c["status"] == "below-range" else f"> {hi} (not reached)"


def crossover_table(results: dict) -> list[str]:
    """Where one attention layer starts to cost more than one recurrent layer, and in d."""
    c = results["config"]
    lines = [f"## Crossover: where attention becomes costlier than recurrence (paper: n ≈ d = {c['d_model']})",
             "", "| pair | FLOPs (analytic) | forward time | forward+backward time | peak memory (fwd+bwd) |",
             "|---|---|---|---|---|"]
    for pair, cells in results["crossover_n"].items():
        lines.append(f"| n: {pair} | " + " | ".join(_crossover_cell(cells[k]) for k in
                     ("flops_analytic", "time_fwd_s", "time_train_s", "mem_train_bytes")) + " |")
    for pair, cells in results["crossover_d"].items():
        lines.append(f"| d at n = {c['fixed_length']}: {pair.split(' vs ')[1]} overtakes {pair.split(' vs ')[0]} | "
                     + " | ".join(_crossover_cell(cells[k]) for k in
                                  ("flops_analytic", "time_fwd_s", "time_train_s", "mem_train_bytes")) + " |")
    return lines + ["", "Analytic FLOPs per layer (forward): attention 8nd² + 4n²d (projections + QKᵀ, AV), "
                        "LSTM 16nd², GRU 12nd², conv 4knd² — so the FLOP crossover is n = 2d (LSTM), n = d (GRU).", ""]


def per_n_table(results: dict, title: str, fmt, sweep: str = "length_sweep", x_key: str = "n") -> list[str]:
    """One metric: a row per layer kind, a column per n (or d)."""
    first = next(iter(results["layers"].values()))[sweep]
    xs = [r[x_key] for r in first]
    lines = [f"### {title}", "", f"| layer \\ {x_key} | " + " | ".join(str(x) for x in xs) + " |",
             "|---|" + "---|" * len(xs)]
    for kind, e in results["layers"].items():
        lines.append(f"| {_label(kind)} | " + " | ".join(fmt(r) for r in e[sweep]) + " |")
    return lines + [""]


def detail_tables(results: dict) -> list[str]:
    """Every measured number of the n sweep and the d sweep."""
    d, n = results["config"]["d_model"], results["config"]["fixed_length"]
    lines = [f"## Measurements over n (d = {d})", ""]
    lines += per_n_table(results, "Forward time (ms)", lambda r: _ms(r["time_fwd_s"]))
    lines += per_n_table(results, "Forward+backward time (ms)", lambda r: _ms(r["time_train_s"]))
    lines += per_n_table(results, "Peak memory, forward (MiB)", lambda r: _mib(r["mem_fwd_bytes"]))
    lines += per_n_table(results, "Peak memory, forward+backward (MiB) / saved for backward (MiB)",
                         lambda r: f"{_mib(r['mem_train_bytes'])} / {_mib(r['saved_bytes'])}")
    lines += per_n_table(results, "Forward GFLOPs: analytic / FlopCounterMode (ratio) / FlopCounterMode on the fast path",
                         lambda r: f"{r['flops_analytic'] / 1e9:.3g} / {r['flops_counted'] / 1e9:.3g} "
                                       f"({r['flops_counted'] / r['flops_analytic']:.3f}) / {r['flops_counted_fast'] / 1e9:.3g}")
    lines += per_n_table(results, "Sequential operations (critical path, aten ops) / all ops",
                         lambda r: f"{r['seq_ops']} / {r['ops']}")
    lines += [f"## Measurements over d (n = {n})", ""]
    lines += per_n_table(results, "Forward+backward time (ms)", lambda r: _ms(r["time_train_s"]),
                         "width_sweep", "d")
    lines += ["| exponent in d | FLOPs | time fwd | time fwd+bwd | peak mem (fwd+bwd) |", "|---|---|---|---|---|"]
    for kind, e in results["layers"].items():
        f = e["fits_d"]
        lines.append(f"| {_label(kind)} | {_exp(f['flops_analytic'])} | {_exp(f['time_fwd_s'])} | "
                     f"{_exp(f['time_train_s'])} | {_exp(f['mem_train_bytes'])} |")
    return lines + [""]


def table1_markdown(results: dict, pngs: list[str]) -> str:
    """The whole table1.md."""
    lines = _header(results) + side_by_side(results) + crossover_table(results)
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in pngs] + [""]
    lines += detail_tables(results) + [NOTES]
    return "\n".join(lines)

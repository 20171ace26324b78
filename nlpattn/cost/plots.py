"""PNG plots of the Table 1 sweep: time, memory and FLOPs against n (and time against d),
log-log, one colour per layer kind, and the fitted power laws with their slopes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

STYLE = {  # kind → (colour, marker, label)
    "self-attention": ("#d62728", "o", "self-attention (SDPA)"),
    "self-attention-math": ("#ff7f0e", "s", "self-attention (math, n² scores)"),
    "transformer-block": ("#8c564b", "P", "Transformer block (attn + FFN)"),
    "restricted": ("#e377c2", "v", "restricted r (mask)"),
    "restricted-banded": ("#9467bd", "^", "restricted r (banded)"),
    "lstm": ("#1f77b4", "D", "LSTM"),
    "gru": ("#17becf", "d", "GRU"),
    "conv": ("#2ca02c", "<", "conv (contiguous)"),
    "dilated-conv": ("#bcbd22", ">", "conv (dilated)"),
}
MiB, GFLOP, MS = 2 ** 20, 1e9, 1e-3


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(kind: str) -> tuple[str, str, str]:
    return STYLE.get(kind, ("#7f7f7f", "x", kind))


def _log_axes(ax, xs: list[int]) -> None:
    """Log-log axes whose x ticks are the measured sizes, written as plain numbers."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off() if len(xs) > 1 else None


def _panel(ax, layers: dict, sweep: str, x_key: str, y_key: str, scale: float, ylabel: str,
           title: str, xlabel: str) -> None:
    for kind, entry in layers.items():
        colour, marker, label = _style(kind)
        pts = [(r[x_key], r[y_key] / scale) for r in entry[sweep] if r[y_key] and r[y_key] > 0]
        if pts:
            ax.plot(*zip(*pts), color=colour, marker=marker, label=label, linewidth=1.5, markersize=5)
    _log_axes(ax, sorted({r[x_key] for e in layers.values() for r in e[sweep]}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)


def _two_panels(results: dict, path: Path, sweep: str, x_key: str, panels: list[tuple], suptitle: str) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.2))
    axes = np.atleast_1d(axes)
    xlabel = "sequence length n (tokens)" if x_key == "n" else "model width d"
    for ax, (y_key, scale, ylabel, title) in zip(axes, panels):
        _panel(ax, results["layers"], sweep, x_key, y_key, scale, ylabel, title, xlabel)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), frameon=False)
    fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _subtitle(results: dict, fixed: str) -> str:
    c, env = results["config"], results["environment"]
    threads = env["threads"]
    where = env.get("gpu", f"CPU, {threads} thread{'s' if threads > 1 else ''}")
    mode = "causal" if c["causal"] else "bidirectional"
    return f"one layer, {fixed}, batch {c['batch_size']}, {mode}, fp32, {where}"


def plot_fits(results: dict, path: Path) -> Path:
    """Measured points and fitted power laws (dashed) with their slopes in the legend."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    for ax, (key, scale, ylabel) in zip(axes, [("time_train_s", MS, "forward+backward time (ms)"),
                                               ("mem_train_bytes", MiB, "peak memory, forward+backward (MiB)")]):
        for kind, entry in results["layers"].items():
            colour, marker, label = _style(kind)
            pts = [(r["n"], r[key] / scale) for r in entry["length_sweep"] if r[key] > 0]
            fit = entry["fits_n"].get(key)
            if not pts or fit is None:
                continue
            ax.plot(*zip(*pts), color=colour, marker=marker, linestyle="none", markersize=5)
            xs = np.geomspace(fit["x_min"], fit["x_max"], 20)
            ax.plot(xs, fit["coefficient"] * xs ** fit["exponent"] / scale, color=colour, linestyle="--",
                    label=f"{label}: slope {fit['exponent']:.2f}")
        _log_axes(ax, sorted({r["n"] for e in results["layers"].values() for r in e["length_sweep"]}))
        ax.set_xlabel("sequence length n (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, title="fit over the largest n (log-log least squares)", title_fontsize=8)
    fig.suptitle("Fitted exponents: cost ∝ n^slope — " + _subtitle(results, f"d = {results['config']['d_model']}"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_flops(results: dict, path: Path) -> Path:
    """Left: analytic FLOPs (lines) with FlopCounterMode's count (hollow markers) on top.
    Right: what FlopCounterMode reports on the fused kernels we time (zeros cannot be drawn)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.6))
    zero = []
    for kind, entry in results["layers"].items():
        colour, marker, label = _style(kind)
        rows = entry["length_sweep"]
        xs = [r["n"] for r in rows]
        left.plot(xs, [r["flops_analytic"] / GFLOP for r in rows], color=colour, label=label, linewidth=1.5)
        left.plot(xs, [r["flops_counted"] / GFLOP for r in rows], color=colour, marker=marker, markersize=8,
                  linestyle="none", markerfacecolor="none")
        fast = [(r["n"], r["flops_counted_fast"] / GFLOP) for r in rows if r["flops_counted_fast"] > 0]
        if fast:
            right.plot(*zip(*fast), color=colour, marker=marker, label=label, linewidth=1.5)
        if len(fast) < len(rows):
            zero.append(label)
    xs = sorted({r["n"] for e in results["layers"].values() for r in e["length_sweep"]})
    for ax in (left, right):
        _log_axes(ax, xs)
        ax.set_xlabel("sequence length n (tokens)")
        ax.set_ylabel("GFLOPs per forward pass")
        ax.grid(True, alpha=0.3)
    left.set_title("analytic formula (lines) vs FlopCounterMode (hollow markers)")
    right.set_title("FlopCounterMode on the fused kernels we time"
                    + (f"\n(0 FLOPs, not drawn: {', '.join(zero)})" if zero else ""), fontsize=10)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), frameon=False)
    fig.suptitle("FLOPs per layer vs n — " + _subtitle(results, f"d = {results['config']['d_model']}"))
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """Write every PNG into out_dir; returns their paths."""
    d, n = results["config"]["d_model"], results["config"]["fixed_length"]
    sub_n, sub_d = _subtitle(results, f"d = {d}"), _subtitle(results, f"n = {n}")
    time_panels = [("time_fwd_s", MS, "time (ms)", "forward"), ("time_train_s", MS, "time (ms)", "forward + backward")]
    paths = [
        _two_panels(results, out_dir / "time_vs_n.png", "length_sweep", "n", time_panels,
                    f"Time per layer vs n (median of repeats) — {sub_n}"),
        _two_panels(results, out_dir / "memory_vs_n.png", "length_sweep", "n",
                    [("mem_fwd_bytes", MiB, "peak memory (MiB)", "forward (no grad)"),
                     ("mem_train_bytes", MiB, "peak memory (MiB)", "forward + backward")],
                    f"Peak memory per layer vs n (inputs and weights excluded) — {sub_n}"),
        plot_flops(results, out_dir / "flops_vs_n.png"),
        plot_fits(results, out_dir / "loglog_fits.png"),
        _two_panels(results, out_dir / "time_vs_d.png", "width_sweep", "d", time_panels,
                    f"Time per layer vs width d — {sub_d}"),
    ]
    return paths

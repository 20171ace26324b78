"""`nlpattn cost compare`: train causal LMs with different bodies (about equal parameter counts)
for the same wall-clock budget on the same data, then plot validation loss against training
time and against training FLOPs, with a markdown table.

Each entry of `cost.compare_runs` is a list of `key=value` overrides applied on top of the
compare config; every run is a normal `run_pretrain` run directory under `output_dir/<body>`,
started fresh (`train.resume=never`) with `train.max_minutes = cost.compare_minutes`.
Training FLOPs per step are counted once with FlopCounterMode (forward + backward of one
batch, attention on the math path and LSTMs unfused so every matmul is seen).
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import torch

from nlpattn.config import Config, load_config, to_dict
from nlpattn.errors import ConfigError
from nlpattn.fileio import atomic_write_json, atomic_write_text


def run_configs(cfg: Config, config_path: str | None, overrides: list[str]) -> list[tuple[str, Config]]:
    """(name, Config) of every compare run: the base config + the entry's overrides."""
    runs, names = [], set()
    if not cfg.cost.compare_runs:
        raise ConfigError("cost.compare_runs: give at least one entry of key=value overrides")
    for entry in cfg.cost.compare_runs:
        extra = shlex.split(entry)
        probe = load_config(config_path, [*overrides, *extra])
        name = probe.model.body if probe.model.body not in names else f"{probe.model.body}-{len(names)}"
        names.add(name)
        fixed = [f"output_dir={Path(cfg.output_dir) / name}", "objective=clm", "train.resume=never",
                 f"train.max_minutes={cfg.cost.compare_minutes}"]
        runs.append((name, load_config(config_path, [*overrides, *extra, *fixed])))
    return runs


def train_step_flops(run_dir: Path) -> tuple[int, int, int]:
    """(training FLOPs of one optimizer step, body parameters, all parameters) of a finished run."""
    from torch.utils.flop_counter import FlopCounterMode

    from nlpattn.cost.layers import countable
    from nlpattn.models import load_model

    model, cfg = load_model(run_dir), load_config(run_dir / "config.yaml")
    ids = torch.zeros(cfg.train.batch_size, cfg.data.block_size, dtype=torch.long)
    with countable(model), FlopCounterMode(display=False) as counter:
        model(ids, labels=ids).loss.backward()
    body = sum(p.numel() for p in model.body.parameters())
    return counter.get_total_flops() * cfg.train.grad_accum, body, model.num_parameters()


def read_events(run_dir: Path) -> list[dict]:
    """The events of a run's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def val_curve(events: list[dict]) -> list[dict]:
    """(step, training seconds, training tokens, val loss) at every evaluation.

    Training seconds come from an event's `elapsed_s` when the Trainer logs one; otherwise they
    are rebuilt from the train events: Σ tokens / tokens_per_s over the log intervals, which
    is the time spent in training steps (evaluation excluded).
    """
    seconds_at, tokens_at, total, tokens = {}, {}, 0.0, 0
    for e in events:
        if e.get("split") == "train" and e.get("tokens_per_s"):
            total += (e["tokens"] - tokens) / e["tokens_per_s"]
            tokens = tokens_at[e["step"]] = e["tokens"]
            seconds_at[e["step"]] = e.get("elapsed_s", total)
    curve = []
    for e in events:
        if e.get("split") == "val" and e.get("loss") is not None:
            last = max((s for s in seconds_at if s <= e["step"]), default=None)  # last train log at or before
            seconds = e.get("elapsed_s", seconds_at[last] if last is not None else 0.0)
            curve.append({"step": e["step"], "seconds": seconds, "loss": e["loss"],
                          "tokens": tokens_at[last] if last is not None else 0})
    return curve


def summarise(name: str, run_dir: Path) -> dict:
    """Everything the comparison reports about one finished run."""
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    flops_step, body_params, params = train_step_flops(run_dir)
    curve = val_curve(read_events(run_dir))
    for point in curve:
        point["flops"] = point["step"] * flops_step
    return {"name": name, "run_dir": str(run_dir), "params": params, "body_params": body_params,
            "steps": summary["steps"], "tokens": summary["tokens"], "wall_s": summary["wall_s"],
            "train_s": summary.get("train_s"), "tokens_per_s": summary.get("tokens_per_s"),
            "flops_per_step": flops_step, "train_flops": flops_step * summary["steps"],
            "final_val_loss": summary.get("final_val_loss"), "final_ppl": summary.get("final_ppl"),
            "stop_reason": summary.get("stop_reason"), "curve": curve}


def run_compare(cfg: Config, config_path: str | None, command: str, overrides: list[str] | None = None) -> dict:
    """Train every compare run, then write compare.md, compare.json and compare.png."""
    from nlpattn.train.pretrain import run_pretrain

    out = Path(cfg.output_dir)
    rows = []
    for name, run_cfg in run_configs(cfg, config_path, overrides or []):
        print(f"nlpattn cost compare: {name}: {cfg.cost.compare_minutes} min → {run_cfg.output_dir}", flush=True)
        run_pretrain(run_cfg)
        rows.append(summarise(name, Path(run_cfg.output_dir)))
    results = {"command": command, "minutes": cfg.cost.compare_minutes, "runs": rows,
               "config": to_dict(cfg), "threads": torch.get_num_threads()}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare.json", results)
    plot_compare(results, out / "compare.png")
    atomic_write_text(out / "compare.md", compare_markdown(results))
    print("\n".join(compare_table(results)), flush=True)
    print(f"nlpattn cost compare: wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}")
    return results


def compare_table(results: dict) -> list[str]:
    """One markdown row per run: size, progress, compute and final validation loss."""
    lines = ["| body | params (body / all) | steps | tokens | tokens/s | train FLOPs / step | train PFLOPs | "
             "final val loss | val ppl | stopped by |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        loss = "–" if r["final_val_loss"] is None else f"{r['final_val_loss']:.4f}"
        ppl = "–" if r["final_ppl"] is None else f"{r['final_ppl']:.2f}"
        lines.append(f"| {r['name']} | {r['body_params'] / 1e6:.2f}M / {r['params'] / 1e6:.2f}M | {r['steps']} | "
                     f"{r['tokens']:,} | {r['tokens_per_s'] or 0:,.0f} | {r['flops_per_step'] / 1e9:.2f} G | "
                     f"{r['train_flops'] / 1e15:.4f} | {loss} | {ppl} | {r['stop_reason']} |")
    return lines


def compare_markdown(results: dict) -> str:
    """compare.md: settings, the table, and the figure."""
    c = results["config"]
    data = ", ".join(c["data"]["train_files"]) or c["data"]["dataset"]
    lines = [f"# Equal-budget training: {results['minutes']} min per body, causal LM", "",
             f"Command: `{results['command']}` · data {data} · block {c['data']['block_size']} · "
             f"batch {c['train']['batch_size']} · d = {c['model']['d_model']} · {results['threads']} thread(s)", ""]
    lines += compare_table(results)
    lines += ["", "![validation loss vs training time and FLOPs](compare.png)", "",
              "Training time excludes evaluation; FLOPs = steps × counted FLOPs of one training step "
              "(forward + backward, FlopCounterMode on the math-attention / unfused-LSTM path).", ""]
    return "\n".join(lines)


COLOURS = {"transformer": ("#d62728", "o"), "lstm": ("#1f77b4", "D"), "gru": ("#17becf", "d"),
           "cnn": ("#2ca02c", "<"), "cnn-se": ("#bcbd22", ">")}


def plot_compare(results: dict, path: Path, title: str | None = None) -> Path:
    """One figure, two panels: validation loss vs training time and vs training FLOPs.

    `results["runs"]`: name, body_params, params and a curve of {seconds, flops, loss} points."""
    from nlpattn.cost.plots import _plt

    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for r in results["runs"]:
        colour, marker = COLOURS.get(r["name"], COLOURS.get(r["name"].split("-")[0], ("#7f7f7f", "x")))
        pts, label = r["curve"], f"{r['name']} (body {r['body_params'] / 1e6:.2f}M, all {r['params'] / 1e6:.2f}M params)"
        left.plot([p["seconds"] / 60 for p in pts], [p["loss"] for p in pts], marker=marker, color=colour, label=label)
        right.plot([p["flops"] / 1e12 for p in pts], [p["loss"] for p in pts], marker=marker, color=colour, label=label)
    left.set_xlabel("training time (minutes, evaluation excluded)")
    right.set_xlabel("training compute (TFLOPs, forward + backward)")
    left.set_ylabel("validation loss (nats / token)")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    left.legend()
    fig.suptitle(title or f"Causal LM, equal wall-clock budget ({results['minutes']} min per body), same data")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

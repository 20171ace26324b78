"""The race's report: race.json, race.md and PNG figures in output_dir, every number read from
the run directories the race made (summary.json, metrics.jsonl, eval/<task>.json)."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import torch

from nlpattn.config import Config, to_dict
from nlpattn.cost.compare import plot_compare, read_events, val_curve
from nlpattn.fileio import atomic_write_json, atomic_write_text
from nlpattn.race.plan import TASK_METRIC, Job

IMDB_TRAIN = 25_000  # reviews in IMDB's train split: the extrapolation target of seconds per epoch


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def cpu_line() -> str:
    """The CPU model and whether it has native bf16 (avx512_bf16 / amx_bf16), or the GPU's name."""
    from nlpattn.train.runtime import cpu_flags, cpu_model

    flags = cpu_flags()
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    line = f"{cpu_model()}, {os.cpu_count()} cores, " + (f"{' + '.join(bf16)}" if bf16 else "no avx512_bf16/amx")
    if torch.cuda.is_available():
        line += f"; GPU {torch.cuda.get_device_name(0)}"
    return line


def pretrain_entry(run_dir: Path) -> dict:
    """Validation loss, speed, peak memory, FLOPs/token and the loss curve of one pretraining run."""
    s = _json(run_dir / "summary.json")
    fpt = s.get("flops_per_token") or 0.0
    curve = [[p["seconds"], p["tokens"] * fpt, p["loss"]] for p in val_curve(read_events(run_dir))]
    return {"val_loss": s.get("final_val_loss"), "tokens_per_s": s.get("tokens_per_s"), "steps": s["steps"],
            "tokens": s["tokens"], "train_s": s.get("train_s"), "peak_rss_mb": s.get("peak_mem_mib"),
            "flops_per_token": s.get("flops_per_token"), "curve": curve, "run_dir": str(run_dir)}


def task_entry(key: str, jobs: list[Job]) -> dict:
    """Scores over seeds (mean ± std) and the cost of one body's fine-tuning runs on one task."""
    task = jobs[0].cfg.task
    metric = TASK_METRIC[task]
    evals = [_json(j.run_dir / "eval" / f"{task}.json") for j in jobs]
    sums = [_json(j.run_dir / "summary.json") for j in jobs]
    scores = [next(iter(e["metrics"].values()))[metric] for e in evals]
    epochs = jobs[0].cfg.train.epochs or 1.0
    # an epoch cut short by train.max_minutes: scaled to the whole epoch by steps done / steps planned
    per_epoch = statistics.mean(s["train_s"] / epochs * _planned(j) / max(1, s["steps"]) for s, j in zip(sums, jobs))
    n_train = sums[0].get("train_examples")
    entry = {"metric": metric, "scores": scores, "mean": statistics.mean(scores),
             "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
             "train_tokens_per_s": statistics.mean(s["tokens_per_s"] for s in sums),
             "peak_rss_mb": max(s["peak_mem_mib"] for s in sums), "seconds_per_epoch": per_epoch,
             "train_examples": n_train, "eval_examples": _eval_count(jobs[0]), "seeds": [j.seed for j in jobs],
             "steps": [s["steps"] for s in sums],
             "capped": sum(s.get("stop_reason") == "max_minutes" for s in sums)}  # runs cut by train.max_minutes
    if task == "imdb" and n_train:
        entry["seconds_per_epoch_25k_extrapolated"] = per_epoch * IMDB_TRAIN / n_train
    return entry


def _planned(job: Job) -> int:
    """The steps a fine-tuning run planned (train.max_steps of its resolved config.yaml)."""
    from nlpattn.config import load_config

    return load_config(job.run_dir / "config.yaml").train.max_steps


def _eval_count(job: Job) -> int | None:
    """Rows in the run's dev predictions file (the evaluated subset)."""
    files = sorted((job.run_dir / "predictions").glob(f"{job.cfg.task}-*.tsv"))
    return sum(1 for _ in files[0].open(encoding="utf-8")) - 1 if files else None


def collect(cfg: Config, sizes: dict, sweep: dict, lrs: dict, inits: dict, jobs: list[Job]) -> dict:
    """{body: {...}} in race.json's shape."""
    bodies = {}
    for body in cfg.race.bodies:
        mine = [j for j in jobs if j.body == body]
        keys = list(dict.fromkeys(j.key for j in mine))
        bodies[body] = {**sizes[body], "lr": lrs[body], "sweep": {f"{lr:g}": v for lr, v in sweep[body].items()},
                        "pretrain": pretrain_entry(Path(inits[body])),
                        "tasks": {k: task_entry(k, [j for j in mine if j.key == k]) for k in keys}}
    return bodies


def write_report(cfg: Config, command: str, sizes: dict, sweep: dict, lrs: dict, inits: dict,
                 jobs: list[Job], stage_seconds: dict) -> dict:
    """race.json, race.md, race-pretrain.png and race-scores.png in output_dir (main process only)."""
    out = Path(cfg.output_dir)
    results = {"command": command, "config": to_dict(cfg), "cpu": cpu_line(), "threads": torch.get_num_threads(),
               "wall_seconds": round(sum(stage_seconds.values()), 3), "stage_seconds": stage_seconds,
               "bodies": collect(cfg, sizes, sweep, lrs, inits, jobs)}
    atomic_write_json(out / "race.json", results)
    plot_pretrain(results, out / "race-pretrain.png")
    plot_scores(results, out / "race-scores.png")
    atomic_write_text(out / "race.md", race_markdown(results))
    return results


def plot_pretrain(results: dict, path: Path) -> Path:
    """Validation loss vs training time and vs training FLOPs, one line per body (cost.compare's plot)."""
    runs = [{"name": b, "body_params": r["params_body"], "params": r["params_total"],
             "curve": [{"seconds": s, "flops": f, "loss": v} for s, f, v in r["pretrain"]["curve"]]}
            for b, r in results["bodies"].items()]
    minutes = results["config"]["race"]["minutes"]
    return plot_compare({"runs": runs, "minutes": minutes}, path,
                        title=f"MLM pretraining, equal wall-clock budget ({minutes} min per body), same data")


def plot_scores(results: dict, path: Path) -> Path:
    """Downstream scores (mean ± std over seeds): one group of bars per task, one bar per body."""
    from nlpattn.cost.compare import COLOURS
    from nlpattn.cost.plots import _plt

    plt = _plt()
    bodies = list(results["bodies"])
    keys = list(dict.fromkeys(k for r in results["bodies"].values() for k in r["tasks"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys) * len(bodies) / 3), 4.2))
    width = 0.8 / max(1, len(bodies))
    for i, body in enumerate(bodies):
        tasks = results["bodies"][body]["tasks"]
        xs = [k + i * width for k in range(len(keys))]
        ax.bar(xs, [100 * tasks[k]["mean"] for k in keys], width, yerr=[100 * tasks[k]["std"] for k in keys],
               color=COLOURS.get(body, ("#7f7f7f", "x"))[0], label=body, capsize=3)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))],
                  [f"{k}\n({TASK_METRIC[k.split('-')[0]]})" for k in keys])
    ax.set_ylabel("dev score × 100 (mean ± std over seeds)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _num(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def pretrain_table(results: dict) -> list[str]:
    """One row per body: sizes, chosen lr and sweep, pretraining loss, speed, memory, FLOPs/token."""
    lines = ["| body | params (body / total) | lr (sweep: val loss) | val loss | steps | tokens/s | "
             "peak RSS MiB | FLOPs/token |", "|---|---|---|---|---|---|---|---|"]
    for b, r in results["bodies"].items():
        p = r["pretrain"]
        sweep = ", ".join(f"{lr}: {_num(v, '.3f')}" for lr, v in r["sweep"].items())
        lines.append(f"| {b} | {r['params_body']:,} / {r['params_total']:,} | **{r['lr']:g}** ({sweep}) | "
                     f"{_num(p['val_loss'], '.4f')} | {p['steps']} | {_num(p['tokens_per_s'], ',.0f')} | "
                     f"{_num(p['peak_rss_mb'], ',.0f')} | {_num(p['flops_per_token'], ',.0f')} |")
    return lines


def scores_table(results: dict) -> list[str]:
    """One row per body, one column per task: mean ± std (×100) over seeds."""
    keys = list(dict.fromkeys(k for r in results["bodies"].values() for k in r["tasks"]))
    lines = ["| body | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for b, r in results["bodies"].items():
        cells = [f"{100 * r['tasks'][k]['mean']:.1f} ± {100 * r['tasks'][k]['std']:.1f}" for k in keys]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return lines


def cost_table(results: dict) -> list[str]:
    """Per body and task: fine-tuning tokens/s, peak RSS, seconds per epoch (IMDB: also × 25,000)."""
    lines = ["| body | task | train examples | eval examples | steps (seeds) | cut by time limit | train tokens/s | "
             "peak RSS MiB | s / epoch (subset) | s / epoch at 25,000 reviews (extrapolated) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for b, r in results["bodies"].items():
        for k, t in r["tasks"].items():
            extra = t.get("seconds_per_epoch_25k_extrapolated")
            lines.append(f"| {b} | {k} | {t['train_examples']} | {t['eval_examples']} | "
                         f"{', '.join(map(str, t['steps']))} | {t['capped']} of {len(t['steps'])} | "
                         f"{t['train_tokens_per_s']:,.0f} | {t['peak_rss_mb']:,.0f} | {t['seconds_per_epoch']:.1f} | "
                         f"{'–' if extra is None else f'{extra:,.0f} (extrapolated)'} |")
    return lines


def race_markdown(results: dict) -> str:
    """race.md: settings, the three tables and the two figures."""
    c, r = results["config"], results["config"]["race"]
    stages = ", ".join(f"{k} {v / 60:.1f} min" for k, v in results["stage_seconds"].items())
    lines = ["# Race: bodies at equal wall-clock budget, MLM pretraining then real tasks", "",
             f"Command: `{results['command']}` · {results['cpu']} · {results['threads']} thread(s) · "
             f"total {results['wall_seconds'] / 60:.1f} min ({stages})", "",
             f"Pretraining: {', '.join(c['data']['train_files'])} (weights {c['data']['train_weights'] or 'by size'}), "
             f"block {c['data']['block_size']}, batch {c['train']['batch_size']}×{c['train']['grad_accum']}, "
             f"d = {c['model']['d_model']}; lr sweep {r['lrs']} × {r['sweep_minutes']} min, then {r['minutes']} min "
             f"per body at the best lr.", "",
             f"Fine-tuning: `{r['finetune_config']}` {' '.join(r['finetune_overrides'])}, {r['seeds']} seed(s), "
             f"train subsets {r['max_train_examples'] or 'all'}, eval subsets {r['max_eval_examples'] or 'all'}.", "",
             "## Pretraining", ""] + pretrain_table(results) + [
             "", "![validation loss vs training time and FLOPs](race-pretrain.png)", "",
             "Training time excludes evaluation; FLOPs = training tokens × the run's analytic FLOPs per token.", "",
             "## Downstream scores (dev, ×100, mean ± std over seeds)", ""] + scores_table(results) + [
             "", "![downstream scores](race-scores.png)", "",
             "## Fine-tuning cost", ""] + cost_table(results) + [
             "", "Peak RSS is the process's high-water mark during that run (reset before each run on Linux; "
             "CUDA: peak allocated). Seconds per epoch are measured on the subset; the IMDB column scales them "
             "to 25,000 reviews and is an extrapolation, not a measurement. A run cut by the fine-tuning time limit "
             "(train.max_minutes in race.finetune_overrides) trained on part of its epoch: its score is "
             "what that budget bought, and its seconds per epoch are scaled up by steps planned / steps done.", ""]
    return "\n".join(lines)

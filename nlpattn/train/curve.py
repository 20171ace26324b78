"""Downstream score against pretraining minutes, from one pretraining run's checkpoints.

`nlpattn curve --run RUN minutes=0,15,30,60 tasks=sst2,cola seeds=0,1,2 [--out DIR] [k=v ...]`
fine-tunes each task from the checkpoint the run had after m minutes (tokenizer and token cache
included: summary.json's `setup_s`), with the per-task defaults of configs/finetune/. m = 0 is
the same model and tokenizer trained from scratch: the run's `model.*` keys, `tokenizer.path=RUN`,
no `init`. A fine-tuning run whose eval/<task>.json exists is kept, so an interrupted curve
resumes where it stopped. Writes curve.json, curve.md and curve.png into --out (RUN-curve by
default); other key=value overrides go to every fine-tuning run.
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from nlpattn.errors import ConfigError
from nlpattn.fileio import atomic_path, atomic_write_json, atomic_write_text

NOT_COPIED = ("vocab_size", "pad_token_id")  # scratch takes these from the run's tokenizer


@dataclass(frozen=True)
class Point:
    """A model the run could hand over: `minutes` after the run started (setup included)."""

    minutes: float
    path: Path  # RUN (the final model) or RUN/checkpoints/step-N
    step: int


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None


def run_points(run: Path) -> list[Point]:
    """Every checkpoint of `run` and its final model, with minutes since the run started."""
    summary = _read_json(run / "summary.json")
    # set-up of every session so far; runs written before resumes added it up: this session's only
    setup = summary.get("setup_total_s", sum((summary.get("setup_s") or {}).values()))
    points = []
    for ckpt in sorted((run / "checkpoints").glob("step-*")):
        state = _read_json(ckpt / "trainer_state.json")
        points.append(Point((state.get("setup_s", setup) + state["wall_s"]) / 60, ckpt, int(state["step"])))
    points.append(Point((setup + summary["wall_s"]) / 60, run, int(summary["steps"])))
    return sorted(points, key=lambda p: p.minutes)


def pick(points: list[Point], minutes: float, slack: float = 0.5) -> Point:
    """The last model saved within `minutes` (+ `slack` for the clock of a final save)."""
    fits = [p for p in points if p.minutes <= minutes + slack]
    if not fits:
        raise ConfigError(f"minutes={minutes:g}: the run's first checkpoint came at "
                          f"{points[0].minutes:.1f} min; save more often (train.save_every)")
    return fits[-1]


def scratch_overrides(run: Path) -> list[str]:
    """key=value overrides that build the run's model from scratch with the run's tokenizer."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{run / 'config.yaml'}: cannot read ({e})") from None
    out = [f"model.{k}={json.dumps(v) if isinstance(v, (list, dict)) else ('null' if v is None else v)}"
           for k, v in config.get("model", {}).items() if k not in NOT_COPIED]
    return [*out, f"tokenizer.path={run}"]


def metric_of(task: str) -> str:
    """The task's headline metric (the first of its official ones)."""
    from nlpattn.data.glue import get_task

    return get_task(task).metrics[0]


def score(run_dir: Path, task: str) -> float:
    """The task's headline metric from a finished fine-tuning run's eval/<task>.json."""
    report = _read_json(run_dir / "eval" / f"{task}.json")
    return next(iter(report["metrics"].values()))[metric_of(task)]


def finetune_once(task: str, out_dir: Path, init: Path | None, extra: list[str], seed: int,
                  overrides: list[str], run_missing: bool = True) -> tuple[float, float] | None:
    """One fine-tuning run (skipped when already finished); returns (headline score, wall seconds),
    or None for a run not finished when `run_missing` is False."""
    from nlpattn.config import load_config
    from nlpattn.train.finetune import run_finetune
    from nlpattn.train.glue_suite import task_config

    if not (out_dir / "eval" / f"{task}.json").is_file():
        if not run_missing:
            return None
        args = [*extra, *overrides, f"task={task}", f"output_dir={out_dir}", f"train.seed={seed}",
                "train.resume=never"] + ([f"init={init}"] if init else [])
        run_finetune(load_config(task_config(task), args))
    return score(out_dir, task), float(_read_json(out_dir / "summary.json")["wall_s"])


def run_curve(run: Path, minutes: list[float], tasks: list[str], seeds: list[int], out: Path,
              overrides: list[str], run_missing: bool = True) -> dict:
    """Fine-tune every (mark, task, seed); write curve.json/md/png into `out`; returns curve.json.
    With `run_missing` False nothing is trained: the table holds the runs already finished."""
    for task in tasks:
        metric_of(task)  # an unknown task fails here, before any work
    points = run_points(run)
    chosen = [(m, None if m == 0 else pick(points, m)) for m in minutes]  # every mark checked before any work
    marks = []
    for m, point in chosen:
        extra = scratch_overrides(run) if point is None else []
        label = "scratch" if point is None else f"{m:g}min-step-{point.step}"
        entry = {"minutes": m, "source": "scratch" if point is None else str(point.path),
                 "actual_minutes": 0.0 if point is None else round(point.minutes, 2),
                 "step": 0 if point is None else point.step, "tasks": {}}
        for task in tasks:
            done = {s: finetune_once(task, out / "runs" / f"{label}-{task}-seed{s}",
                                     None if point is None else point.path, extra, s, overrides, run_missing)
                    for s in seeds}
            done = {s: result for s, result in done.items() if result is not None}
            if not done:  # missing=skip: this cell stays empty ("—", no point)
                continue
            scores = [value for value, _ in done.values()]
            entry["tasks"][task] = {"metric": metric_of(task), "seeds": list(done), "scores": scores,
                                    "mean": statistics.mean(scores),
                                    "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                                    "seconds": [round(wall, 1) for _, wall in done.values()]}
        marks.append(entry)
    for task in tasks:
        if not any(task in entry["tasks"] for entry in marks):
            raise ConfigError(f"missing=skip: no finished {task} run for "
                              f"{','.join(f'{m:g}' for m in minutes)} minutes in {out / 'runs'}")
    marks.sort(key=lambda entry: entry["minutes"])  # runs go in the order asked; the table by minutes
    result = {"run": str(run), "seeds": seeds, "tasks": tasks, "marks": marks, "overrides": overrides}
    write_curve(result, out)
    return result


def write_curve(result: dict, out: Path) -> None:
    """curve.json, curve.md and curve.png in `out` (make docs re-renders the last two from the first)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "curve.json", result)
    atomic_write_text(out / "curve.md", curve_markdown(result))
    plot_curve(result, out / "curve.png")


def curve_markdown(result: dict) -> str:
    """A table: one row per pretraining mark, one column per task (mean ± std × 100 over seeds)."""
    tasks = result["tasks"]
    head = ["pretraining", "checkpoint", *[f"{t} ({metric_of(t)})" for t in tasks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mark in result["marks"]:
        where = "scratch" if mark["source"] == "scratch" else f"step {mark['step']} ({mark['actual_minutes']:.1f} min)"
        cells = [_cell(mark["tasks"][t], len(result["seeds"])) if t in mark["tasks"] else "—" for t in tasks]
        lines.append(f"| {mark['minutes']:g} min | {where} | " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, result["seeds"]))
    overrides = result.get("overrides") or []
    tuned = f"; every fine-tuning run with `{' '.join(overrides)}`" if overrides else ""
    return "\n".join(lines) + (f"\n\nMean ± std over fine-tuning seeds {seeds} (a cell with fewer seeds says how "
                               f"many); pretraining run `{result['run']}`{tuned}.\n")


def _cell(task: dict, n_seeds: int) -> str:
    """'81.2 ± 0.4' over every seed asked; a mark with fewer finished seeds says how many."""
    n = len(task["scores"])
    if n == n_seeds and n > 1:
        return f"{100 * task['mean']:.1f} ± {100 * task['std']:.1f}"
    return f"{100 * task['mean']:.1f} ({n} seed{'s' if n > 1 else ''})"  # one seed has no spread to show


def plot_curve(result: dict, path: Path) -> Path:
    """Score × 100 against pretraining minutes: one line per task, every seed a dot."""
    from nlpattn.cost.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for task in result["tasks"]:
        marks = [m for m in result["marks"] if task in m["tasks"]]  # missing=skip may leave gaps
        line, = ax.plot([m["minutes"] for m in marks], [100 * m["tasks"][task]["mean"] for m in marks], marker="o",
                        label=f"{task} ({metric_of(task)})")
        for m in marks:
            ax.scatter([m["minutes"]] * len(m["tasks"][task]["scores"]),
                       [100 * s for s in m["tasks"][task]["scores"]], s=10, alpha=0.5, color=line.get_color())
    ax.set_xlabel("pretraining minutes (tokenizer and token cache included; 0 = from scratch)")
    ax.set_ylabel("score × 100 (GLUE: dev; IMDB: test)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


CURVE_KEYS = {"minutes": float, "tasks": str, "seeds": int, "missing": str}
CURVE_DEFAULTS = {"minutes": [0.0, 15.0, 30.0, 60.0], "tasks": ["sst2", "cola"], "seeds": [0, 1, 2], "missing": ["run"]}


def split_curve_args(overrides: list[str]) -> tuple[dict, list[str]]:
    """minutes=/tasks=/seeds= (comma lists) and missing=run|skip apart from the fine-tuning overrides."""
    picked, rest = dict(CURVE_DEFAULTS), []
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in CURVE_KEYS:
            rest.append(item)
            continue
        try:
            picked[key] = [CURVE_KEYS[key](v) for v in value.strip("[]").split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"{key}: expected a comma-separated list of {CURVE_KEYS[key].__name__}, "
                              f"got {value!r}") from None
        if not picked[key]:
            raise ConfigError(f"{key}: empty list")
    if picked["missing"] not in (["run"], ["skip"]):
        raise ConfigError(f"missing: 'run' (fine-tune what is not finished) or 'skip' (table of what is); "
                          f"got {','.join(picked['missing'])!r}")
    return picked, rest


def cli_main(args: argparse.Namespace) -> int:
    """`nlpattn curve --run RUN [minutes=..] [tasks=..] [seeds=..] [missing=skip] [--out DIR] [k=v ...]`."""
    if not args.run:
        raise ConfigError("--run: required, a finished pretraining run directory")
    picked, overrides = split_curve_args(args.overrides)
    out = Path(args.out or f"{str(args.run).rstrip('/')}-curve")
    run_curve(Path(args.run), picked["minutes"], picked["tasks"], picked["seeds"], out, overrides,
              run_missing=picked["missing"] == ["run"])
    print((out / "curve.md").read_text(encoding="utf-8"), end="")
    return 0

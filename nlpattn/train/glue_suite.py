"""`nlpattn glue`: fine-tune every GLUE task in turn from one starting point, then write the
scoreboard (glue.md + glue.json) with the official metrics and the GLUE average."""
from __future__ import annotations

import time
from pathlib import Path

from nlpattn.config import load_config
from nlpattn.errors import ConfigError
from nlpattn.fileio import atomic_write_json, atomic_write_text

TASK_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "imdb")  # imdb: own column


def task_config(task: str) -> str:
    """configs/finetune/<task>.yaml (per-task epochs/lr/batch) or the shared glue.yaml."""
    from nlpattn.train.finetune import config_path

    base = Path(config_path(None)).parent
    specific = base / f"{task}.yaml"
    return str(specific if specific.is_file() else base / "glue.yaml")


def default_tasks(data_dir: str, imdb_dir: str | None = None) -> list[str]:
    """Every task whose train and dev files are available locally, in GLUE order; then IMDB when
    its files are under `data_dir` or `imdb_dir` (configs/finetune/imdb.yaml's glue.data_dir)."""
    from nlpattn.data.glue import available_tasks

    have = set(available_tasks(data_dir))
    if imdb_dir is not None and "imdb" in available_tasks(imdb_dir):
        have.add("imdb")
    return [t for t in TASK_ORDER if t in have]


def suite_dir(init: str | None, out: str | None) -> Path:
    """Where the per-task runs and the scoreboard go: --out, else <init>-glue, else runs/glue."""
    if out:
        return Path(out)
    return Path(f"{str(init).rstrip('/')}-glue") if init else Path("runs/glue-scratch")


def run_glue(init: str | None, tasks: list[str] | None, overrides: list[str], out: str | None = None) -> dict:
    """Fine-tune each task (one run dir each), then write glue.json and glue.md; returns glue.json."""
    from nlpattn.data.glue import get_task
    from nlpattn.train.finetune import report_line, run_finetune

    base = load_config(task_config("sst2"), overrides)
    imdb_dir = load_config(task_config("imdb"), overrides).glue.data_dir
    tasks = [get_task(t).name for t in tasks] if tasks else default_tasks(base.glue.data_dir, imdb_dir)
    if not tasks:
        raise ConfigError(f"glue.data_dir: no GLUE task with train and dev files under {base.glue.data_dir}")
    root = suite_dir(init, out)
    reports, walls = {}, {}
    for name in tasks:
        extra = [f"task={name}", f"output_dir={root / name}"] + ([f"init={init}"] if init else [])
        t0 = time.perf_counter()
        report = run_finetune(load_config(task_config(name), [*overrides, *extra]))
        walls[name] = time.perf_counter() - t0
        reports[name] = report
        print(report_line(report), flush=True)
    return write_scoreboard(root, init, reports, walls)


def write_scoreboard(root: Path, init: str | None, reports: dict, walls: dict) -> dict:
    """glue.json (all metrics, wall times) and glue.md (leaderboard table + per-task details)."""
    import os

    from nlpattn.metrics import glue_average, glue_task_score, scoreboard_markdown

    results = {name: m for r in reports.values() for name, m in r.get("metrics", {}).items()}
    scores = {name: glue_task_score(name, m) for name, m in results.items()}
    glue_scores = {name: v for name, v in scores.items() if name not in ("imdb", "ax")}
    average = glue_average(scores, partial=True) if glue_scores else None  # IMDB: its own column
    doc = {"init": init, "results": results, "task_scores": scores, "average_of_available": average,
           "wall_s": walls, "tasks": list(reports)}
    lines = [f"# GLUE dev scores — init: {init or 'from scratch'}", "", scoreboard_markdown(results),
             "| task | steps | wall (s) | run dir |", "|---|---:|---:|---|"]
    for name, r in reports.items():
        lines.append(f"| {name} | {r.get('steps')} | {walls[name]:.0f} | {root / name} |")
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_json(root / "glue.json", doc)
        atomic_write_text(root / "glue.md", "\n".join(lines) + "\n")
        print(f"scoreboard: {root / 'glue.md'}")
    return doc

"""GLUE metrics and scoreboard arithmetic.

`load_glue_metric(task)` returns the `evaluate` metric defined in `glue.py` (same config names
and result keys as the hub's `glue` metric), without network access. Everything else here is
pure arithmetic on metric dicts and imports nothing heavy: `evaluate` is imported only when a
metric is loaded.

Metric values stay on the metric's scale ([0, 1] for accuracy/F1, [-1, 1] for correlations);
only `scoreboard_markdown` shows them x100. The GLUE score (Wang et al., 2018) is the
unweighted mean over the nine tasks below, where a task with several metrics scores the mean
of them (MRPC and QQP: F1 and accuracy; STS-B: Pearson and Spearman) and MNLI scores the mean
of its matched and mismatched accuracy. The diagnostic set AX and IMDB (Maas et al. 2011, test
accuracy) are reported but not averaged.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from nlpattn.errors import ConfigError, DataError

if TYPE_CHECKING:
    import evaluate

# Metric config -> the result keys that make its task score, in leaderboard order.
OFFICIAL_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "stsb": ("pearson", "spearmanr"),
    "qqp": ("f1", "accuracy"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "hans": ("accuracy",),
    "ax": ("matthews_correlation",),
    "imdb": ("accuracy",),
}
TASK_NAMES: tuple[str, ...] = tuple(OFFICIAL_METRICS)
# The nine tasks of the GLUE score (AX and HANS are not among them).
GLUE_TASKS: tuple[str, ...] = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
_ALIASES = {
    "sst-2": "sst2",
    "sts-b": "stsb",
    "mnli-m": "mnli_matched",
    "mnli-mm": "mnli_mismatched",
}
_METRIC_MODULE = "glue.py"

# Scoreboard columns: (label, metric config, metric abbreviations).
_COLUMNS = (
    ("CoLA", "cola", "MCC"),
    ("SST-2", "sst2", "Acc"),
    ("MRPC", "mrpc", "F1/Acc"),
    ("STS-B", "stsb", "P/S"),
    ("QQP", "qqp", "F1/Acc"),
    ("MNLI-m", "mnli_matched", "Acc"),
    ("MNLI-mm", "mnli_mismatched", "Acc"),
    ("QNLI", "qnli", "Acc"),
    ("RTE", "rte", "Acc"),
    ("WNLI", "wnli", "Acc"),
    ("AX", "ax", "MCC"),
    ("IMDB", "imdb", "Acc"),
)
_OPTIONAL = ("ax", "imdb")  # columns shown only when scored, never in the GLUE average


def normalize_task(task: str) -> str:
    """The metric config name of a task spelling ("SST-2" -> "sst2"); ConfigError if unknown."""
    name = task.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in OFFICIAL_METRICS:
        valid = ", ".join(TASK_NAMES + tuple(_ALIASES))
        raise ConfigError(f"unknown GLUE task {task!r}; valid names: {valid}")
    return name


def glue_metric_path() -> str:
    """Path of the metric module file, for `evaluate.load(path, config_name=task)`."""
    return str(Path(__file__).with_name(_METRIC_MODULE))


def load_glue_metric(task: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """The GLUE metric of `task`; kwargs go to the module (cache_dir, experiment_id, ...)."""
    config_name = normalize_task(task)
    # Imported from the package, not copied through evaluate's module cache: nothing is
    # written to HF_MODULES_CACHE, no lock is shared between ranks, and the class pickles by
    # its package path. `evaluate.load(glue_metric_path(), ...)` builds the same class.
    module = importlib.import_module(f"{__name__}.glue")
    # Each rank scores its gathered predictions alone; in memory, ranks share no cache files.
    kwargs.setdefault("keep_in_memory", kwargs.get("num_process", 1) == 1)
    metric = module.NlpattnGlue(config_name=config_name, **kwargs)
    metric.download_and_prepare()  # a no-op for this metric; kept to match evaluate.load
    return metric


def glue_task_score(task: str, metrics: Mapping[str, float]) -> float:
    """The single number one task contributes: the mean of its official metric values."""
    name = normalize_task(task)
    keys = OFFICIAL_METRICS[name]
    missing = [key for key in keys if key not in metrics]
    if missing:
        raise DataError(f"{name} metrics lack {missing} (got {sorted(metrics)})")
    return sum(float(metrics[key]) for key in keys) / len(keys)


def _by_config(named: Mapping[str, Any]) -> dict[str, Any]:
    """Re-key a task-keyed dict by config name; bare "mnli" means matched, as in the hub metric."""
    out: dict[str, Any] = {}
    for task, value in named.items():
        name = normalize_task(task)
        name = "mnli_matched" if name == "mnli" else name
        if name == "hans":
            raise ConfigError("hans is not a GLUE task; it has no place in the GLUE score")
        if name in out:
            raise ConfigError(f"GLUE task {name} given twice (as {task!r} and another spelling)")
        out[name] = value
    return out


def _glue_parts(task: str) -> tuple[str, ...]:
    """The configs whose scores make one GLUE task's score (MNLI: matched and mismatched)."""
    return ("mnli_matched", "mnli_mismatched") if task == "mnli" else (task,)


def _complete_tasks(scores: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
    """Per-task GLUE scores of the tasks with every part present, and the missing parts."""
    complete: dict[str, float] = {}
    missing: list[str] = []
    for task in GLUE_TASKS:
        parts = _glue_parts(task)
        absent = [part for part in parts if part not in scores]
        if absent:
            missing.extend(absent)
        else:
            complete[task] = sum(scores[part] for part in parts) / len(parts)
    return complete, missing


def glue_average(task_scores: Mapping[str, float], *, partial: bool = False) -> float:
    """The GLUE score: mean of the 9 task scores (MNLI = mean of m and mm; AX excluded)."""
    complete, missing = _complete_tasks(_by_config(task_scores))
    if missing and not partial:
        raise ConfigError(f"the GLUE score needs all 9 tasks; missing: {', '.join(missing)}")
    if not complete:
        raise ConfigError("no complete GLUE task to average")
    return sum(complete.values()) / len(complete)


def _cell(metrics: Mapping[str, float] | None, config: str) -> str:
    """One scoreboard cell: the official metric(s) x100 with one decimal, joined by '/'."""
    if metrics is None:
        return "—"
    return "/".join(_percent(metrics[key]) for key in OFFICIAL_METRICS[config])


def _percent(value: float) -> str:
    """A [0, 1]-scale value shown x100 with one decimal."""
    return f"{100 * float(value):.1f}"


def scoreboard_markdown(results: Mapping[str, Mapping[str, float]]) -> str:
    """A leaderboard-style markdown table of `results` (task -> metric dict) and the GLUE score."""
    by_config = _by_config(results)
    scores = {config: glue_task_score(config, metrics) for config, metrics in by_config.items()}
    complete, missing = _complete_tasks(scores)
    columns = [col for col in _COLUMNS if col[1] not in _OPTIONAL or col[1] in by_config]
    header = ["Score"] + [f"{label} ({abbrev})" for label, _, abbrev in columns]
    score = _percent(sum(complete.values()) / len(complete)) if complete else "—"
    row = [score + ("*" if missing and complete else "")]
    row += [_cell(by_config.get(config), config) for _, config, _ in columns]
    lines = [_md_row(header), _md_row(["---:"] * len(header)), _md_row(row), ""]
    if missing:
        labels = {config: label for label, config, _ in _COLUMNS}
        lines.append(f"Missing: {', '.join(labels[name] for name in missing)}.")
        if complete:
            lines.append(f"*Mean of {len(complete)} of 9 tasks, not an official GLUE score.")
    lines.append(
        "Score: unweighted mean of the 9 GLUE task scores; MRPC and QQP count mean(F1, Acc), "
        "STS-B mean(Pearson, Spearman), MNLI mean(m, mm); AX and IMDB (test accuracy) are not averaged."
    )
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(cells) + " |"

"""make docs, section 7's race: the table and figure from `nlpattn race`'s race.json (copied to
docs/race/), or, when it is absent, a note with the command that produces it — never numbers."""
from __future__ import annotations

import json
from pathlib import Path

RACE_JSON = Path("docs/race/race.json")
COMMAND = "nlpattn race --config configs/race/default.yaml"
TASKS = ("sst2", "cola", "imdb-128", "imdb-512")


def load_race(path: Path) -> dict | None:
    """race.json as a dict, or None when the race has not been run and copied yet."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _task_cell(task: dict | None) -> str:
    """'81.2 ± 0.4' (mean ± std over seeds, in %) or '–'."""
    if not task:
        return "–"
    return f"{100 * task['mean']:.1f} ± {100 * task['std']:.1f}"


def race_table(race: dict) -> str:
    """One row per body: parameters, pretraining loss and speed, then every task's mean ± std."""
    bodies = race["bodies"]
    tasks = [t for t in TASKS if any(t in b.get("tasks", {}) for b in bodies.values())]
    metrics = {t: next(b["tasks"][t]["metric"] for b in bodies.values() if t in b.get("tasks", {}))
               for t in tasks}
    head = ["body", "params (body)", "lr", "pretrain val loss", "pretrain tokens/s", "peak RSS MB",
            *[f"{t} ({metrics[t]}, %)" for t in tasks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, b in bodies.items():
        p = b["pretrain"]
        cells = [name, f"{b['params_body']:,}", f"{b['lr']:g}", f"{p['val_loss']:.3f}",
                 f"{p['tokens_per_s']:,.0f}", f"{p['peak_rss_mb']:,.0f}",
                 *[_task_cell(b.get("tasks", {}).get(t)) for t in tasks]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def race_figure(race: dict, out: Path) -> Path:
    """Validation loss against wall-clock seconds, one line per body (race.json's curves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, b in race["bodies"].items():
        curve = b["pretrain"]["curve"]
        ax.plot([c[0] for c in curve], [c[2] for c in curve], label=name)
    ax.set_xlabel("seconds of pretraining")
    ax.set_ylabel("validation loss")
    ax.set_title("equal-budget race (race.json)", fontsize=9)
    ax.legend(fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def race_section(race: dict | None, figure: str | None = None) -> str:
    """The markdown section 7 shows for the race: table + figure, or how to produce them."""
    if race is None:
        return ("The equal-budget race has not been run for this build: `docs/race/race.json` is absent. "
                f"Run `{COMMAND}` and copy its race.json, race.md and figures into `docs/race/`; "
                "`make docs` then puts its table and curves here.")
    text = (f"From `docs/race/race.json` (`{COMMAND}`; CPU: {race['cpu']}, "
            f"{race['wall_seconds'] / 60:.0f} minutes in all). Tasks: mean ± std over seeds.\n\n"
            + race_table(race))
    if figure:
        text += f"\n\n![validation loss against seconds, every body]({figure})"
    return text

"""`make docs`: small real runs on the bundled data → docs/img/guide/*.png,
docs/results/guide.json → docs/guide.md (rendered from docs/guide.md.in).

Resumable: runs already done under runs/docs/ are skipped; figures, numbers and the guide are
always rebuilt from them (seconds)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guide_figures as figures  # noqa: E402
import guide_numbers as numbers  # noqa: E402
import guide_race as race  # noqa: E402
from guide_render import render  # noqa: E402
from guide_runs import REPO, RUNS, run_all  # noqa: E402

RESULTS = REPO / "docs/results/guide.json"
TEMPLATE, GUIDE = REPO / "docs/guide.md.in", REPO / "docs/guide.md"


def race_values() -> dict:
    """Section 7's race: the table/figure from docs/race/race.json, or how to make it."""
    data = race.load_race(REPO / race.RACE_JSON)
    fig = None
    if data is not None:
        race.race_figure(data, figures.IMG / "race-curves.png")
        fig = "img/guide/race-curves.png"
    return {"present": data is not None, "section": race.race_section(data, fig), "command": race.COMMAND}


def rerender_curves(docs: Path = REPO / "docs") -> None:
    """The score-against-pretraining-minutes tables and figures (README's docs/pretrain-curve and
    earlier runs' docs/pretrain-curve-DATE), each from its curve.json."""
    from nlpattn.train.curve import write_curve

    for folder in sorted(docs.glob("pretrain-curve*/")):
        if (folder / "curve.json").is_file():
            write_curve(json.loads((folder / "curve.json").read_text(encoding="utf-8")), folder)


def collect() -> dict:
    """Every figure and number of the guide, from the runs under runs/docs/."""
    gates_png, gates_info = figures.gates_figure()
    cross_png, cross_info = figures.cross_figure()
    heads_png, stats, n_tokens = figures.heads_figure()
    return {
        "commands": {r.name: r.command for r in RUNS},
        "gates": {**numbers.gates_numbers(gates_info), **numbers.finetune_numbers("runs/docs/gates"),
                  "figure": gates_png, "sentence": figures.SENTENCE},
        "masks": {"figure": figures.masks_figure()},
        "seq2seq": {**numbers.pretrain_numbers("runs/docs/seq2seq"), **cross_info, "figure": cross_png,
                    "source": figures.SOURCE, "target": figures.TARGET},
        "mlm": numbers.pretrain_numbers("runs/docs/mlm"),
        "clm": numbers.pretrain_numbers("runs/docs/clm"),
        "sst2": numbers.finetune_numbers("runs/docs/sst2-from-mlm"),
        "curves": {"figure": figures.curves_figure({"MLM (BERT-style)": "runs/docs/mlm",
                                                   "causal LM (GPT-style)": "runs/docs/clm",
                                                   "span corruption (T5-style)": "runs/docs/seq2seq"})},
        "cost": {**numbers.cost_numbers(), "figures": figures.cost_figures()},
        "race": race_values(),
        "heads": {**numbers.pretrain_numbers("runs/docs/char"), **numbers.head_numbers(stats, n_tokens, causal=True),
                  "figure": heads_png, "sentence": figures.VERSE},
    }


def main() -> int:
    """Run, collect, write guide.json, render the guide."""
    os.chdir(REPO)
    start = time.perf_counter()
    run_all()
    rerender_curves()
    values = collect()
    values["cost"]["figure_links"] = "\n\n".join(f"![{Path(p).stem}]({p})" for p in values["cost"]["figures"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(values, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    GUIDE.write_text(render(TEMPLATE.read_text(encoding="utf-8"), values), encoding="utf-8")
    print(f"[docs] wrote {GUIDE.relative_to(REPO)}, {RESULTS.relative_to(REPO)} and "
          f"{figures.IMG.relative_to(REPO)}/ in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

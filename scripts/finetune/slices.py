"""What fine-tuned classifiers get right and wrong: dev accuracy per slice (length, negation,
contrast, words unseen in the training split) for groups of runs, plus the dev examples that
the first group always gets wrong and the last always gets right, and the other way round.
Prints markdown.

    python scripts/finetune/slices.py --task sst2 \
        --group "scratch=runs/mlm-corpus-curve/runs/scratch-sst2-seed*" \
        --group "60 min=runs/mlm-corpus-curve/runs/60min-*-sst2-seed*"
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

from nlpattn.data.glue import get_task, read_glue_split
from nlpattn.errors import ConfigError, NlpattnError
from nlpattn.metrics import slices


def parse_group(spec: str) -> tuple[str, list[str]]:
    """'NAME=GLOB' → (NAME, the directories GLOB matches: its runs)."""
    name, sep, pattern = spec.partition("=")
    if not sep or not name or not pattern:
        raise ConfigError(f"--group: expected NAME=GLOB, got '{spec}'")
    runs = sorted(path for path in glob.glob(pattern) if os.path.isdir(path))
    if not runs:
        raise ConfigError(f"--group {name}: no run directory matches '{pattern}'")
    return name, runs


def report(a: argparse.Namespace) -> str:
    """The markdown report for the parsed arguments."""
    task = get_task(a.task)
    if task.is_regression:
        raise ConfigError(f"--task: {task.name} is a regression task; slices score classifiers")
    train = read_glue_split(task, "train", a.data_dir)
    dev = read_glue_split(task, task.dev_splits[0], a.data_dir)
    texts = [" / ".join(t for t in (ex.text_a, ex.text_b) if t) for ex in dev]
    train_vocab = {w for ex in train for t in (ex.text_a, ex.text_b) if t for w in slices.words(t)}
    groups = {}
    for spec in a.group:
        name, runs = parse_group(spec)
        groups[name] = [slices.read_correct(f"{run}/predictions/{task.name}-dev.tsv", len(dev)) for run in runs]
    rows = slices.slice_rows([slices.slices_of(slices.words(t), train_vocab) for t in texts], groups)
    out = [f"{task.name} dev, accuracy (%) per slice, mean ± std over each group's runs\n",
           slices.slices_markdown(rows, groups)]
    if len(groups) >= 2:  # the examples that set the first and the last group apart
        (name_a, runs_a), (name_b, runs_b) = list(groups.items())[0], list(groups.items())[-1]
        labels = [task.label_names[int(ex.label)] for ex in dev]
        for winner, w_runs, loser, l_runs in ((name_b, runs_b, name_a, runs_a), (name_a, runs_a, name_b, runs_b)):
            picked = slices.always(w_runs, True) & slices.always(l_runs, False)
            out.append(slices.examples_markdown(f"right in every {winner} run, wrong in every {loser} run",
                                                picked, texts, labels, a.examples))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Parse, report to stdout; a bad input is one line on stderr and exit code 2."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help="a GLUE task name, or imdb")
    p.add_argument("--group", action="append", required=True, help="NAME=GLOB of fine-tuning run dirs")
    p.add_argument("--data-dir", default=None, help="glue.data_dir (default data/glue)")
    p.add_argument("--examples", type=int, default=8, help="examples listed per direction")
    a = p.parse_args(argv)
    try:
        print(report(a))
    except NlpattnError as e:
        print(f"slices: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

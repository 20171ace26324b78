"""What a classifier gets right and wrong: dev accuracy per slice of the examples, for groups of
fine-tuning runs (say, from scratch against from a pretrained model, several seeds each).

Slices are sets of dev examples picked by their words (lower-cased, split on anything that is
not a letter, digit or apostrophe): length, a negation, a contrast word, and a word that the
task's training split never shows, which only pretraining can have taught the model. The
inputs are the predictions/<task>-dev.tsv files that `nlpattn finetune` writes.
"""
from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from nlpattn.errors import DataError

NEGATIONS = frozenset({"not", "no", "never", "n't", "nothing", "none", "nobody", "neither", "nor",
                       "without", "cannot"})
CONTRASTS = frozenset({"but", "though", "although", "yet", "however", "despite"})
LENGTHS = ((10, "1-10 words"), (20, "11-20 words"), (30, "21-30 words"), (None, "over 30 words"))
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """The lower-cased words of `text` ("doesn't" and "does n't" both end in a word "n't")."""
    out = []
    for w in _WORD.findall(text.lower()):
        if w.endswith("n't") and w != "n't":
            out += [w[:-3], "n't"]
        elif w.strip("'"):
            out.append(w)
    return out


def length_slice(n_words: int) -> str:
    """The name of the length slice of an example with `n_words` words."""
    return next(name for top, name in LENGTHS if top is None or n_words <= top)


def slices_of(example_words: Sequence[str], train_vocab: set[str]) -> list[str]:
    """The names of every slice an example with these words belongs to."""
    present = set(example_words)
    names = ["all", length_slice(len(example_words))]
    names.append("negation" if present & NEGATIONS else "no negation")
    if present & CONTRASTS:
        names.append("contrast (but, though, yet, ...)")
    names.append("a word unseen in training" if present - train_vocab else "every word seen in training")
    return names


def read_correct(path: str | Path, n_examples: int) -> list[bool]:
    """Per dev example, whether a predictions TSV (index, prediction, label) got it right."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if not lines or lines[0].split("\t") != ["index", "prediction", "label"]:
        raise DataError(f"{path}:1: expected the header 'index<TAB>prediction<TAB>label' of a dev predictions file")
    correct = []
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 3 or fields[0] != str(line_no - 2):
            raise DataError(f"{path}:{line_no}: expected 'index<TAB>prediction<TAB>label' with index {line_no - 2}")
        correct.append(fields[1] == fields[2])
    if len(correct) != n_examples:
        raise DataError(f"{path}: {len(correct)} predictions, but the dev split has {n_examples} examples")
    return correct


def slice_rows(example_slices: Sequence[Sequence[str]],
               groups: Mapping[str, Sequence[Sequence[bool]]]) -> list[dict]:
    """One row per slice: its size and, per group, the accuracy (%) of each run on it."""
    order: list[str] = []
    members: dict[str, list[int]] = {}
    for i, names in enumerate(example_slices):
        for name in names:
            if name not in members:
                order.append(name)
                members[name] = []
            members[name].append(i)
    rank = {name: k for k, name in enumerate(["all", *(n for _, n in LENGTHS)])}
    order.sort(key=lambda name: (rank.get(name, len(rank)), name))
    rows = []
    for name in order:
        idx = members[name]
        accs = {g: [100 * sum(run[i] for i in idx) / len(idx) for run in runs] for g, runs in groups.items()}
        rows.append({"slice": name, "n": len(idx), "accuracy": accs})
    return rows


def always(runs: Sequence[Sequence[bool]], right: bool) -> set[int]:
    """Indices every run got right (or, with right=False, every run got wrong)."""
    return {i for i in range(len(runs[0])) if all(run[i] == right for run in runs)}


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def slices_markdown(rows: list[dict], groups: Mapping[str, Sequence]) -> str:
    """The slice table: size, each group's mean ± std accuracy over its runs, and each later
    group's difference from the first."""
    first, *later = list(groups)
    header = ["slice", "dev examples", *(f"{g} ({len(groups[g])} runs)" for g in groups),
              *(f"{g} − {first}" for g in later)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        mean = {g: statistics.mean(row["accuracy"][g]) for g in groups}
        cells = [row["slice"], str(row["n"]), *(_mean_std(row["accuracy"][g]) for g in groups),
                 *(f"{mean[g] - mean[first]:+.1f}" for g in later)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def examples_markdown(title: str, indices: Iterable[int], texts: Sequence[str], labels: Sequence[str],
                      limit: int) -> str:
    """A short list of dev examples (text and gold label) under a title with their count."""
    indices = sorted(indices)
    lines = [f"**{title}: {len(indices)}**", ""]
    for i in indices[:limit]:
        lines.append(f"- ({labels[i]}) {texts[i]}")
    return "\n".join(lines) + "\n"

"""GLUE (Wang et al. 2018): the task registry and one reader for the original TSVs or the hub.

The original files are read as they ship: tab-split with quoting off (texts contain bare `"`),
CoLA train/dev without a header, MRPC's header with a UTF-8 BOM, CoLA dev without a final
newline, `.tsv` or `.tsv.gz`. Columns are found by header name, so train/dev/test layouts all
work. A row with the wrong number of fields or an unknown label is a `DataError` naming the
file and line — except in QQP train, whose original file has a few rows broken by embedded
newlines; those are skipped (as other GLUE readers do) and counted in a warning.
When a split's file is absent, the same API reads the hub dataset `nyu-mll/glue`.
IMDB (`imdb`) is registered beside the GLUE tasks: local files only, its test split scored as dev.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nlpattn.data.sources import iter_line_blocks
from nlpattn.errors import ConfigError, DataError

HUB_NAME = "nyu-mll/glue"
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its files are, which columns hold the texts and the label."""

    name: str  # registry key, e.g. "sst2"
    dirname: str  # directory in the GLUE layout, e.g. "SST-2"
    text_columns: tuple[str, ...]  # header names of text_a (and text_b)
    label_column: str | None  # header name of the label (None: test-only task)
    label_names: tuple[str, ...]  # class names; index = class id (() for regression)
    raw_labels: tuple[str, ...] = ()  # label strings as written in the TSV, same order
    is_regression: bool = False
    metrics: tuple[str, ...] = ("accuracy",)
    dev_splits: tuple[str, ...] = ("dev",)
    test_splits: tuple[str, ...] = ("test",)
    train: bool = True  # has train/dev splits (AX is test-only)
    headerless: tuple[str, ...] = ()  # splits whose file has no header line (CoLA train/dev)
    headerless_layout: tuple[int, tuple[int, ...], int] | None = None  # (n_fields, text idx, label idx)
    file_names: tuple[tuple[str, str], ...] = ()  # split → file name overrides
    hub_config: str = ""
    hub_text_columns: tuple[str, ...] = ()
    skip_malformed_train: bool = False  # QQP: the original train file has broken rows

    @property
    def num_labels(self) -> int:
        """Output size of the head: 1 for regression, else the number of classes."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def splits(self) -> tuple[str, ...]:
        """All split names this task has."""
        return (("train", *self.dev_splits) if self.train else ()) + self.test_splits

    def file_name(self, split: str) -> str:
        """Base file name of `split` (without `.gz`)."""
        return dict(self.file_names).get(split, f"{split}.tsv")


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_MNLI = ("entailment", "neutral", "contradiction")
GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("cola", "CoLA", ("sentence",), "label", ("unacceptable", "acceptable"), _BINARY,
             metrics=("matthews_correlation",), headerless=("train", "dev"),
             headerless_layout=(4, (3,), 1), hub_config="cola", hub_text_columns=("sentence",)),
    GlueTask("sst2", "SST-2", ("sentence",), "label", ("negative", "positive"), _BINARY,
             hub_config="sst2", hub_text_columns=("sentence",)),
    GlueTask("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("not_equivalent", "equivalent"),
             _BINARY, metrics=("accuracy", "f1"), hub_config="mrpc",
             hub_text_columns=("sentence1", "sentence2")),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), "score", (), is_regression=True,
             metrics=("pearson", "spearmanr"), hub_config="stsb", hub_text_columns=("sentence1", "sentence2")),
    GlueTask("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("not_duplicate", "duplicate"),
             _BINARY, metrics=("accuracy", "f1"), hub_config="qqp",
             hub_text_columns=("question1", "question2"), skip_malformed_train=True),
    GlueTask("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label", _MNLI, _MNLI,
             dev_splits=("dev_matched", "dev_mismatched"), test_splits=("test_matched", "test_mismatched"),
             hub_config="mnli", hub_text_columns=("premise", "hypothesis")),
    GlueTask("qnli", "QNLI", ("question", "sentence"), "label", _NLI2, _NLI2, hub_config="qnli",
             hub_text_columns=("question", "sentence")),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), "label", _NLI2, _NLI2, hub_config="rte",
             hub_text_columns=("sentence1", "sentence2")),
    GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), "label", ("not_entailment", "entailment"), _BINARY,
             hub_config="wnli", hub_text_columns=("sentence1", "sentence2")),
    # IMDB (Maas et al. 2011) beside GLUE: long reviews; its labelled *test* split is what is scored,
    # so the task's dev split reads test.tsv. No hub copy: the files must be under glue.data_dir/imdb.
    GlueTask("imdb", "imdb", ("sentence",), "label", ("negative", "positive"), _BINARY,
             test_splits=(), file_names=(("dev", "test.tsv"),)),
    GlueTask("ax", "diagnostic", ("sentence1", "sentence2"), None, _MNLI, _MNLI,
             metrics=("matthews_correlation",), train=False, file_names=(("test", "diagnostic.tsv"),),
             hub_config="ax", hub_text_columns=("premise", "hypothesis")),
]}
_HUB_SPLITS = {"dev": "validation", "dev_matched": "validation_matched",
               "dev_mismatched": "validation_mismatched"}


@dataclass
class GlueExample:
    """One example: texts, label (class id, float score, or None for test) and an id."""

    guid: str
    text_a: str
    text_b: str | None
    label: int | float | None


def get_task(name: str | GlueTask) -> GlueTask:
    """The registry entry for `name` (case, '-' and '_' ignored: 'SST-2' = 'sst2')."""
    if isinstance(name, GlueTask):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task '{name}' (valid: {', '.join(GLUE_TASKS)})")
    return GLUE_TASKS[key]


def resolve_glue_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """`data_dir` as given if it exists, else relative to the repository (default `data/glue`)."""
    path = Path(data_dir if data_dir is not None else "data/glue")
    if not path.exists() and not path.is_absolute() and (_REPO_ROOT / path).exists():
        return _REPO_ROOT / path
    return path


DEFAULT_GLUE_DIR = "data/glue"


def check_glue_dir(data_dir: str | os.PathLike | None) -> None:
    """ConfigError at once for a `glue.data_dir` that is a file, or a non-default one that does
    not exist (only the default may fall through to the hub dataset)."""
    path = resolve_glue_dir(data_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"glue.data_dir: {data_dir} is a file, not a directory")
    if not path.exists() and str(data_dir) not in (DEFAULT_GLUE_DIR, "None"):
        raise ConfigError(f"glue.data_dir: {data_dir} does not exist")


def split_file(task: str | GlueTask, split: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local `.tsv` or `.tsv.gz` of a split, or None when neither exists."""
    task = get_task(task)
    base = resolve_glue_dir(data_dir) / task.dirname / task.file_name(split)
    for path in (base, base.with_name(base.name + ".gz")):
        if path.is_file():
            return path
    return None


def available_tasks(data_dir: str | os.PathLike | None = None) -> list[str]:
    """Tasks whose train and (first) dev split exist locally."""
    return [t.name for t in GLUE_TASKS.values()
            if t.train and split_file(t, "train", data_dir) and split_file(t, t.dev_splits[0], data_dir)]


def check_split(task: GlueTask, split: str) -> str:
    """The task's name for `split` (hub names accepted); DataError listing the valid ones."""
    split = {"validation": "dev", "validation_matched": "dev_matched",
             "validation_mismatched": "dev_mismatched"}.get(split, split)
    if split not in task.splits:
        raise DataError(f"GLUE task '{task.name}' has no split '{split}' (valid: {', '.join(task.splits)})")
    return split


def read_glue_split(task: str | GlueTask, split: str,
                    data_dir: str | os.PathLike | None = None) -> list[GlueExample]:
    """Examples of one split: from `<data_dir>/<Task>/<split>.tsv[.gz]`, else from the hub."""
    task = get_task(task)
    split = check_split(task, split)
    path = split_file(task, split, data_dir)
    if path is not None:
        return read_glue_tsv(task, split, path)
    return _read_hub(task, split, resolve_glue_dir(data_dir))


def _lines(path: Path):
    line_no = 0
    for block in iter_line_blocks(path):
        for line in block:
            line_no += 1
            yield line_no, line.rstrip("\n").rstrip("\r")


def read_glue_tsv(task: str | GlueTask, split: str, path: str | os.PathLike) -> list[GlueExample]:
    """Parse one original GLUE TSV (tab-split, quoting off)."""
    task, path = get_task(task), Path(path)
    rows = _lines(path)
    if split in task.headerless:
        width, text_idx, label_idx = task.headerless_layout
        id_idx = None
    else:
        width, text_idx, label_idx, id_idx = _header_layout(task, split, path, rows)
    lenient = split == "train" and task.skip_malformed_train
    examples, skipped = [], 0
    for line_no, line in rows:
        fields = line.split("\t")
        if len(fields) != width:
            if lenient:
                skipped += 1
                continue
            raise DataError(f"{path}:{line_no}: expected {width} tab-separated fields, got {len(fields)}")
        label = None if label_idx is None else _parse_label(task, fields[label_idx], path, line_no)
        texts = [fields[i] for i in text_idx]
        guid = f"{split}-{fields[id_idx] if id_idx is not None else line_no}"
        examples.append(GlueExample(guid, texts[0], texts[1] if len(texts) > 1 else None, label))
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} malformed rows (known defect of the original file)")
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _header_layout(task: GlueTask, split: str, path: Path, rows) -> tuple:
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: file is empty")
    header = first[1].lstrip("\ufeff").split("\t")
    index = {name: i for i, name in enumerate(header)}
    wanted = [*task.text_columns] + ([task.label_column] if task.label_column and "test" not in split else [])
    missing = [c for c in wanted if c not in index]
    if missing:
        raise DataError(f"{path}:1: header has no column '{missing[0]}' (columns: {', '.join(header)})")
    text_idx = tuple(index[c] for c in task.text_columns)
    label_idx = index[task.label_column] if len(wanted) > len(task.text_columns) else None
    id_idx = next((index[c] for c in ("index", "id", "pairID") if c in index), None)
    return len(header), text_idx, label_idx, id_idx


def _parse_label(task: GlueTask, value: str, path: Path, line_no: int) -> int | float:
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            raise DataError(f"{path}:{line_no}: label '{value}' is not a number") from None
        if not math.isfinite(score):
            raise DataError(f"{path}:{line_no}: label '{value}' is not a finite number")
        return score
    try:
        return task.raw_labels.index(value)
    except ValueError:
        raise DataError(f"{path}:{line_no}: unknown label '{value}' "
                        f"(expected one of {', '.join(task.raw_labels)})") from None


def _read_hub(task: GlueTask, split: str, data_dir: Path) -> list[GlueExample]:
    """The split from the hub dataset `nyu-mll/glue` (needs a network or a warm HF cache)."""
    hub_split = _HUB_SPLITS.get(split, split)
    if not task.hub_config:
        raise DataError(f"{task.name} {split}: no {data_dir / task.dirname / task.file_name(split)}[.gz] "
                        f"(no hub copy of this task; set glue.data_dir=... to the folder holding {task.dirname}/)")
    try:
        import datasets

        ds = datasets.load_dataset(HUB_NAME, task.hub_config, split=hub_split)
    except Exception as e:  # noqa: BLE001 - offline, missing config, …: one line for the user
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"GLUE {task.name} {split}: no {data_dir / task.dirname / task.file_name(split)}"
                        f"[.gz] and the hub dataset {HUB_NAME} is unavailable ({reason}); "
                        f"download GLUE and set glue.data_dir=...") from None
    cols = task.hub_text_columns
    out = []
    for i, row in enumerate(ds):
        label = row.get("label")
        if label is None or label == -1:
            label = None
        elif task.is_regression:
            label = float(label)
        out.append(GlueExample(f"{split}-{row.get('idx', i)}", row[cols[0]],
                               row[cols[1]] if len(cols) > 1 else None, label))
    return out


def encode_glue(examples: Sequence[GlueExample], tokenizer, max_length: int = 128,
                truncation: str = "head", head_tokens: int = 128) -> list[dict]:
    """`[CLS] a [SEP] (b [SEP])` ids, token types and label for each example (batched encoding)."""
    if not examples:
        return []
    pairs = examples[0].text_b is not None
    encoded = tokenizer.encode_pairs([e.text_a for e in examples],
                                     [e.text_b or "" for e in examples] if pairs else None, max_length,
                                     truncation, head_tokens)
    return [{"input_ids": ids, "token_type_ids": types, "label": e.label}
            for (ids, types), e in zip(encoded, examples)]


def check_truncation(task: str | GlueTask, truncation: str) -> None:
    """ConfigError for tail / head+tail truncation on a sentence-pair task."""
    task = get_task(task)
    if truncation != "head" and len(task.text_columns) > 1:
        raise ConfigError(f"glue.truncation={truncation}: task {task.name} has sentence pairs, "
                          "which are truncated longest-first; use glue.truncation=head")

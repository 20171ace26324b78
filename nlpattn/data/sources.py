"""Text sources: files, directories, globs and `.gz` read as checked UTF-8 lines; `datasets`
tables; `glue:TASK[:SPLIT]`, the sentences of a GLUE split without labels (default split: train).

Every failure is a `DataError` whose message names the file and the line (or byte offset):
missing path, glob that matches nothing, empty file, directory without files, NUL bytes
(a binary file) or invalid UTF-8. Lines keep their trailing "\\n" so that tokenizers that can
represent newlines (byte-level BPE, char, sentencepiece) see them.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from nlpattn.errors import DataError

TABLE_SUFFIXES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
DOC_SPLITS = ("auto", "file", "line", "blank", "wikitext", "row")
_WIKITEXT_TITLE = re.compile(r"^ ?= [^=].* = ?\r?\n?$")  # " = Title = " (not " = = Section = = ")
_GLOB_CHARS = set("*?[")
_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class TableSource:
    """A `datasets` table: a hub name (`name:config`) or local json/csv/parquet files."""

    name: str  # "json" | "csv" | "parquet" for local files, else the hub dataset name
    config: str | None = None
    data_files: tuple[str, ...] = ()
    split: str = "train"
    text_column: str = "text"
    streaming: bool = False

    def describe(self) -> str:
        """A short human-readable name for messages."""
        files = ",".join(self.data_files)
        return files or f"{self.name}{':' + self.config if self.config else ''}[{self.split}]"


GLUE_PREFIX = "glue:"


def split_glue_specs(specs: Iterable) -> tuple[list, list[TableSource]]:
    """(every other source, the `glue:TASK[:SPLIT]` ones as TableSources), order kept."""
    specs = list(specs)
    is_glue = [isinstance(s, str) and s.startswith(GLUE_PREFIX) for s in specs]
    return ([s for s, g in zip(specs, is_glue) if not g],
            [glue_text_source(s) for s, g in zip(specs, is_glue) if g])


def glue_text_source(spec: str) -> TableSource:
    """`glue:sst2` / `glue:cola:dev` → the texts of that split (local TSV, else the hub)."""
    from nlpattn.data.glue import check_split, get_task, split_file

    parts = spec[len(GLUE_PREFIX):].split(":")
    if len(parts) > 2 or not parts[0]:
        raise DataError(f"{spec}: expected glue:TASK or glue:TASK:SPLIT (e.g. glue:sst2, glue:cola:dev)")
    try:
        task = get_task(parts[0])
        split = check_split(task, parts[1] if len(parts) == 2 else "train")
    except DataError as e:
        raise DataError(f"{spec}: {e}") from None
    path = split_file(task, split)
    return TableSource("glue", task.name, (str(path),) if path else (), split)


def iter_glue_blocks(source: TableSource) -> Iterator[list[str]]:
    """The sentences of a GLUE split: one text per sentence (a pair gives two)."""
    from nlpattn.data.glue import read_glue_split, read_glue_tsv

    examples = (read_glue_tsv(source.config, source.split, source.data_files[0]) if source.data_files
                else read_glue_split(source.config, source.split))  # no local file: the hub
    yield [text for ex in examples for text in (ex.text_a, ex.text_b) if text]


def iter_source_texts(specs: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Every line of every file, then every text of every `glue:` source (tokenizer training)."""
    paths, glue = split_glue_specs(specs)
    yield from iter_lines(resolve_files(paths))
    for source in glue:
        for block in iter_glue_blocks(source):
            yield from block


def resolve_files(patterns: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files, directories (recursively) and globs into a sorted, de-duplicated file list."""
    found: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        if _GLOB_CHARS & set(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"{text}: no files match this pattern")
            found.extend(matches)
        elif Path(text).is_dir():
            files = sorted(p for p in Path(text).rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(text).parts))
            if not files:
                raise DataError(f"{text}: directory contains no files")
            found.extend(files)
        elif Path(text).is_file():
            found.append(Path(text))
        else:
            raise DataError(f"{text}: no such file or directory")
    unique = list(dict.fromkeys(found))
    for path in unique:
        _check_not_empty(path)
    return unique


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if path.suffix == ".gz":
        with _open_binary(path) as f:
            if not f.read(1):
                raise DataError(f"{path}: file is empty (after decompression)")


def _open_binary(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    try:
        return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror or e})") from None


def iter_line_blocks(path: str | os.PathLike, block_bytes: int = _BLOCK_BYTES) -> Iterator[list[str]]:
    """Yield lists of lines (each ending in "\\n" except possibly the last) from a text file."""
    path = Path(path)
    line_no, offset, carry = 1, 0, b""
    with _open_binary(path) as f:
        while True:
            try:
                chunk = f.read(block_bytes)
            except (OSError, EOFError) as e:
                raise DataError(f"{path}: corrupt or truncated file ({e})") from None
            data = carry + chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            block, carry = data[:cut], data[cut:]
            if block:
                yield _decode_block(path, block, line_no, offset)
                line_no += block.count(b"\n")
                offset += len(block)
            if not chunk:
                return


def _decode_block(path: Path, block: bytes, line_no: int, offset: int) -> list[str]:
    nul = block.find(b"\x00")
    if nul >= 0:
        line = line_no + block.count(b"\n", 0, nul)
        raise DataError(f"{path}:{line}: binary data, not text (NUL byte at byte offset {offset + nul})")
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as e:
        line = line_no + block.count(b"\n", 0, e.start)
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte offset {offset + e.start})") from None
    if offset == 0 and text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    last = lines.pop()
    out = [line + "\n" for line in lines]
    if last:
        out.append(last)
    return out


def iter_lines(paths: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Every line of every file, in order (for tokenizer training)."""
    for path in paths:
        for block in iter_line_blocks(path):
            yield from block


def detect_doc_split(first_lines: list[str], default: str = "file") -> str:
    """`wikitext` when an article title line (` = Title = `) appears early, else `default`."""
    return "wikitext" if any(_WIKITEXT_TITLE.match(line) for line in first_lines[:200]) else default


def doc_starts_for(lines: list[str], mode: str, prev_blank: bool) -> tuple[list[bool], bool]:
    """Flags marking which lines begin a new document under `mode`; returns (flags, last blank)."""
    if mode == "line" or mode == "row":
        return [True] * len(lines), False
    if mode == "wikitext":
        return [bool(_WIKITEXT_TITLE.match(line)) for line in lines], False
    if mode == "blank":
        flags = []
        for line in lines:
            blank = not line.strip()
            flags.append(prev_blank and not blank)
            prev_blank = blank
        return flags, prev_blank
    return [False] * len(lines), False  # "file": documents start only at file boundaries


def file_signature(path: Path, full_hash_limit: int = 64 << 20) -> dict:
    """Size, mtime and a content hash (whole file up to 64 MiB, else first + last MiB)."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= full_hash_limit:
            for chunk in iter(lambda: f.read(_BLOCK_BYTES), b""):
                h.update(chunk)
        else:
            h.update(f.read(_BLOCK_BYTES))
            f.seek(-_BLOCK_BYTES, os.SEEK_END)
            h.update(f.read(_BLOCK_BYTES))
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": h.hexdigest()}


def table_source(spec: str, split: str, text_column: str = "text", streaming: bool = False) -> TableSource:
    """Parse a hub name `name[:config]` into a TableSource for `split`."""
    name, _, config = spec.partition(":")
    return TableSource(name=name, config=config or None, split=split, text_column=text_column,
                       streaming=streaming)


def split_table_files(files: list[Path]) -> tuple[list[Path], dict[str, list[Path]]]:
    """Separate plain text files from json/csv/parquet files (grouped by `datasets` builder)."""
    text, tables = [], {}
    for path in files:
        suffixes = [s for s in path.suffixes if s != ".gz"]
        builder = TABLE_SUFFIXES.get(suffixes[-1] if suffixes else "")
        if builder:
            tables.setdefault(builder, []).append(path)
        else:
            text.append(path)
    return text, tables


def load_table(source: TableSource) -> Any:
    """Open a `datasets` table (local builder or hub name); DataError when unavailable."""
    import datasets

    kwargs = {"split": source.split, "streaming": source.streaming}
    if source.data_files:
        kwargs["data_files"] = list(source.data_files)
    try:
        ds = datasets.load_dataset(source.name, source.config, **kwargs)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; report one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{source.describe()}: cannot load dataset ({msg})") from None
    columns = ds.column_names or []
    if columns and source.text_column not in columns:
        raise DataError(f"{source.describe()}: no column '{source.text_column}' "
                        f"(columns: {', '.join(columns)}); set data.text_column")
    return ds


def iter_table_blocks(source: TableSource, batch_rows: int = 2000) -> Iterator[list[str]]:
    """Yield lists of texts (one per row) from a `datasets` table, streaming or not."""
    if source.name == "glue":
        yield from iter_glue_blocks(source)
        return
    ds = load_table(source)
    for batch in ds.iter(batch_size=batch_rows):
        texts = batch[source.text_column]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"{source.describe()}: row {i}: column '{source.text_column}' "
                                f"is {type(text).__name__}, not text")
        yield texts


def table_signature(source: TableSource) -> dict:
    """What identifies a table's content for the cache fingerprint."""
    sig: dict = {"name": source.name, "config": source.config, "split": source.split,
                 "column": source.text_column}
    if source.data_files:
        sig["files"] = [file_signature(Path(p)) for p in source.data_files]
    return sig

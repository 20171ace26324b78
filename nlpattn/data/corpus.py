"""Corpus → token cache: tokenize text once, keep the ids in memory-mapped shards on disk.

Layout of a cache directory (all written under a temporary name, renamed when complete):

    index.json          format, dtype, shards, n_tokens, n_docs, eos_id, fingerprint, sources
    doc_starts.npy      int64 offset of each document's first token (no pickle)
    tokens-00000.bin    raw uint16 ids (uint32 when the vocabulary has more than 65,536 ids)

Documents are stored back to back with `[EOS]` after each one, so a window read for causal
LM training is already "packed with EOS between documents". The fingerprint covers the source
files (size, mtime, content hash), the tokenizer hash and the builder settings: the same
inputs reuse the cache, a changed source or tokenizer rebuilds it. Encoding is batched (the
tokenizer uses all cores) and memoised per space-led segment (`nlpattn.data.memo`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from nlpattn.data.memo import WordMemoEncoder, plain_encode_block
from nlpattn.data.sources import (DOC_SPLITS, TableSource, detect_doc_split, doc_starts_for,
                                  file_signature, iter_line_blocks, iter_table_blocks, resolve_files,
                                  split_glue_specs, split_table_files, table_signature, table_source)
from nlpattn.errors import ConfigError, DataError
from nlpattn.fileio import atomic_dir, atomic_write_json

FORMAT_VERSION = 1
INDEX = "index.json"
DOC_STARTS = "doc_starts.npy"

__all__ = ["TokenCache", "build_token_cache", "build_corpus", "resolve_files", "TableSource"]


class TokenCache:
    """A read-only view of a token cache (or of a token range of it, see `slice`)."""

    def __init__(self, directory: str | os.PathLike, index: dict, start: int = 0, end: int | None = None) -> None:
        self.directory, self.index = Path(directory), index
        self.dtype = np.dtype(index["dtype"])
        self._shards = [np.memmap(self.directory / s["file"], dtype=self.dtype, mode="r")
                        for s in index["shards"]]
        self._offsets = np.cumsum([0] + [len(s) for s in self._shards])
        self.start, self.end = start, int(self._offsets[-1]) if end is None else end
        self.eos_id: int = index["eos_id"]
        self.fingerprint: str = index["fingerprint"]
        self.mixture: Mixture | None = None  # set by build_corpus for data.train_weights

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "TokenCache":
        """Open an existing cache directory; DataError if it is missing or incomplete."""
        index = _read_index(Path(directory))
        if index is None:
            raise DataError(f"{directory}: not a complete token cache (no valid {INDEX})")
        return cls(directory, index)

    def __len__(self) -> int:
        return self.end - self.start

    def __repr__(self) -> str:
        return f"TokenCache({self.directory}, tokens={len(self)}, docs={len(self.doc_starts)}, {self.dtype})"

    @property
    def tokens(self) -> np.ndarray:
        """All tokens of this view as one 1-D array (a memmap view when there is a single shard)."""
        if len(self._shards) == 1:
            return self._shards[0][self.start:self.end]
        return self.window(0, len(self))  # several shards: a copy (use `window` on huge corpora)

    @property
    def doc_starts(self) -> np.ndarray:
        """Offsets (relative to this view) of the documents that start inside it."""
        starts = np.load(self.directory / DOC_STARTS, mmap_mode="r", allow_pickle=False)
        lo, hi = np.searchsorted(starts, [self.start, self.end])
        return np.asarray(starts[lo:hi]) - self.start

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the token shards."""
        return int(self._offsets[-1]) * self.dtype.itemsize

    def window(self, offset: int, length: int) -> np.ndarray:
        """Tokens [offset, offset+length) of this view as an int64 array (crosses shards)."""
        lo = self.start + offset
        hi = lo + length
        if offset < 0 or hi > self.end:
            raise IndexError(f"window [{offset}, {offset + length}) outside a view of {len(self)} tokens")
        if len(self._shards) == 1:
            return self._shards[0][lo:hi].astype(np.int64)
        out, pos = np.empty(length, dtype=np.int64), 0
        first = int(np.searchsorted(self._offsets, lo, side="right")) - 1
        for k in range(first, len(self._shards)):
            s0 = max(lo, int(self._offsets[k])) - int(self._offsets[k])
            s1 = min(hi, int(self._offsets[k + 1])) - int(self._offsets[k])
            if s1 <= s0:
                break
            out[pos:pos + s1 - s0] = self._shards[k][s0:s1]
            pos += s1 - s0
        return out

    def slice(self, start: int, end: int) -> "TokenCache":
        """A view of tokens [start, end) of this view (no copy)."""
        if not 0 <= start <= end <= len(self):
            raise IndexError(f"slice [{start}, {end}) outside a view of {len(self)} tokens")
        return TokenCache(self.directory, self.index, self.start + start, self.start + end)

    def split_tail(self, fraction: float) -> tuple["TokenCache", "TokenCache"]:
        """(first 1-fraction, last fraction) of the tokens, e.g. 90% train / 10% validation."""
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"data.valid_fraction must be in (0, 1), got {fraction}")
        cut = len(self) - max(1, int(round(len(self) * fraction)))
        return self.slice(0, cut), self.slice(cut, len(self))


def _read_index(directory: Path) -> dict | None:
    path = directory / INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        itemsize = np.dtype(index["dtype"]).itemsize
        for shard in index["shards"]:
            if (directory / shard["file"]).stat().st_size != shard["n_tokens"] * itemsize:
                return None
        if not (directory / DOC_STARTS).is_file() or index.get("format") != FORMAT_VERSION:
            return None
        return index
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _ShardWriter:
    """Appends token arrays to fixed-size shard files; records document starts."""

    def __init__(self, directory: Path, dtype: np.dtype, shard_tokens: int) -> None:
        self.directory, self.dtype, self.shard_tokens = directory, dtype, shard_tokens
        self.shards: list[dict] = []
        self.n_tokens, self._file, self._in_shard = 0, None, 0
        self.doc_starts: list[np.ndarray] = []

    def write(self, arr: np.ndarray) -> None:
        while arr.size:
            if self._file is None or self._in_shard == self.shard_tokens:
                self._open_next()
            take = min(arr.size, self.shard_tokens - self._in_shard)
            arr[:take].tofile(self._file)
            self._in_shard += take
            self.shards[-1]["n_tokens"] = self._in_shard
            self.n_tokens += take
            arr = arr[take:]

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        name = f"tokens-{len(self.shards):05d}.bin"
        self._file, self._in_shard = open(self.directory / name, "wb"), 0
        self.shards.append({"file": name, "n_tokens": 0})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        np.save(self.directory / DOC_STARTS,
                np.concatenate(self.doc_starts) if self.doc_starts else np.zeros(0, np.int64))


class _DocAssembler:
    """Turns (lines, doc-start flags) into ids with `[EOS]` closing every document."""

    def __init__(self, tokenizer, writer: _ShardWriter, memo: bool = True) -> None:
        self.tok, self.writer, self.eos = tokenizer, writer, tokenizer.eos_id
        self.try_memo = memo and tokenizer.kind in WordMemoEncoder.KINDS
        self.memo: WordMemoEncoder | None = None
        self.doc_has_text = False  # current document has a non-blank line
        self.open_doc = False
        self.text_lines = 0  # non-blank lines seen (to reject sources without text)

    def encode(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of the block and ids per line (memoised when possible)."""
        if self.try_memo:  # first block: use the memo only if it agrees with the tokenizer
            self.memo, self.try_memo = WordMemoEncoder(self.tok), False
            self.memo = self.memo if self.memo.agrees(lines[:64]) else None
        if self.memo is not None:
            return self.memo.encode_block(lines)
        return plain_encode_block(self.tok, lines)

    def add(self, lines: list[str], flags: list[bool]) -> None:
        """Append one block of lines; a True flag may start a new document at that line."""
        tokens, lengths = self.encode(lines)
        eos_before, doc_first = [], []
        for i, (line, flag, n) in enumerate(zip(lines, flags, lengths.tolist())):
            if flag and self.doc_has_text:  # a new document begins: close the previous one
                eos_before.append(i)
                self.doc_has_text = self.open_doc = False
            if not self.open_doc and n:
                doc_first.append(i)
                self.open_doc = True
            if line.strip():
                self.doc_has_text = True
                self.text_lines += 1
        line_start = np.cumsum(lengths) - lengths
        shift = np.searchsorted(eos_before, doc_first, side="right")
        starts = self.writer.n_tokens + line_start[doc_first] + shift
        self.writer.write(np.insert(tokens, line_start[eos_before], self.eos).astype(self.writer.dtype))
        if len(starts):
            self.writer.doc_starts.append(starts.astype(np.int64))

    def finish(self) -> None:
        """Close the open document with [EOS]."""
        if self.open_doc:
            self.writer.write(np.asarray([self.eos], dtype=self.writer.dtype))
            self.open_doc = self.doc_has_text = False


def _sources_of(sources, text_column: str, streaming: bool) -> list[Path | TableSource]:
    if isinstance(sources, TableSource):
        return [sources]
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    tables = [s for s in sources if isinstance(s, TableSource)]
    paths, glue = split_glue_specs(s for s in sources if not isinstance(s, TableSource))
    text_files, grouped = split_table_files(resolve_files(paths))
    for builder, files in grouped.items():
        tables.append(TableSource(builder, data_files=tuple(str(f) for f in files),
                                  text_column=text_column, streaming=streaming))
    return [*text_files, *tables, *glue]


def _blocks_of(source: Path | TableSource, doc_split: str) -> Iterator[tuple[list[str], list[bool]]]:
    blocks = iter_table_blocks(source) if isinstance(source, TableSource) else iter_line_blocks(source)
    mode, prev_blank, first = doc_split, False, True
    for lines in blocks:
        if first and mode == "auto":
            mode = detect_doc_split(lines, "row" if isinstance(source, TableSource) else "file")
        flags, prev_blank = doc_starts_for(lines, mode, prev_blank)
        if first and flags:
            flags[0] = True  # every file / table starts a document
        first = False
        yield lines, flags


def fingerprint_of(sources: list[Path | TableSource], tokenizer, doc_split: str) -> str:
    """Hash of the source signatures, the tokenizer hash and the builder settings."""
    sigs = [table_signature(s) if isinstance(s, TableSource) else file_signature(s) for s in sources]
    blob = json.dumps({"format": FORMAT_VERSION, "tokenizer": tokenizer.hash(), "doc_split": doc_split,
                       "eos": tokenizer.eos_id, "sources": sigs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_token_cache(sources: Sequence[str | os.PathLike | TableSource] | str | TableSource, tokenizer,
                      cache_dir: str | os.PathLike, *, doc_split: str = "auto", text_column: str = "text",
                      streaming: bool = False, shard_tokens: int = 1 << 27,
                      rebuild: bool = False, memo: bool = True, progress: bool = False) -> TokenCache:
    """Tokenize `sources` (files, dirs, globs, .gz, json/csv/parquet, hub tables, glue:TASK) into `cache_dir`."""
    if doc_split not in DOC_SPLITS:
        raise ConfigError(f"data.doc_split must be one of {', '.join(DOC_SPLITS)}; got '{doc_split}'")
    if tokenizer.eos_id is None:
        raise ConfigError("the tokenizer has no [EOS] token to separate documents")
    srcs = _sources_of(sources, text_column, streaming)
    fingerprint = fingerprint_of(srcs, tokenizer, doc_split)
    index = _read_index(Path(cache_dir))
    if index is not None and index["fingerprint"] == fingerprint and not rebuild:
        return TokenCache(cache_dir, index)
    if index is None and Path(cache_dir).is_dir() and not (Path(cache_dir) / INDEX).exists() \
            and any(Path(cache_dir).iterdir()):
        raise DataError(f"{cache_dir}: exists and is not a token cache; refusing to overwrite it")
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    with atomic_dir(cache_dir, replace=True) as tmp:  # a stale cache of ours (checked above)
        writer = _ShardWriter(tmp, dtype, shard_tokens)
        assembler = _DocAssembler(tokenizer, writer, memo)
        bar = _progress_bar(cache_dir, progress)
        source_tokens = []
        for src in srcs:
            before = (writer.n_tokens, assembler.text_lines)
            for lines, flags in _blocks_of(src, doc_split):
                assembler.add(lines, flags)
                bar.update(writer.n_tokens - bar.n)
            if writer.n_tokens == before[0] or assembler.text_lines == before[1]:
                raise DataError(f"{_describe(src)}: contains no text")
            assembler.finish()
            source_tokens.append([before[0], writer.n_tokens])
        bar.close()
        writer.close()
        n_docs = sum(len(d) for d in writer.doc_starts)
        atomic_write_json(tmp / INDEX, {
            "format": FORMAT_VERSION, "dtype": dtype.name, "n_tokens": writer.n_tokens, "n_docs": n_docs,
            "shards": writer.shards, "eos_id": tokenizer.eos_id, "vocab_size": tokenizer.vocab_size,
            "tokenizer": tokenizer.kind, "doc_split": doc_split, "fingerprint": fingerprint,
            "sources": [_describe(s) for s in srcs], "source_tokens": source_tokens})
    return TokenCache.open(cache_dir)


def _describe(src: Path | TableSource) -> str:
    return src.describe() if isinstance(src, TableSource) else str(src)


def _progress_bar(cache_dir, enabled: bool):
    """A tqdm bar of tokens written (shown on a terminal only, when `enabled`)."""
    from tqdm.auto import tqdm

    return tqdm(desc=f"token cache {Path(cache_dir).name}", unit="tok", unit_scale=True, mininterval=1.0,
                dynamic_ncols=True, disable=None if enabled else True)


def build_corpus(cfg, tokenizer) -> tuple[TokenCache, TokenCache | None]:
    """Train and validation caches from a Config: valid_files, else valid_fraction, else the dataset's validation split."""
    d = cfg.data
    root = Path(d.cache_dir) if d.cache_dir else Path(cfg.output_dir) / "cache"
    opts = {"doc_split": d.doc_split, "text_column": d.text_column, "streaming": d.streaming,
            "progress": _is_main() and getattr(getattr(cfg, "train", None), "progress", False)}
    if d.train_files and d.train_weights:
        groups = [_sources_of([entry], d.text_column, d.streaming) for entry in d.train_files]
        train = _weighted_cache(groups, d.train_files, tokenizer, root / "train", opts)
        train, valid = _with_valid(cfg, tokenizer, root, opts, train)
        train.mixture = train_mixture(train, groups, d.train_files, d.train_weights)
        return train, valid
    if d.train_files:
        train = build_token_cache(d.train_files, tokenizer, root / "train", **opts)
    elif d.dataset:
        train = build_token_cache(table_source(d.dataset, "train", d.text_column, d.streaming),
                                  tokenizer, root / "train", **opts)
    else:
        raise ConfigError("data.train_files and data.dataset are both empty: nothing to train on")
    return _with_valid(cfg, tokenizer, root, opts, train)


def _with_valid(cfg, tokenizer, root: Path, opts: dict, train: TokenCache) -> tuple[TokenCache, TokenCache | None]:
    """(train, validation): valid_files, else the train tail, else the dataset's validation split."""
    d = cfg.data
    if d.valid_files:
        return train, build_token_cache(d.valid_files, tokenizer, root / "valid", **opts)
    if d.valid_fraction > 0:
        return train.split_tail(d.valid_fraction)
    if d.dataset and not d.train_files:
        source = table_source(d.dataset, "validation", d.text_column, d.streaming)
        return train, build_token_cache(source, tokenizer, root / "valid", **opts)
    return train, None


def _is_main() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


# --- data.train_weights: a mixture of sources --------------------------------------------------

# (normalised weight, token ranges [start, end) of the view, the entry) per entry with weight > 0
Mixture = list[tuple[float, list[tuple[int, int]], str]]


def _weighted_cache(groups: list[list], entries: list[str], tokenizer, cache_dir: Path, opts: dict) -> TokenCache:
    """One cache of every entry's sources, recording each source's token range (`source_tokens`)."""
    seen: dict[str, str] = {}
    for entry, group in zip(entries, groups):
        for src in group:
            name = _describe(src)
            if name in seen and seen[name] != entry:
                raise ConfigError(f"data.train_files: {name} is in two weighted entries "
                                  f"('{seen[name]}' and '{entry}')")
            seen[name] = entry
    flat = [src for group in groups for src in group]
    cache = build_token_cache(flat, tokenizer, cache_dir, **opts)
    if "source_tokens" not in cache.index:  # a cache from before source ranges were recorded
        cache = build_token_cache(flat, tokenizer, cache_dir, rebuild=True, **opts)
    return cache


def train_mixture(view: TokenCache, groups: list[list], entries: list[str], weights: list[float]) -> Mixture:
    """Each weighted entry's token ranges inside `view` (merged where contiguous), weights summing to 1."""
    ranges = dict(zip(view.index["sources"], view.index["source_tokens"]))
    total = float(sum(weights))
    mixture: Mixture = []
    for entry, group, weight in zip(entries, groups, weights):
        spans = sorted((max(s, view.start) - view.start, min(e, view.end) - view.start)
                       for s, e in (ranges[_describe(src)] for src in group))
        merged: list[tuple[int, int]] = []
        for s, e in (span for span in spans if span[1] > span[0]):
            if merged and merged[-1][1] == s:
                merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        if weight > 0 and not merged:
            raise ConfigError(f"data.train_weights: '{entry}' has no training tokens left "
                              "(all held out by data.valid_fraction?)")
        if weight > 0:
            mixture.append((weight / total, merged, entry))
    return mixture

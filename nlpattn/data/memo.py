"""Fast corpus encoding: encode each distinct " word" once, then assemble lines with numpy.

Natural text repeats a small vocabulary of space-led segments (" the", " lobster", " ."), so a
corpus is cut into such segments, only segments not seen before go to the tokenizer, and the
token ids of a block are gathered from a flat store. This is exact for tokenizers whose
pre-tokenizer never joins text across a space that follows a non-space character (byte-level
BPE's GPT-2 regex, BERT's whitespace split, Metaspace, characters): then
encode(line) == concat(encode(segment)). `build_token_cache` still checks it on the first lines.
"""
from __future__ import annotations

import itertools
import re

import numpy as np

_FIRST = "\x00"  # key prefix of a line's first segment (other keys mean " " + key)
_SPLIT = re.compile(r"(?= \S)")  # before a space that is followed by a non-space
_UNSAFE = re.compile(r"  |[^\S ] ")  # a double space, or other whitespace then a space


def _careful_split(line: str) -> list[str]:
    """Like `line.split(" ")` but cutting only before a space followed by a non-space."""
    segs = [s for s in _SPLIT.split(line) if s] or [""]
    return [segs[0]] + [s[1:] for s in segs[1:]]


def plain_encode_block(tokenizer, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(all ids of `lines` concatenated, ids per line) with the tokenizer's own batch encoding."""
    ids = tokenizer.encode_batch(lines)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return tokens, lengths


class WordMemoEncoder:
    """Per-segment memo of token ids; `encode_block` is exact and much faster than per-line encoding."""

    KINDS = ("bpe", "wordpiece", "unigram", "char")

    def __init__(self, tokenizer, max_segments: int = 1 << 20) -> None:
        self.tok, self.max_segments = tokenizer, max_segments
        self._reset()

    def _reset(self) -> None:
        self.index: dict[str, int] = {}  # segment key → segment number
        self.seg_start = np.zeros(1024, dtype=np.int64)
        self.seg_len = np.zeros(1024, dtype=np.int64)
        self.store = np.zeros(1 << 16, dtype=np.int64)
        self.used = 0  # ids in store

    def _keys(self, lines: list[str]) -> tuple[list[str], np.ndarray] | None:
        """Segment keys of every line, flat, and the number of segments per line (None: no memo)."""
        text = "".join(lines)
        if _FIRST in text:  # the key marker itself occurs in the text (only possible in tables)
            return None
        pieces = [line.split(" ") if _UNSAFE.search(line) is None else _careful_split(line) for line in lines]
        for p in pieces:
            p[0] = _FIRST + p[0]
        counts = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        return list(itertools.chain.from_iterable(pieces)), counts

    def _learn(self, keys: list[str]) -> None:
        """Encode the segments not seen before and append their ids to the store."""
        new = list(set(keys).difference(self.index))
        if not new:
            return
        if len(self.index) + len(new) > self.max_segments:
            self._reset()
            new = list(set(keys))
        texts = [k[1:] if k.startswith(_FIRST) else " " + k for k in new]
        ids = self.tok.encode_batch(texts)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        first = len(self.index)
        self._grow(first + len(new), self.used + len(flat))
        self.seg_len[first:first + len(new)] = lengths
        self.seg_start[first:first + len(new)] = self.used + np.cumsum(lengths) - lengths
        self.store[self.used:self.used + len(flat)] = flat
        self.used += len(flat)
        self.index.update(zip(new, range(first, first + len(new))))

    def _grow(self, n_segments: int, n_ids: int) -> None:
        if n_segments > len(self.seg_len):
            size = max(n_segments, 2 * len(self.seg_len))
            self.seg_len = np.resize(self.seg_len, size)
            self.seg_start = np.resize(self.seg_start, size)
        if n_ids > len(self.store):
            self.store = np.resize(self.store, max(n_ids, 2 * len(self.store)))

    def encode_block(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(all ids of `lines` concatenated, ids per line), identical to the tokenizer's."""
        keyed = self._keys(lines)
        if keyed is None:
            return plain_encode_block(self.tok, lines)
        keys, counts = keyed
        self._learn(keys)
        seg = np.fromiter(map(self.index.__getitem__, keys), dtype=np.int64, count=len(keys))
        lengths, starts = self.seg_len[seg], self.seg_start[seg]
        ends = np.cumsum(lengths)
        gather = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths)
        line_first = np.cumsum(counts) - counts
        return self.store[gather], np.add.reduceat(lengths, line_first) if len(lines) else counts

    def encode_batch(self, lines: list[str]) -> list[list[int]]:
        """Token ids per line (for checks; `encode_block` is the fast path)."""
        tokens, lengths = self.encode_block(lines)
        return [part.tolist() for part in np.split(tokens, np.cumsum(lengths)[:-1])] if len(lines) else []

    def agrees(self, lines: list[str]) -> bool:
        """Whether the memo gives exactly the tokenizer's own ids on `lines`."""
        return self.encode_batch(lines) == self.tok.encode_batch(lines)

"""Tokenizers: byte-level BPE, WordPiece, Unigram (HF `tokenizers`), sentencepiece, characters.

One wrapper, `Tokenizer`, hides which library is underneath. Every kind has the same special
tokens at the same ids, so models and collators never branch on the kind:

    0 [PAD]  1 [UNK]  2 [CLS]  3 [SEP]  4 [MASK]  5 [BOS]  6 [EOS]  7.. <extra_id_0>, <extra_id_1>, ...

BOS/EOS are their own tokens (not CLS/SEP): EOS separates documents in the token cache and ends
seq2seq targets, BOS starts the seq2seq decoder. `<extra_id_i>` are T5 span-corruption sentinels
(`tokenizer.n_sentinels` of them). Round trips: `decode(encode(x)) == x` exactly for bpe, char,
unigram and both sentencepiece kinds (no whitespace normalisation, no dummy prefix); WordPiece
is BERT-style and keeps the characters but not the spacing around punctuation, nor newlines.

A run directory holds `tokenizer.json` (tokenizers kinds, loadable by
`transformers.PreTrainedTokenizerFast.from_pretrained`) or `tokenizer.model` (sentencepiece),
plus `tokenizer_config.json` with the kind and the special tokens.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nlpattn.config import TRUNCATIONS, TokenizerConfig
from nlpattn.errors import ConfigError, DataError
from nlpattn.fileio import atomic_path, atomic_write_json

ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]",
                  "bos": "[BOS]", "eos": "[EOS]"}
CONFIG_FILE = "tokenizer_config.json"
_BYTE_SPACE = set("ĠĉĊċČč")  # byte-level BPE's stand-ins for " \t\n\v\f\r"


def sentinel_tokens(n: int) -> list[str]:
    """T5-style sentinel token strings `<extra_id_0>` … `<extra_id_{n-1}>`."""
    return [f"<extra_id_{i}>" for i in range(n)]


class _HFBackend:
    """A `tokenizers.Tokenizer` behind the small interface `Tokenizer` needs."""

    filename = "tokenizer.json"

    def __init__(self, tok) -> None:
        self.tok = tok
        self._fast = getattr(tok, "encode_batch_fast", tok.encode_batch)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._fast(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def id_to_token(self, i: int) -> str:
        return self.tok.id_to_token(i) or ""

    def vocab(self) -> list[str]:
        inv = {i: t for t, i in self.tok.get_vocab(with_added_tokens=True).items()}
        return [inv.get(i, "") for i in range(self.size())]

    def size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def serialize(self) -> bytes:
        return self.tok.to_str().encode("utf-8")

    def write(self, path: Path) -> None:
        self.tok.save(str(path))


class _SPBackend:
    """A `sentencepiece.SentencePieceProcessor` behind the same interface."""

    filename = "tokenizer.model"

    def __init__(self, proto: bytes) -> None:
        import sentencepiece as spm

        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        self.threads = os.cpu_count() or 1

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=self.threads)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def token_to_id(self, token: str) -> int | None:
        i = self.sp.piece_to_id(token)
        return None if i == self.sp.unk_id() and token != self.sp.id_to_piece(i) else i

    def id_to_token(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def vocab(self) -> list[str]:
        return [self.sp.id_to_piece(i) for i in range(self.size())]

    def size(self) -> int:
        return self.sp.get_piece_size()

    def serialize(self) -> bytes:
        return self.proto

    def write(self, path: Path) -> None:
        path.write_bytes(self.proto)


class Tokenizer:
    """The one tokenizer type: encode/decode, special ids, word ids, save/load, content hash."""

    def __init__(self, backend, kind: str, special_tokens: dict[str, str], sentinels: list[str]) -> None:
        self.backend, self.kind = backend, kind
        self.special_tokens = dict(special_tokens)
        self.sentinels = list(sentinels)
        ids = {role: backend.token_to_id(tok) for role, tok in self.special_tokens.items()}
        self._ids = {role: ids.get(role) for role in ROLES}
        for a, b in (("bos", "cls"), ("eos", "sep"), ("cls", "bos"), ("sep", "eos")):
            if self._ids[a] is None:  # foreign (transformers) tokenizers may lack some roles
                self._ids[a] = self._ids[b]
        self.sentinel_ids: list[int] = [backend.token_to_id(t) for t in self.sentinels]
        self.special_ids: set[int] = {i for i in [*self._ids.values(), *self.sentinel_ids] if i is not None}
        self._tables: tuple[np.ndarray, np.ndarray] | None = None

    vocab_size = property(lambda self: self.backend.size(), doc="Number of ids (specials included).")
    pad_id = property(lambda self: self._ids["pad"], doc="Id of [PAD].")
    unk_id = property(lambda self: self._ids["unk"], doc="Id of [UNK].")
    cls_id = property(lambda self: self._ids["cls"], doc="Id of [CLS].")
    sep_id = property(lambda self: self._ids["sep"], doc="Id of [SEP].")
    mask_id = property(lambda self: self._ids["mask"], doc="Id of [MASK].")
    bos_id = property(lambda self: self._ids["bos"], doc="Id of [BOS] (seq2seq decoder start).")
    eos_id = property(lambda self: self._ids["eos"], doc="Id of [EOS] (document separator).")

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; with specials: `[CLS] text [SEP]`."""
        return self.encode_batch([text], add_special_tokens)[0]

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        """Token ids of many texts, encoded in parallel by the backend."""
        out = self.backend.encode_batch(list(texts))
        if add_special_tokens:
            out = [[self.cls_id, *ids, self.sep_id] for ids in out]
        return out

    def encode_pair(self, a: str, b: str | None = None,
                    max_length: int | None = None) -> tuple[list[int], list[int]]:
        """`[CLS] a [SEP] b [SEP]` ids and token types, longer side truncated first."""
        return self.encode_pairs([a], None if b is None else [b], max_length)[0]

    def encode_pairs(self, a: Sequence[str], b: Sequence[str] | None = None, max_length: int | None = None,
                     truncation: str = "head", head_tokens: int = 128) -> list[tuple[list[int], list[int]]]:
        """Batched `encode_pair`: one backend call per side; single texts cut by `truncation`."""
        if truncation not in TRUNCATIONS:
            raise ConfigError(f"glue.truncation must be one of {', '.join(TRUNCATIONS)}; got '{truncation}'")
        if b is not None and truncation != "head":
            raise ConfigError(f"glue.truncation={truncation} is for single-text tasks; "
                              "sentence pairs are truncated longest-first (use head)")
        ids_a = self.backend.encode_batch(list(a))
        ids_b = self.backend.encode_batch(list(b)) if b is not None else [None] * len(ids_a)
        return [self._pair(x, y, max_length, truncation, head_tokens) for x, y in zip(ids_a, ids_b)]

    def _pair(self, a: list[int], b: list[int] | None, max_length: int | None,
              truncation: str = "head", head_tokens: int = 128) -> tuple[list[int], list[int]]:
        if max_length is not None:
            budget = max_length - (2 if b is None else 3)
            if budget < (1 if b is None else 2):
                raise ConfigError(f"max_length={max_length} leaves no room for text after the special tokens")
            if b is None:
                a = truncate_single(a, budget, truncation, head_tokens)
            else:
                a, b = truncate_longest_first(a, b, budget)
        ids = [self.cls_id, *a, self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_id]
            types += [1] * (len(b) + 1)
        return ids, types

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; special tokens (and [PAD]/[UNK]) dropped unless asked to keep them."""
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.special_ids]
        return self.backend.decode(ids)

    def id_to_token(self, i: int) -> str:
        """The vocabulary string of id `i`."""
        return self.backend.id_to_token(int(i))

    def vocab(self) -> list[str]:
        """All token strings in id order."""
        return self.backend.vocab()

    def word_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-id booleans (starts_word, ends_word): a word is a whitespace-delimited unit."""
        if self._tables is None:
            vocab = self.vocab()
            starts = np.zeros(len(vocab), dtype=bool)
            ends = np.zeros(len(vocab), dtype=bool)
            for i, tok in enumerate(vocab):
                starts[i], ends[i] = _word_edges(tok, self.kind)
            special = list(self.special_ids)
            starts[special] = ends[special] = True
            self._tables = (starts, ends)
        return self._tables

    def word_ids_from_ids(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Word index of each token (0-based, consecutive); specials are their own words."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return np.zeros(0, dtype=np.int64)
        starts, ends = self.word_tables()
        first = starts[ids].copy()
        first[1:] |= ends[ids[:-1]]
        first[0] = True
        return np.cumsum(first) - 1

    def word_ids(self, text: str) -> tuple[list[int], list[int]]:
        """(ids, word index per id) for whole-word masking."""
        ids = self.encode(text)
        return ids, self.word_ids_from_ids(ids).tolist()

    def hash(self) -> str:
        """A stable content hash of the vocabulary, model and special tokens."""
        h = hashlib.sha256(self.kind.encode())
        h.update(json.dumps([self.special_tokens, self.sentinels], sort_keys=True).encode())
        h.update(self.backend.serialize())
        return h.hexdigest()

    def config_dict(self) -> dict:
        """The `tokenizer_config.json` content (also readable by transformers)."""
        d = {"nlpattn_kind": self.kind, "tokenizer_class": "PreTrainedTokenizerFast"}
        d.update({f"{role}_token": tok for role, tok in self.special_tokens.items()})
        d["additional_special_tokens"] = self.sentinels
        return d

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the backend file and `tokenizer_config.json` into `directory` (atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / self.backend.filename
        with atomic_path(target) as tmp:
            self.backend.write(tmp)
        atomic_write_json(directory / CONFIG_FILE, self.config_dict())
        return target


def _word_edges(tok: str, kind: str) -> tuple[bool, bool]:
    """Whether token string `tok` begins a word / forces the next token to begin one.

    A token with leading whitespace begins a word; one with trailing whitespace (and some
    non-space text) ends it. A whitespace-only token begins the word that follows it.
    """
    if not tok:
        return True, True
    if kind == "wordpiece":
        return not tok.startswith("##"), False
    if kind == "bpe":
        surface = "".join(" " if c in _BYTE_SPACE else c for c in tok)
    else:
        surface = tok.replace("\u2581", " ")  # sentencepiece / Metaspace word marker
    return surface[0].isspace(), surface[-1].isspace() and not surface.isspace()


def truncate_single(ids: list[int], budget: int, truncation: str = "head", head_tokens: int = 128) -> list[int]:
    """At most `budget` ids: the first (head), the last (tail), or the first `head_tokens` plus
    the last budget-head_tokens (head+tail; Sun et al. 2019, "How to Fine-Tune BERT", 5.3.1)."""
    if len(ids) <= budget:
        return ids
    head = {"head": budget, "tail": 0}.get(truncation, min(head_tokens, budget))
    tail = budget - head
    return ids[:head] + (ids[len(ids) - tail:] if tail else [])


def truncate_longest_first(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the end of the longer list (b on ties) until len(a)+len(b) <= budget."""
    excess = len(a) + len(b) - budget
    if excess <= 0:
        return a, b
    la, lb = len(a), len(b)
    cut = min(excess, abs(la - lb))
    la, lb = (la - cut, lb) if la > lb else (la, lb - cut)
    rest = excess - cut
    la, lb = la - rest // 2, lb - (rest - rest // 2)
    return a[: max(la, 0)], b[: max(lb, 0)]


def train_tokenizer(cfg: TokenizerConfig, files: Sequence[str | os.PathLike] = (),
                    texts: Iterable[str] | None = None) -> Tokenizer:
    """Train a tokenizer of `cfg.kind` on text files (or an iterable of texts)."""
    from nlpattn.data import tokenizer_trainers as trainers

    if cfg.kind not in trainers.TRAINERS:
        raise ConfigError(f"tokenizer.kind: unknown kind '{cfg.kind}' "
                          f"(choose from {', '.join(trainers.TRAINERS)})")
    n_special = len(ROLES) + cfg.n_sentinels
    if cfg.vocab_size <= n_special:
        raise ConfigError(f"tokenizer.vocab_size={cfg.vocab_size} must be larger than the "
                          f"{n_special} special tokens ({len(ROLES)} + {cfg.n_sentinels} sentinels)")
    if texts is None:
        from nlpattn.data.sources import iter_source_texts

        if not files:
            raise ConfigError("data.train_files: no files given to train the tokenizer on")
        texts = iter_source_texts(files)
    specials = [SPECIAL_TOKENS[r] for r in ROLES] + sentinel_tokens(cfg.n_sentinels)
    backend = trainers.TRAINERS[cfg.kind](cfg, texts, specials)
    return Tokenizer(backend, cfg.kind, SPECIAL_TOKENS, sentinel_tokens(cfg.n_sentinels))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load from a run directory, a `tokenizer.json`/`.model` file, or a transformers directory."""
    path = Path(path)
    directory, file = (path, None) if path.is_dir() else (path.parent, path)
    if file is None:
        candidates = [directory / n for n in ("tokenizer.json", "tokenizer.model", "spiece.model")]
        file = next((c for c in candidates if c.is_file()), None)
    if file is None or not file.is_file():
        raise DataError(f"{path}: no tokenizer.json or tokenizer.model found")
    meta = _read_config(directory / CONFIG_FILE)
    if file.suffix == ".json":
        from tokenizers import Tokenizer as HFTokenizer

        try:
            backend = _HFBackend(HFTokenizer.from_file(str(file)))
        except Exception as e:  # noqa: BLE001 - the Rust error types are not exported
            raise DataError(f"{file}: not a valid tokenizers file ({str(e).splitlines()[0]})") from None
        kind = meta.get("nlpattn_kind") or _infer_kind(backend)
    else:
        try:
            backend = _SPBackend(file.read_bytes())
        except Exception as e:  # noqa: BLE001 - sentencepiece raises RuntimeError/OSError
            raise DataError(f"{file}: not a valid sentencepiece model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        kind = meta.get("nlpattn_kind") or "sentencepiece-unigram"
    specials = {role: _token_text(meta.get(f"{role}_token")) for role in ROLES}
    specials = {r: t for r, t in specials.items() if t is not None} if meta else dict(SPECIAL_TOKENS)
    sentinels = [_token_text(t) for t in meta.get("additional_special_tokens", [])
                 if str(_token_text(t)).startswith("<extra_id_")]
    return Tokenizer(backend, kind, specials, sentinels)


def _read_config(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: invalid JSON ({e})") from None


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _infer_kind(backend: _HFBackend) -> str:
    model = json.loads(backend.serialize())["model"]["type"]
    return {"BPE": "bpe", "WordPiece": "wordpiece", "Unigram": "unigram", "WordLevel": "char"}.get(model, model)


def train_or_load(cfg, files: Sequence[str] | None = None) -> Tokenizer:
    """`tokenizer.path` if set, else the run dir's tokenizer, else train on `data.train_files` and save."""
    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer.path)
    run_dir = Path(cfg.output_dir)
    if (run_dir / "tokenizer.json").is_file() or (run_dir / "tokenizer.model").is_file():
        return load_tokenizer(run_dir)
    tok = train_tokenizer(cfg.tokenizer, files if files is not None else cfg.data.train_files)
    tok.save(run_dir)
    return tok


def cli_main(args: argparse.Namespace) -> int:
    """`nlpattn tokenizer train --config X [k=v ...]`: train on data.train_files, save to output_dir."""
    from nlpattn.config import load_config

    if args.action != "train":
        raise ConfigError(f"nlpattn tokenizer: unknown action '{args.action}' (use: nlpattn tokenizer train)")
    from nlpattn.rundir import RunDirGuard

    cfg = load_config(args.config, args.overrides)
    start = time.perf_counter()
    with RunDirGuard(cfg.output_dir):
        tok = train_tokenizer(cfg.tokenizer, cfg.data.train_files)
        path = tok.save(cfg.output_dir)
    print(f"trained {tok.kind} tokenizer: {tok.vocab_size} tokens in "
          f"{time.perf_counter() - start:.1f}s → {path}")
    return 0

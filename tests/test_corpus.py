"""Token cache: exact contents, reuse/rebuild by fingerprint, inputs of every form, bad input, windows."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nlpattn.config import TokenizerConfig, load_config
from nlpattn.data.blocks import BlockLoader, RandomBlocks, SequentialBlocks
from nlpattn.data.collate import MLMCollator
from nlpattn.data.corpus import TokenCache, build_corpus, build_token_cache, resolve_files
from nlpattn.data.memo import WordMemoEncoder
from nlpattn.data.sources import TableSource
from nlpattn.errors import ConfigError, DataError
from nlpattn.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
TITLE = re.compile(r"^ = [^=].* = \n$")


def read_lines(rel: str) -> list[str]:
    return gzip.decompress((REPO / rel).read_bytes()).decode("utf-8").splitlines(keepends=True)


@pytest.fixture(scope="module")
def wiki() -> list[str]:
    return read_lines("data/wikitext-2/valid.txt.gz")[:700]  # 13 articles


@pytest.fixture(scope="module")
def tok(wiki):
    return train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=600), texts=wiki)


@pytest.fixture()
def wiki_file(tmp_path, wiki) -> Path:
    path = tmp_path / "src" / "wiki.txt"
    path.parent.mkdir()
    path.write_text("".join(wiki), encoding="utf-8")
    return path


def expected_tokens(lines: list[str], tok) -> tuple[list[int], list[int]]:
    """Independent reference: documents start at title lines; each is followed by [EOS]."""
    docs: list[list[str]] = [[]]
    for line in lines:
        if TITLE.match(line) and any(x.strip() for x in docs[-1]):
            docs.append([])
        docs[-1].append(line)
    ids, starts = [], []
    for doc in docs:
        starts.append(len(ids))
        ids += [i for line in doc for i in tok.encode(line)] + [tok.eos_id]
    return ids, starts


def test_cache_holds_documents_separated_by_eos(wiki_file, wiki, tok, tmp_path):
    cache = build_token_cache([wiki_file], tok, tmp_path / "cache")
    ids, starts = expected_tokens(wiki, tok)
    assert len(starts) == 13
    assert cache.tokens.dtype == np.uint16
    assert cache.tokens.tolist() == ids
    assert cache.doc_starts.tolist() == starts
    assert cache.nbytes == 2 * len(ids)
    assert json.loads((tmp_path / "cache" / "index.json").read_text())["n_docs"] == 13


def test_same_inputs_reuse_and_changes_rebuild(wiki_file, wiki, tok, tmp_path):
    first = build_token_cache([wiki_file], tok, tmp_path / "cache")
    shard = tmp_path / "cache" / "tokens-00000.bin"
    inode = shard.stat().st_ino
    again = build_token_cache([wiki_file], tok, tmp_path / "cache")
    assert again.fingerprint == first.fingerprint and shard.stat().st_ino == inode
    with open(wiki_file, "a", encoding="utf-8") as f:
        f.write(" one more line\n")
    changed = build_token_cache([wiki_file], tok, tmp_path / "cache")
    assert changed.fingerprint != first.fingerprint and len(changed) > len(first)
    other_tok = train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=620), texts=wiki)
    retok = build_token_cache([wiki_file], other_tok, tmp_path / "cache")
    assert retok.fingerprint != changed.fingerprint


def test_gz_directory_glob_and_shards_give_the_same_tokens(wiki_file, tok, tmp_path):
    plain = build_token_cache([wiki_file], tok, tmp_path / "plain").tokens.tolist()
    gz = tmp_path / "gz" / "wiki.txt.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(wiki_file.read_bytes()))
    assert build_token_cache([gz], tok, tmp_path / "c1").tokens.tolist() == plain
    assert build_token_cache([str(gz.parent)], tok, tmp_path / "c2").tokens.tolist() == plain
    assert build_token_cache([str(tmp_path / "g*" / "*.gz")], tok, tmp_path / "c3").tokens.tolist() == plain
    sharded = build_token_cache([wiki_file], tok, tmp_path / "c4", shard_tokens=1000)
    assert len(sharded.index["shards"]) > 5
    assert sharded.tokens.tolist() == plain
    assert sharded.window(995, 10).tolist() == plain[995:1005]


class WideTokenizer:
    """A real tokenizer that claims a vocabulary too large for uint16."""

    def __init__(self, tok) -> None:
        self.tok = tok

    def __getattr__(self, name):
        return getattr(self.tok, name)

    vocab_size = 70_000


def test_uint32_when_vocab_exceeds_uint16(wiki_file, tok, tmp_path):
    cache = build_token_cache([wiki_file], WideTokenizer(tok), tmp_path / "c", memo=False)
    assert cache.tokens.dtype == np.uint32
    assert cache.tokens.tolist() == build_token_cache([wiki_file], tok, tmp_path / "d").tokens.tolist()


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram", "char"])
def test_word_memo_encoder_is_exact(kind):
    lines = read_lines("data/wikitext-2/test.txt.gz")[:1500] + read_lines("data/tinyshakespeare/input.txt.gz")[:3000]
    lines += ["a  b", "a  \n", "a \t b", "\t x", "x\t  y ", "  ", " ", "x ", " \n", "hi [MASK] there",
              "a\n b", "it 's 3 @.@ 5", "日本 語  x", "  lead", "trail  ", "x \r\n"]
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=120 if kind == "char" else 800),
                          texts=lines[:800])
    memo = WordMemoEncoder(tok)
    assert memo.encode_batch(lines) == tok.encode_batch(lines)
    assert len(memo.index) < len(lines) * 3  # segments were shared, not one per occurrence
    odd = ["a\x00b c", " x"]  # the memo's key marker in the text: plain encoding for that block
    assert WordMemoEncoder(tok).encode_batch(odd) == tok.encode_batch(odd)


def test_tables_through_datasets_match_text_files(tmp_path, tok, wiki):
    rows = [line for line in wiki[:120] if line.strip()]
    (tmp_path / "t.txt").write_text("".join(rows), encoding="utf-8")
    ref = build_token_cache([tmp_path / "t.txt"], tok, tmp_path / "ref", doc_split="line").tokens.tolist()
    with open(tmp_path / "t.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"text": r, "n": 1}) + "\n")
    for streaming in (False, True):
        got = build_token_cache([tmp_path / "t.jsonl"], tok, tmp_path / f"j{streaming}",
                                streaming=streaming, doc_split="row")
        assert got.tokens.tolist() == ref
    import datasets

    datasets.Dataset.from_dict({"body": rows}).to_parquet(str(tmp_path / "t.parquet"))
    got = build_token_cache([tmp_path / "t.parquet"], tok, tmp_path / "pq", text_column="body", doc_split="row")
    assert got.tokens.tolist() == ref
    with pytest.raises(DataError, match="no column 'text'"):
        build_token_cache([tmp_path / "t.parquet"], tok, tmp_path / "bad")
    source = TableSource("json", data_files=(str(tmp_path / "t.jsonl"),))
    auto = build_token_cache(source, tok, tmp_path / "ts")  # rows hold WikiText lines: titles start docs
    assert auto.index["n_docs"] == sum(line.startswith(" = ") and line[3] != "=" for line in rows)


def test_bad_inputs_raise_and_leave_no_partial_cache(tmp_path, tok, wiki_file):
    cases = {
        "missing.txt": (None, "missing.txt: no such file or directory"),
        "empty.txt": (b"", "empty.txt: file is empty"),
        "blank.txt": (b"\n \n\n", "blank.txt: contains no text"),
        "bin.dat": (b"ok line\nmore\x00\xff", r"bin.dat:2: binary data, not text \(NUL byte at byte offset 12\)"),
        "latin.txt": ("line\nzwei\ndrei f\xfcr\n".encode("latin-1"), r"latin.txt:3: not valid UTF-8 \(byte offset 16\)"),
    }
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=message):
            build_token_cache([wiki_file, tmp_path / name], tok, tmp_path / "cache")
        assert not (tmp_path / "cache").exists()
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataError, match="emptydir: directory contains no files"):
        resolve_files([tmp_path / "emptydir"])
    with pytest.raises(DataError, match="no files match"):
        resolve_files([str(tmp_path / "*.none")])
    with pytest.raises(DataError, match="is not a token cache; refusing to overwrite"):
        build_token_cache([wiki_file], tok, wiki_file.parent)
    assert wiki_file.is_file()
    good = build_token_cache([wiki_file], tok, tmp_path / "cache")
    with pytest.raises(DataError):  # a failed rebuild keeps the old complete cache
        build_token_cache([wiki_file, tmp_path / "bin.dat"], tok, tmp_path / "cache")
    assert TokenCache.open(tmp_path / "cache").tokens.tolist() == good.tokens.tolist()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_valid_fraction_holds_out_the_tail(tmp_path, tok):
    cfg = load_config(None, [f"output_dir={tmp_path / 'run'}", "data.valid_fraction=0.1",
                             "data.train_files=[" + str(REPO / "data/tinyshakespeare/input.txt.gz") + "]"])
    small = train_tokenizer(TokenizerConfig(kind="char", vocab_size=100),
                            texts=read_lines("data/tinyshakespeare/input.txt.gz")[:2000])
    train, valid = build_corpus(cfg, small)
    full = TokenCache.open(tmp_path / "run" / "cache" / "train")
    assert len(full) == 1_115_394 + 1  # one document (no title lines), one [EOS]
    assert len(train) + len(valid) == len(full) and abs(len(valid) / len(full) - 0.1) < 1e-4
    assert valid.window(0, 50).tolist() == full.window(len(train), 50).tolist()
    assert small.decode(valid.window(len(valid) - 41, 40)).endswith("Whiles thou art waking.\n")


def test_random_blocks_are_deterministic_and_resumable(wiki_file, tok, tmp_path):
    cache = build_token_cache([wiki_file], tok, tmp_path / "c")
    ds = RandomBlocks(cache, 64, seed=3)
    assert torch.equal(ds[10], RandomBlocks(cache, 64, seed=3)[10])
    assert not torch.equal(ds[10], RandomBlocks(cache, 64, seed=4)[10])
    assert torch.equal(ds[10], torch.from_numpy(cache.tokens[ds.position(10):ds.position(10) + 64].astype(np.int64)))
    positions = [ds.position(i) for i in range(5000)]
    assert min(positions) < 50 and max(positions) > len(cache) - 64 - 50  # covers the whole corpus
    collate = MLMCollator(tok)
    loader = BlockLoader(ds, 8, collate, seed=7)
    for _ in range(5):
        next(loader)
    state = loader.state_dict()
    expected = [next(loader) for _ in range(3)]
    resumed = BlockLoader(RandomBlocks(cache, 64, seed=0), 8, collate, seed=0)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    for want in expected:
        got = next(resumed)
        assert all(torch.equal(got[k], want[k]) for k in ("input_ids", "labels"))
    other_rank = BlockLoader(ds, 8, collate, seed=7, rank=1, world_size=2)
    assert not torch.equal(other_rank.batch(0)["labels"], BlockLoader(ds, 8, collate, seed=7, world_size=2).batch(0)["labels"])
    with pytest.raises(ConfigError, match="batch_size"):
        BlockLoader(ds, 4, collate).load_state_dict(state)


def test_sequential_validation_blocks_tile_the_corpus(wiki_file, tok, tmp_path):
    cache = build_token_cache([wiki_file], tok, tmp_path / "c")
    val = SequentialBlocks(cache, 100)
    assert len(val) == len(cache) // 100
    assert torch.cat([val[i] for i in range(len(val))]).tolist() == cache.tokens[: len(val) * 100].tolist()
    with pytest.raises(ConfigError, match="longer than"):
        RandomBlocks(cache, len(cache) + 1)


def test_glue_sources_give_each_sentence_as_a_document_without_labels(tmp_path, tok, wiki_file):
    from nlpattn.data.glue import read_glue_split

    cache = build_token_cache([wiki_file, "glue:wnli"], tok, tmp_path / "cache")
    wiki_only = build_token_cache([wiki_file], tok, tmp_path / "wiki")
    sentences = [t for ex in read_glue_split("wnli", "train") for t in (ex.text_a, ex.text_b)]
    expected = [i for text in sentences for i in tok.encode(text) + [tok.eos_id]]
    assert cache.tokens[len(wiki_only):].tolist() == expected
    assert len(cache.doc_starts) == len(wiki_only.doc_starts) + len(sentences)
    assert build_token_cache([wiki_file, "glue:wnli"], tok, tmp_path / "cache").fingerprint == cache.fingerprint


@pytest.mark.parametrize("spec,message", [("glue:nope", "glue:nope: unknown GLUE task"),
                                          ("glue:cola:tset", "glue:cola:tset: GLUE task 'cola' has no split"),
                                          ("glue:", "expected glue:TASK")])
def test_bad_glue_sources_name_the_source(tmp_path, tok, spec, message):
    with pytest.raises(DataError, match=re.escape(message)):
        build_token_cache([spec], tok, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_tokenizer_trains_on_glue_sources():
    tok = train_tokenizer(TokenizerConfig(kind="wordpiece", vocab_size=300), files=["glue:wnli"])
    assert tok.decode(tok.encode("The trophy doesn't fit")).replace(" ", "") == "Thetrophydoesn'tfit"

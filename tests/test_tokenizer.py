"""Tokenizers: every kind round-trips WikiText, reloads to identical ids, shares special ids."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nlpattn import cli
from nlpattn.config import TokenizerConfig, load_config
from nlpattn.errors import ConfigError, DataError
from nlpattn.tokenizer import (SPECIAL_TOKENS, Tokenizer, load_tokenizer, train_tokenizer,
                               truncate_longest_first)

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO / "data" / "wikitext-2" / "valid.txt.gz"
KINDS = ["bpe", "wordpiece", "unigram", "sentencepiece-unigram", "sentencepiece-bpe", "char"]
N_TRAIN = 1200


def wiki_lines() -> list[str]:
    """WikiText-2 valid as lines with their newline."""
    return gzip.decompress(WIKI.read_bytes()).decode("utf-8").splitlines(keepends=True)


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return wiki_lines()


@pytest.fixture(scope="module")
def tokenizers(lines) -> dict[str, Tokenizer]:
    out = {}
    for kind in KINDS:
        cfg = TokenizerConfig(kind=kind, vocab_size=300 if kind == "char" else 1000, n_sentinels=4)
        out[kind] = train_tokenizer(cfg, texts=lines[:N_TRAIN])
    return out


def held_out(lines: list[str], kind: str) -> list[str]:
    """Unseen lines; for kinds without byte fallback, only those made of characters seen in training."""
    alphabet = set("".join(lines[:N_TRAIN]))
    rest = [x for x in lines[N_TRAIN:N_TRAIN + 400] if x.strip()]
    return rest if kind == "bpe" else [x for x in rest if set(x) <= alphabet]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_on_wikitext(tokenizers, lines, kind):
    tok = tokenizers[kind]
    sample = held_out(lines, kind)
    assert len(sample) > 100
    for text in sample:
        ids = tok.encode(text)
        assert ids and tok.unk_id not in ids
        back = tok.decode(ids)
        if kind == "wordpiece":  # BERT style: same characters, spacing around punctuation not kept
            assert "".join(back.split()) == "".join(text.split())
        else:
            assert back == text


@pytest.mark.parametrize("kind", KINDS)
def test_loaded_tokenizer_gives_identical_ids(tokenizers, lines, kind, tmp_path):
    tok = tokenizers[kind]
    path = tok.save(tmp_path)
    assert path.name == ("tokenizer.model" if kind.startswith("sentencepiece") else "tokenizer.json")
    meta = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert meta["nlpattn_kind"] == kind and meta["mask_token"] == "[MASK]"
    for source in (tmp_path, path):  # a run directory or the file itself
        loaded = load_tokenizer(source)
        assert loaded.kind == kind and loaded.vocab_size == tok.vocab_size
        assert loaded.encode_batch(lines[N_TRAIN:N_TRAIN + 200]) == tok.encode_batch(lines[N_TRAIN:N_TRAIN + 200])
        assert loaded.hash() == tok.hash()
        assert loaded.sentinel_ids == tok.sentinel_ids and loaded.special_ids == tok.special_ids


@pytest.mark.parametrize("kind", KINDS)
def test_same_special_ids_for_every_kind(tokenizers, kind):
    tok = tokenizers[kind]
    assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.bos_id, tok.eos_id] == list(range(7))
    assert tok.sentinel_ids == [7, 8, 9, 10]
    assert tok.special_ids == set(range(11))
    assert len(tok) == tok.vocab_size
    ids = tok.encode("a [MASK] b <extra_id_2>")
    assert tok.mask_id in ids and tok.sentinel_ids[2] in ids
    full = tok.encode("the cat", add_special_tokens=True)
    assert full[0] == tok.cls_id and full[-1] == tok.sep_id
    assert tok.decode(full) == tok.decode(full[1:-1])


@pytest.mark.parametrize("kind", KINDS)
def test_word_ids_count_whitespace_words(tokenizers, kind):
    tok = tokenizers[kind]
    ids, words = tok.word_ids(" The American lobster was found in the eastern Atlantic")
    assert len(ids) == len(words) and words[0] == 0
    assert all(b - a in (0, 1) for a, b in zip(words, words[1:]))
    assert words[-1] + 1 == 9


def test_hash_differs_between_tokenizers(tokenizers):
    hashes = {tok.hash() for tok in tokenizers.values()}
    assert len(hashes) == len(KINDS)


def test_wordpiece_ids_do_not_depend_on_the_trainers_tie_order(tokenizers, lines):
    """The same WordPiece vocabulary in another id order is renumbered to the same ids and splits."""
    import random

    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    from nlpattn.data.tokenizer_trainers import _fixed_wordpiece_ids

    trained = tokenizers["wordpiece"].backend.tok
    specials = [t for t, _ in sorted(trained.get_vocab().items(), key=lambda kv: kv[1])][:len(SPECIAL_TOKENS) + 4]
    shuffled = HFTokenizer.from_str(trained.to_str())
    rest = [t for t in trained.get_vocab() if t not in specials]
    random.Random(0).shuffle(rest)
    shuffled.model = models.WordPiece({t: i for i, t in enumerate([*specials, *rest])}, unk_token="[UNK]")
    assert shuffled.get_vocab() != trained.get_vocab()
    _fixed_wordpiece_ids(shuffled, specials)
    assert shuffled.get_vocab() == trained.get_vocab()
    text = "".join(lines[N_TRAIN:N_TRAIN + 50])
    assert shuffled.encode(text).ids == trained.encode(text).ids


def test_truncate_longest_first_matches_one_at_a_time():
    def reference(a, b, budget):
        a, b = list(a), list(b)
        while len(a) + len(b) > budget:
            (a if len(a) > len(b) else b).pop()
        return a, b

    for la in range(0, 9):
        for lb in range(0, 9):
            for budget in range(0, 12):
                a, b = list(range(la)), list(range(100, 100 + lb))
                assert truncate_longest_first(a, b, budget) == reference(a, b, budget)


def test_encode_pair_layout_and_truncation(tokenizers):
    tok = tokenizers["wordpiece"]
    a = " ".join(["the"] * 30)
    ids, types = tok.encode_pair(a, "of the", max_length=16)
    assert len(ids) == 16 == len(types)
    b_len = len(tok.encode("of the"))
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and ids[-2 - b_len] == tok.sep_id
    assert types == [0] * (16 - b_len - 1) + [1] * (b_len + 1)
    single, types = tok.encode_pair("the cat")
    assert single == tok.encode("the cat", add_special_tokens=True) and set(types) == {0}


def test_vocab_smaller_than_specials_is_a_config_error(lines):
    with pytest.raises(ConfigError, match="special tokens"):
        train_tokenizer(TokenizerConfig(kind="wordpiece", vocab_size=10, n_sentinels=4), texts=lines[:10])
    with pytest.raises(ConfigError, match="byte-level BPE"):
        train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=200), texts=lines[:10])


def test_bad_training_files_name_the_file_and_line(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\nsecond caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt:2: not valid UTF-8 \(byte offset 21\)"):
        train_tokenizer(TokenizerConfig(kind="wordpiece", vocab_size=100), [bad])
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"text\n\x00\x01\x02")
    for kind in ("sentencepiece-unigram", "bpe"):
        with pytest.raises(DataError, match=r"blob\.bin:2: binary data"):
            train_tokenizer(TokenizerConfig(kind=kind, vocab_size=300), [binary])
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty.txt: file is empty"):
        train_tokenizer(TokenizerConfig(kind="char", vocab_size=100), [tmp_path / "empty.txt"])


def test_cli_trains_and_reports_errors_in_one_line(tmp_path, capsys):
    small = tmp_path / "small.txt"
    small.write_text("".join(wiki_lines()[:300]), encoding="utf-8")
    out = tmp_path / "run"
    config = str(REPO / "configs" / "tokenizer" / "wordpiece-8k.yaml")
    argv = ["tokenizer", "train", f"data.train_files=[{small}]", f"output_dir={out}",
            "tokenizer.vocab_size=500", "--config", config]
    assert cli.main(argv) == 0
    assert load_tokenizer(out).vocab_size == 500
    argv[2] = f"data.train_files=[{tmp_path / 'missing.txt'}]"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.txt: no such file or directory" in err


def test_shipped_configs_load():
    paths = sorted((REPO / "configs" / "tokenizer").glob("*.yaml"))
    kinds = {load_config(p).tokenizer.kind for p in paths}
    assert kinds == set(KINDS)
    for p in paths:
        for f in load_config(p).data.train_files:
            assert (REPO / f).is_file()


def test_loads_a_transformers_tokenizer_directory(tokenizers, tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = tokenizers["wordpiece"]
    hf = PreTrainedTokenizerFast(tokenizer_object=tok.backend.tok, **{
        f"{role}_token": t for role, t in SPECIAL_TOKENS.items()})
    hf.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.kind == "wordpiece" and loaded.mask_id == tok.mask_id
    assert loaded.encode("the lobster , found") == tok.encode("the lobster , found")


def test_import_stays_light():
    code = "import sys, nlpattn.tokenizer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""GLUE: registry, the bundled originals with their quirks, malformed rows, hub fallback, encoding."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
from pathlib import Path

import pytest

from nlpattn.config import TokenizerConfig
from nlpattn.data import glue
from nlpattn.data.glue import (GLUE_TASKS, available_tasks, encode_glue, get_task, read_glue_split,
                               read_glue_tsv, resolve_glue_dir)
from nlpattn.errors import DataError
from nlpattn.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = {("cola", "train"): 8551, ("cola", "dev"): 1043, ("sst2", "train"): 67349, ("sst2", "dev"): 872,
            ("mrpc", "train"): 3668, ("mrpc", "dev"): 408, ("stsb", "train"): 5749, ("stsb", "dev"): 1500,
            ("rte", "train"): 2490, ("rte", "dev"): 277, ("wnli", "train"): 635, ("wnli", "dev"): 71,
            ("qnli", "dev"): 5463}


def test_registry_covers_glue():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax", "imdb"}
    assert get_task("SST-2") is GLUE_TASKS["sst2"] and get_task("STS_B").is_regression
    assert get_task("stsb").num_labels == 1 and get_task("mnli").num_labels == 3
    assert get_task("mnli").dev_splits == ("dev_matched", "dev_mismatched")
    assert get_task("cola").metrics == ("matthews_correlation",) and "f1" in get_task("qqp").metrics
    assert get_task("ax").splits == ("test",)
    with pytest.raises(DataError, match=r"unknown GLUE task 'sst5' \(valid: cola, sst2,"):
        get_task("sst5")
    with pytest.raises(DataError, match="has no split 'dev'"):
        read_glue_split("mnli", "dev")


@pytest.mark.parametrize("task,split", sorted(OFFICIAL))
def test_bundled_splits_have_official_row_counts(task, split):
    examples = read_glue_split(task, split)
    assert len(examples) == OFFICIAL[(task, split)]
    t = get_task(task)
    labels = {e.label for e in examples}
    if t.is_regression:
        assert min(labels) == 0.0 and max(labels) == 5.0
    else:
        assert labels == set(range(t.num_labels))
    assert all(e.text_a for e in examples) and all((e.text_b is not None) == (len(t.text_columns) == 2)
                                                     for e in examples)


def test_quirks_are_read_as_shipped():
    cola_dev = gzip.decompress((REPO / "data/glue/CoLA/dev.tsv.gz").read_bytes())
    assert not cola_dev.endswith(b"\n")
    last = read_glue_split("cola", "dev")[-1]
    assert last.text_a == cola_dev.decode().rsplit("\t", 1)[1]
    mrpc = gzip.decompress((REPO / "data/glue/MRPC/train.tsv.gz").read_bytes()).decode("utf-8")
    assert mrpc.startswith("\ufeffQuality\t")
    assert len(list(csv.reader(io.StringIO(mrpc), delimiter="\t"))) < 3669  # quoting on merges rows
    examples = read_glue_split("mrpc", "train")
    quoted = [e for e in examples if '"' in e.text_a + e.text_b]
    assert len(quoted) > 100
    assert any(e.text_a.startswith('" ') for e in quoted)
    assert sum(e.label for e in read_glue_split("cola", "train")) == 6023


def test_reads_plain_tsv_and_gz_alike(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_bytes(gzip.decompress((REPO / "data/glue/RTE/dev.tsv.gz").read_bytes()))
    plain = read_glue_split("rte", "dev", tmp_path)
    assert plain == read_glue_split("rte", "dev")
    assert available_tasks(tmp_path) == []  # no train split there
    assert set(available_tasks()) == {"cola", "sst2", "mrpc", "stsb", "rte", "wnli"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_rows_name_file_and_line(tmp_path):
    header = "index\tsentence1\tsentence2\tlabel\n"
    write(tmp_path / "RTE" / "dev.tsv", header + "0\ta\tb\tentailment\n1\ta\tb\n")
    with pytest.raises(DataError, match=r"RTE/dev\.tsv:3: expected 4 tab-separated fields, got 3"):
        read_glue_split("rte", "dev", tmp_path)
    write(tmp_path / "RTE" / "dev.tsv", header + "0\ta\tb\tentailment\n1\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"RTE/dev\.tsv:3: unknown label 'maybe' \(expected one of entailment, not_entailment\)"):
        read_glue_split("rte", "dev", tmp_path)
    write(tmp_path / "STS-B" / "dev.tsv", "sentence1\tsentence2\tscore\nx\ty\tfive\n")
    with pytest.raises(DataError, match=r"STS-B/dev\.tsv:2: label 'five' is not a number"):
        read_glue_split("stsb", "dev", tmp_path)
    write(tmp_path / "WNLI" / "dev.tsv", "index\tsentence\tlabel\n")
    with pytest.raises(DataError, match=r"WNLI/dev\.tsv:1: header has no column 'sentence1'"):
        read_glue_split("wnli", "dev", tmp_path)
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_bytes(b"src\t1\t\tok\nsrc\t1\t\tbad \xff byte\n")
    with pytest.raises(DataError, match=r"CoLA/train\.tsv:2: not valid UTF-8"):
        read_glue_split("cola", "train", tmp_path)


def test_qqp_train_skips_its_known_broken_rows_but_dev_is_strict(tmp_path):
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    broken = "5\t9\t10\tWhy is the sky\n\tblue?\t0\n"  # a question with an embedded newline
    write(tmp_path / "QQP" / "train.tsv", header + "1\t2\t3\tq a\tq b\t1\n" + broken + "6\t7\t8\tx\ty\t0\n")
    with pytest.warns(UserWarning, match="skipped 2 malformed rows"):
        rows = read_glue_split("qqp", "train", tmp_path)
    assert [(r.text_a, r.label) for r in rows] == [("q a", 1), ("x", 0)]
    write(tmp_path / "QQP" / "dev.tsv", header + broken)
    with pytest.raises(DataError, match="dev.tsv:2: expected 6"):
        read_glue_split("qqp", "dev", tmp_path)


def test_test_splits_and_mnli_layout(tmp_path):
    write(tmp_path / "SST-2" / "test.tsv", "index\tsentence\n0\tfine film .\n1\tdull .\n")
    rows = read_glue_split("sst2", "test", tmp_path)
    assert [(r.guid, r.text_a, r.label) for r in rows] == [("test-0", "fine film .", None), ("test-1", "dull .", None)]
    cols = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "label2", "label3",
            "label4", "label5", "gold_label"]
    row = ["0", "1", "1e", "fiction", "(", "(", "(", "(", "A man sleeps.", "A man is awake.",
           "contradiction", "neutral", "contradiction", "contradiction", "contradiction", "contradiction"]
    write(tmp_path / "MNLI" / "dev_mismatched.tsv", "\t".join(cols) + "\n" + "\t".join(row) + "\n")
    (mm,) = read_glue_split("mnli", "validation_mismatched", tmp_path)
    assert (mm.text_a, mm.text_b, mm.label) == ("A man sleeps.", "A man is awake.", 2)
    write(tmp_path / "diagnostic" / "diagnostic.tsv", "index\tsentence1\tsentence2\n0\tp\th\n")
    assert read_glue_split("ax", "test", tmp_path)[0].text_b == "h"


def test_hub_fallback_same_api_and_clear_offline_error(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"GLUE qnli train: no .*QNLI/train\.tsv\[\.gz\] and the hub dataset "
                                        r"nyu-mll/glue is unavailable \(Couldn't reach the Hub\); .*glue\.data_dir"):
        read_glue_split("qnli", "train", tmp_path)
    calls = []

    def fake(name, config, split):
        calls.append((name, config, split))
        return [{"premise": "p", "hypothesis": "h", "label": 1, "idx": 7},
                {"premise": "q", "hypothesis": "i", "label": -1, "idx": 8}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    rows = read_glue_split("mnli", "dev_matched", tmp_path)
    assert calls == [("nyu-mll/glue", "mnli", "validation_matched")]
    assert [(r.guid, r.text_a, r.text_b, r.label) for r in rows] == [
        ("dev_matched-7", "p", "h", 1), ("dev_matched-8", "q", "i", None)]


def test_default_data_dir_works_from_another_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_glue_dir() == REPO / "data" / "glue"
    assert len(read_glue_split("wnli", "dev")) == 71


def test_encode_glue_pairs_and_singles():
    rows = read_glue_split("rte", "dev")[:50]
    texts = [r.text_a for r in read_glue_split("rte", "train")[:500]]
    tok = train_tokenizer(TokenizerConfig(kind="wordpiece", vocab_size=800), texts=texts)
    enc = encode_glue(rows, tok, max_length=64)
    assert len(enc) == 50 and all(len(e["input_ids"]) <= 64 for e in enc)
    assert any(len(e["input_ids"]) == 64 for e in enc)  # long premises got truncated
    first = enc[0]
    assert first["input_ids"] == tok.encode_pair(rows[0].text_a, rows[0].text_b, 64)[0]
    assert first["label"] == rows[0].label and first["token_type_ids"][-1] == 1
    singles = encode_glue(read_glue_split("cola", "dev")[:5], tok, max_length=64)
    assert all(set(e["token_type_ids"]) == {0} for e in singles)


def test_data_readme_lists_every_bundled_file_with_its_sha256():
    readme = (REPO / "data" / "README.md").read_text(encoding="utf-8")
    bundled = sorted(p for p in (REPO / "data").rglob("*") if p.is_file() and p.name != "README.md")
    assert len(bundled) == 17
    for path in bundled:
        rel = path.relative_to(REPO / "data").as_posix()
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{rel}`")), None)
        assert row is not None, rel
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        assert re.search(hashlib.sha256(raw).hexdigest(), row), rel
        assert path.suffix != ".gz" or path.read_bytes()[4:8] == b"\0\0\0\0"  # gzip -n: no timestamp

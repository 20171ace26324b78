"""IMDB beside GLUE (task=imdb: local gz TSVs, test split scored) and glue.truncation."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nlpattn.config import TokenizerConfig, load_config
from nlpattn.data.glue import available_tasks, check_truncation, encode_glue, get_task, read_glue_split
from nlpattn.errors import ConfigError, DataError
from nlpattn.metrics import glue_average, load_glue_metric, scoreboard_markdown
from nlpattn.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
WORDS = "zero one two three four five six seven eight nine ten eleven".split()


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TokenizerConfig(kind="wordpiece", vocab_size=120), texts=[" ".join(WORDS)] * 20)


def write_imdb(root: Path, n_train=40, n_test=24, bad_line: int | None = None) -> Path:
    """<root>/imdb/{train,test}.tsv.gz with `sentence\\tlabel` rows (label 1 = 'good')."""
    (root / "imdb").mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        rows = ["sentence\tlabel"] + [f"{'good great' if i % 2 else 'bad awful'} film {i}\t{i % 2}" for i in range(n)]
        if bad_line is not None and name == "test":
            rows[bad_line - 1] = "no label here"
        with gzip.open(root / "imdb" / f"{name}.tsv.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
    return root


def test_truncation_strategies_by_hand(tok):
    ids = list(range(100, 112))  # 12 "tokens"; max_length 8 leaves a budget of 6
    cls, sep = tok.cls_id, tok.sep_id
    assert tok._pair(ids, None, 8, "head")[0] == [cls, 100, 101, 102, 103, 104, 105, sep]
    assert tok._pair(ids, None, 8, "tail")[0] == [cls, 106, 107, 108, 109, 110, 111, sep]
    assert tok._pair(ids, None, 8, "head+tail", 2)[0] == [cls, 100, 101, 108, 109, 110, 111, sep]
    assert tok._pair(ids, None, 8, "head+tail", 0)[0] == tok._pair(ids, None, 8, "tail")[0]
    assert tok._pair(ids, None, 8, "head+tail", 50)[0] == tok._pair(ids, None, 8, "head")[0]
    assert tok._pair(ids[:5], None, 8, "tail")[0] == [cls, 100, 101, 102, 103, 104, sep]  # fits: untouched


def test_encode_glue_truncates_reviews_from_text(tok):
    text = " ".join(WORDS)  # 12 words, one token each
    words = tok.encode(text)
    assert len(words) == 12 and len(set(words)) == 12
    ex = read_like([text])
    head = encode_glue(ex, tok, 8)[0]["input_ids"]
    tail = encode_glue(ex, tok, 8, "tail")[0]["input_ids"]
    both = encode_glue(ex, tok, 8, "head+tail", 3)[0]["input_ids"]
    assert head[1:-1] == words[:6] and tail[1:-1] == words[-6:] and both[1:-1] == words[:3] + words[-3:]
    assert tok.decode(both) == "zero one two nine ten eleven"


def read_like(texts):
    from nlpattn.data.glue import GlueExample

    return [GlueExample(str(i), t, None, 0) for i, t in enumerate(texts)]


def test_pairs_refuse_tail_truncation(tok):
    with pytest.raises(ConfigError, match="glue.truncation=tail"):
        tok.encode_pairs(["one two"], ["three"], 8, "tail")
    with pytest.raises(ConfigError, match="glue.truncation=head\\+tail: task rte has sentence pairs"):
        check_truncation("rte", "head+tail")
    check_truncation("imdb", "head+tail")
    check_truncation("rte", "head")
    with pytest.raises(ConfigError, match="glue.truncation"):
        load_config(str(REPO / "configs/finetune/imdb.yaml"), ["glue.truncation=middle"])


def test_imdb_task_reads_gz_and_scores_the_test_split(tmp_path):
    root = write_imdb(tmp_path)
    task = get_task("imdb")
    assert task.num_labels == 2 and task.label_names == ("negative", "positive") and task.dev_splits == ("dev",)
    train, dev = read_glue_split("imdb", "train", root), read_glue_split("imdb", "dev", root)
    assert (len(train), len(dev)) == (40, 24)  # dev = the 24 rows of test.tsv.gz
    assert [e.label for e in dev[:4]] == [0, 1, 0, 1] and dev[1].text_a == "good great film 1"
    assert "imdb" in available_tasks(root)
    from nlpattn.train.glue_suite import default_tasks

    assert default_tasks(str(root)) == ["imdb"] and "imdb" not in default_tasks(str(REPO / "data/glue"))
    with_imdb = default_tasks(str(REPO / "data/glue"), str(root))
    assert with_imdb[-1] == "imdb" and with_imdb[:-1] == default_tasks(str(REPO / "data/glue"))
    assert default_tasks(str(REPO / "data/glue"), str(tmp_path / "nowhere"))[-1] != "imdb"


def test_imdb_bad_input_names_file_and_line(tmp_path):
    with pytest.raises(DataError, match=r"imdb/test.tsv.gz:5: expected 2 tab-separated fields"):
        read_glue_split("imdb", "dev", write_imdb(tmp_path / "a", bad_line=5))
    with pytest.raises(DataError, match=r"no .*nowhere/imdb/test.tsv\[.gz\] \(no hub copy"):
        read_glue_split("imdb", "dev", tmp_path / "nowhere")


def test_imdb_metric_and_scoreboard_column_outside_the_average():
    assert load_glue_metric("imdb").compute(predictions=[0, 1, 1, 1], references=[0, 1, 0, 1]) == {"accuracy": 0.75}
    results = {"sst2": {"accuracy": 0.8}, "cola": {"matthews_correlation": 0.2}, "imdb": {"accuracy": 0.9}}
    md = scoreboard_markdown(results)
    header, _, row = md.splitlines()[:3]
    assert "IMDB (Acc)" in header and row.split("|")[1].strip() == "50.0*"  # mean of SST-2 and CoLA only
    assert row.split("|")[-2].strip() == "90.0"
    assert glue_average({"sst2": 0.8, "cola": 0.2, "imdb": 0.9}, partial=True) == pytest.approx(0.5)
    assert "IMDB (Acc)" not in scoreboard_markdown({"sst2": {"accuracy": 0.8}})


def test_scoreboard_with_imdb_alone(tmp_path):
    from nlpattn.train.glue_suite import write_scoreboard

    doc = write_scoreboard(tmp_path, None, {"imdb": {"metrics": {"imdb": {"accuracy": 0.875}}, "steps": 3}},
                           {"imdb": 1.0})
    assert doc["average_of_available"] is None and doc["task_scores"] == {"imdb": 0.875}
    assert "87.5" in (tmp_path / "glue.md").read_text()


def test_finetune_imdb_end_to_end_and_pair_refusal(tmp_path):
    root = write_imdb(tmp_path / "corpus")
    tiny = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64", "tokenizer.kind=char",
            "train.progress=false", "train.batch_size=8", "train.precision=fp32", f"glue.data_dir={root}",
            "glue.max_length=16", "glue.head_tokens=4", f"data.train_files=[{root / 'imdb/train.tsv.gz'}]"]
    cmd = [sys.executable, "-m", "nlpattn", "finetune", "--config", str(REPO / "configs/finetune/imdb.yaml")]
    out = tmp_path / "run"
    done = subprocess.run([*cmd, *tiny, f"output_dir={out}"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "eval" / "imdb.json").read_text())
    assert set(report["metrics"]) == {"imdb"} and 0 <= report["metrics"]["imdb"]["accuracy"] <= 1
    assert len((out / "predictions" / "imdb-dev.tsv").read_text().splitlines()) == 24 + 1  # test rows + header
    assert load_config(str(out / "config.yaml")).glue.truncation == "head+tail"
    bad = subprocess.run([*cmd, *tiny, "task=rte", f"glue.data_dir={REPO / 'data/glue'}", f"output_dir={tmp_path / 'rte'}"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "glue.truncation" in bad.stderr
    assert not (tmp_path / "rte").exists()

"""`nlpattn glue`: one run per task, the scoreboard's arithmetic, and the GLUE submission files
(label names, STS-B clipped to [0, 5], MNLI's two test files)."""
import gzip
import json
from types import SimpleNamespace

import pytest

from nlpattn.cli import main
from nlpattn.data.glue import get_task
from nlpattn.train.finetune import write_predictions
from test_finetune import TINY

REPO_GLUE = next(o for o in TINY if o.startswith("glue.data_dir=")).split("=", 1)[1]  # <repo>/data/glue
MNLI = ("entailment", "neutral", "contradiction")


def _rows(task_dir: str, split: str, n: int) -> list[str]:
    return gzip.decompress((__import__("pathlib").Path(REPO_GLUE) / task_dir / f"{split}.tsv.gz")
                           .read_bytes()).decode("utf-8").splitlines()[:n + 1]


def _write(path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def tiny_glue(root):
    """RTE and STS-B cut from the bundled data, plus an MNLI made of RTE's sentence pairs; each
    with unlabeled test files (the last column dropped), as GLUE distributes them."""
    for task_dir in ("RTE", "STS-B"):
        for split, n in (("train", 64), ("dev", 24)):
            _write(root / task_dir / f"{split}.tsv", _rows(task_dir, split, n))
        dev = _rows(task_dir, "dev", 17)
        _write(root / task_dir / "test.tsv", ["\t".join(line.split("\t")[:-1]) for line in dev])
    pairs = [line.split("\t")[1:3] for line in _rows("RTE", "train", 120)[1:]]
    header = "index\tsentence1\tsentence2\tgold_label"
    for split, part in (("train", pairs[:64]), ("dev_matched", pairs[64:84]), ("dev_mismatched", pairs[84:104])):
        _write(root / "MNLI" / f"{split}.tsv",
               [header] + [f"{i}\t{a}\t{b}\t{MNLI[i % 3]}" for i, (a, b) in enumerate(part)])
    for split, part in (("test_matched", pairs[104:113]), ("test_mismatched", pairs[113:120])):
        _write(root / "MNLI" / f"{split}.tsv",
               ["index\tsentence1\tsentence2"] + [f"{i}\t{a}\t{b}" for i, (a, b) in enumerate(part)])
    return root


@pytest.mark.slow  # three fine-tuning runs (~20 s; loading the `evaluate` metrics is most of it)
def test_glue_command_runs_each_task_and_scores_them_the_official_way(tmp_path):
    glue, out = tiny_glue(tmp_path / "glue"), tmp_path / "suite"
    text = tmp_path / "chars.txt"  # the char tokenizer's training text: every character of the data
    text.write_text("".join(p.read_text() for p in sorted(glue.rglob("*.tsv"))), encoding="utf-8")
    rc = main(["glue", "--out", str(out), "tasks=rte,stsb,mnli", *TINY, f"glue.data_dir={glue}",
               f"data.train_files=[{text}]", "train.epochs=0.5", "train.eval_every=1000", "train.precision=fp32"])
    assert rc == 0
    board = json.loads((out / "glue.json").read_text())
    assert board["tasks"] == ["rte", "stsb", "mnli"]
    results = board["results"]
    assert set(results) == {"rte", "stsb", "mnli_matched", "mnli_mismatched"}
    # RTE accuracy from the dev predictions file (label names on both sides)
    dev = [line.split("\t") for line in (out / "rte/predictions/rte-dev.tsv").read_text().splitlines()[1:]]
    assert len(dev) == 24 and {p for _, p, _ in dev} <= {"entailment", "not_entailment"}
    assert results["rte"]["accuracy"] == pytest.approx(sum(p == g for _, p, g in dev) / len(dev), abs=1e-12)
    # official task scores: STS-B mean(Pearson, Spearman), MNLI mean(matched, mismatched)
    stsb = (results["stsb"]["pearson"] + results["stsb"]["spearmanr"]) / 2
    mnli = (results["mnli_matched"]["accuracy"] + results["mnli_mismatched"]["accuracy"]) / 2
    expected = (results["rte"]["accuracy"] + stsb + mnli) / 3
    assert board["average_of_available"] == pytest.approx(expected, abs=1e-12)
    md = (out / "glue.md").read_text()
    assert f"| {100 * expected:.1f}*" in md and "Missing: CoLA" in md and "not an official GLUE score" in md
    for task in ("rte", "stsb", "mnli"):
        assert (out / task / "model.safetensors").is_file() and (out / task / f"eval/{task}.json").is_file()
    # submission files
    rte = [line.split("\t") for line in (out / "rte/predictions/rte.tsv").read_text().splitlines()]
    assert rte[0] == ["index", "prediction"] and len(rte) == 18
    assert [int(i) for i, _ in rte[1:]] == list(range(17)) and {p for _, p in rte[1:]} <= {"entailment",
                                                                                            "not_entailment"}
    stsb_rows = (out / "stsb/predictions/stsb.tsv").read_text().splitlines()[1:]
    assert len(stsb_rows) == 17 and all(0.0 <= float(r.split("\t")[1]) <= 5.0 for r in stsb_rows)
    for name, n in (("mnli-matched", 9), ("mnli-mismatched", 7)):
        rows = (out / f"mnli/predictions/{name}.tsv").read_text().splitlines()
        assert rows[0] == "index\tprediction" and len(rows) == n + 1
        assert {r.split("\t")[1] for r in rows[1:]} <= set(MNLI)
    assert sorted(p.name for p in (out / "mnli/predictions").iterdir()) == [
        "mnli-dev_matched.tsv", "mnli-dev_mismatched.tsv", "mnli-matched.tsv", "mnli-mismatched.tsv"]


@pytest.mark.slow
def test_glue_from_a_pretrained_run_writes_next_to_it(tmp_path):
    from test_train_utils import tiny_overrides

    glue, run = tiny_glue(tmp_path / "glue"), tmp_path / "mlm"
    assert main(["pretrain", *tiny_overrides(tmp_path / "data", run, objective="mlm", max_steps=20),
                 "train.precision=fp32"]) == 0
    assert main(["glue", "--init", str(run), "tasks=rte", f"glue.data_dir={glue}", "train.epochs=0.5",
                 "train.progress=false", "train.batch_size=16", "glue.max_length=32", "data.block_size=32",
                 "train.precision=fp32"]) == 0
    board = json.loads((tmp_path / "mlm-glue" / "glue.json").read_text())
    assert board["init"] == str(run) and board["tasks"] == ["rte"]
    report = json.loads((tmp_path / "mlm-glue" / "rte" / "eval" / "rte.json").read_text())
    assert report["init"] == str(run) and 0.0 <= board["results"]["rte"]["accuracy"] <= 1.0


@pytest.mark.parametrize("task,predictions,written", [
    ("stsb", [-1.25, 0.0, 2.5, 5.0, 7.9, 4.99949], ["0.000", "0.000", "2.500", "5.000", "5.000", "4.999"]),
    ("rte", [0, 1, 1], ["entailment", "not_entailment", "not_entailment"]),
    ("mnli", [2, 0, 1], ["contradiction", "entailment", "neutral"]),
    ("qnli", [1, 0], ["not_entailment", "entailment"]),
    ("sst2", [1, 0], ["1", "0"]),
    ("cola", [0, 1], ["0", "1"]),
])
def test_submission_rows_use_glue_label_names_and_clip_stsb(tmp_path, task, predictions, written):
    examples = [SimpleNamespace(label=None)] * len(predictions)
    write_predictions(tmp_path / "p.tsv", get_task(task), examples, predictions, with_gold=False)
    rows = (tmp_path / "p.tsv").read_text().splitlines()
    assert rows == ["index\tprediction"] + [f"{i}\t{w}" for i, w in enumerate(written)]

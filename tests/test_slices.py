"""Dev accuracy per slice (nlpattn/metrics/slices.py) and its script, scripts/finetune/slices.py."""
import subprocess
import sys
from pathlib import Path

import pytest

from nlpattn.errors import DataError
from nlpattn.metrics import slices

REPO = Path(__file__).resolve().parents[1]


def test_words_split_negations_the_same_way_for_both_spellings():
    assert slices.words("It doesn't work!") == ["it", "does", "n't", "work"]
    assert slices.words("it does n't work .") == ["it", "does", "n't", "work"]
    assert slices.words("' quoted ' 42") == ["quoted", "42"]


def test_an_example_belongs_to_its_length_negation_contrast_and_vocabulary_slices():
    vocab = {"a", "good", "film", "but", "not", "great"}
    assert slices.slices_of(["a", "good", "film"], vocab) == [
        "all", "1-10 words", "no negation", "every word seen in training"]
    assert slices.slices_of(["good", "but", "not", "great", "plot"] * 3, vocab) == [
        "all", "11-20 words", "negation", "contrast (but, though, yet, ...)", "a word unseen in training"]
    assert slices.length_slice(30) == "21-30 words" and slices.length_slice(31) == "over 30 words"


def write_predictions(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("index\tprediction\tlabel\n" + "".join(f"{i}\t{p}\t{g}\n" for i, (p, g) in enumerate(rows)))
    return path


def test_read_correct_compares_prediction_and_label(tmp_path):
    path = write_predictions(tmp_path / "p.tsv", [("1", "1"), ("0", "1"), ("0", "0")])
    assert slices.read_correct(path, 3) == [True, False, True]


@pytest.mark.parametrize("text, where", [
    ("idx\tprediction\tlabel\n0\t1\t1\n", ":1: expected the header"),
    ("index\tprediction\tlabel\n0\t1\t1\n2\t1\t1\n", ":3: expected"),
    ("index\tprediction\tlabel\n0\t1\n", ":2: expected"),
    ("index\tprediction\tlabel\n0\t1\t1\n", "1 predictions, but the dev split has 2"),
])
def test_a_bad_predictions_file_names_its_line(tmp_path, text, where):
    path = tmp_path / "p.tsv"
    path.write_text(text)
    with pytest.raises(DataError, match=f"{path}{where}" if where.startswith(":") else where):
        slices.read_correct(path, 2)


def test_slice_rows_give_each_runs_accuracy_on_each_slice():
    example_slices = [["all", "1-10 words", "negation"], ["all", "1-10 words"], ["all", "over 30 words", "negation"]]
    groups = {"a": [[True, False, False], [True, True, True]], "b": [[False, False, True]]}
    rows = {r["slice"]: r for r in slices.slice_rows(example_slices, groups)}
    assert [r["slice"] for r in slices.slice_rows(example_slices, groups)] == [
        "all", "1-10 words", "over 30 words", "negation"]
    assert rows["all"]["n"] == 3 and rows["all"]["accuracy"]["a"] == pytest.approx([100 / 3, 100])
    assert rows["negation"]["accuracy"] == {"a": [50, 100], "b": [50]}
    assert rows["over 30 words"]["accuracy"]["b"] == [100]
    table = slices.slices_markdown(slices.slice_rows(example_slices, groups), groups)
    assert "| negation | 2 | 75.0 ± 35.4 | 50.0 | -25.0 |" in table
    three = {**groups, "c": [[True, True, True]]}
    table = slices.slices_markdown(slices.slice_rows(example_slices, three), three)
    assert table.startswith("| slice | dev examples | a (2 runs) | b (1 runs) | c (1 runs) | b − a | c − a |")
    assert "| negation | 2 | 75.0 ± 35.4 | 50.0 | 100.0 | -25.0 | +25.0 |" in table


def test_always_right_and_always_wrong():
    runs = [[True, True, False, False], [True, False, False, True]]
    assert slices.always(runs, True) == {0} and slices.always(runs, False) == {2}


def run_script(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts/finetune/slices.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


@pytest.fixture
def glue_and_runs(tmp_path):
    sst2 = tmp_path / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    (sst2 / "train.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\t0\n")
    (sst2 / "dev.tsv").write_text("sentence\tlabel\na good film\t1\nnot a film\t0\nbad plot\t0\n")
    for seed, preds in enumerate([("1", "1", "1"), ("0", "1", "0")]):
        write_predictions(tmp_path / f"scratch-{seed}" / "predictions" / "sst2-dev.tsv",
                          list(zip(preds, ("1", "0", "0"))))
    write_predictions(tmp_path / "pre-0" / "predictions" / "sst2-dev.tsv", [("1", "1"), ("0", "0"), ("1", "0")])
    (tmp_path / "pre-0.log").write_text("a log beside the run: not a run\n")
    return tmp_path


def test_the_script_reports_slices_and_the_examples_each_group_alone_gets_right(glue_and_runs):
    root = glue_and_runs
    proc = run_script("--task", "sst2", "--data-dir", root / "glue",
                      "--group", f"scratch={root}/scratch-*", "--group", f"pre={root}/pre-*")
    assert proc.returncode == 0, proc.stderr
    assert "| all | 3 | 33.3 ± 0.0 | 66.7 | +33.3 |" in proc.stdout
    assert "| a word unseen in training | 3 |" in proc.stdout  # "a", "not", "plot" never in train
    assert "**right in every pre run, wrong in every scratch run: 1**\n\n- (negative) not a film" in proc.stdout
    assert "**right in every scratch run, wrong in every pre run: 0**" in proc.stdout


def test_the_script_refuses_a_group_that_matches_nothing(glue_and_runs):
    proc = run_script("--task", "sst2", "--data-dir", glue_and_runs / "glue", "--group", "x=/nonexistent/*")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "slices: error: --group x: no run directory matches '/nonexistent/*'\n"

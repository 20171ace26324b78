"""GLUE metrics (nlpattn.metrics): metric math, offline loading, scoreboard arithmetic."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, rankdata, spearmanr
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef

from nlpattn.errors import ConfigError, DataError
from nlpattn.metrics import (
    GLUE_TASKS,
    TASK_NAMES,
    glue_average,
    glue_metric_path,
    glue_task_score,
    load_glue_metric,
    normalize_task,
    scoreboard_markdown,
)

REPO = Path(__file__).resolve().parents[1]

# Result keys of the hub's `glue` metric per config (plus our extra `ax`).
HUB_KEYS = {
    "cola": {"matthews_correlation"},
    "sst2": {"accuracy"},
    "mrpc": {"accuracy", "f1"},
    "stsb": {"pearson", "spearmanr"},
    "qqp": {"accuracy", "f1"},
    "mnli": {"accuracy"},
    "mnli_matched": {"accuracy"},
    "mnli_mismatched": {"accuracy"},
    "qnli": {"accuracy"},
    "rte": {"accuracy"},
    "wnli": {"accuracy"},
    "hans": {"accuracy"},
    "ax": {"matthews_correlation"},
    "imdb": {"accuracy"},  # not a hub glue config: nlpattn scores IMDB test accuracy the same way
}
N_CLASSES = {"mnli": 3, "mnli_matched": 3, "mnli_mismatched": 3, "ax": 3}


def _metric(task: str, tmp_path: Path):
    """Load a metric whose cache directory lives under tmp_path."""
    return load_glue_metric(task, cache_dir=str(tmp_path / "metrics"))


# ---------------------------------------------------------------- independent references


def _mcc_from_confusion(references: np.ndarray, predictions: np.ndarray) -> float:
    """Gorodkin's R_K from the confusion matrix (equals the 2x2 MCC for two classes)."""
    c = confusion_matrix(references, predictions).astype(float)  # rows: true, cols: predicted
    s, correct = c.sum(), np.trace(c)
    t, p = c.sum(axis=1), c.sum(axis=0)
    denominator = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return 0.0 if denominator == 0 else (correct * s - p @ t) / denominator


def _f1_from_counts(references: np.ndarray, predictions: np.ndarray) -> float:
    """F1 of class 1 from true positive, false positive and false negative counts."""
    tp = np.sum((predictions == 1) & (references == 1))
    fp = np.sum((predictions == 1) & (references == 0))
    fn = np.sum((predictions == 0) & (references == 1))
    return 2 * tp / (2 * tp + fp + fn)


def _expected(task: str, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Reference values from scikit-learn / scipy, each checked against a second formula."""
    if task == "stsb":
        pearson, spearman = pearsonr(predictions, references)[0], spearmanr(predictions, references)[0]
        assert pearson == pytest.approx(np.corrcoef(predictions, references)[0, 1], abs=1e-12)
        ranks = np.corrcoef(rankdata(predictions), rankdata(references))[0, 1]
        assert spearman == pytest.approx(ranks, abs=1e-12)
        return {"pearson": pearson, "spearmanr": spearman}
    if task in ("cola", "ax"):
        mcc = matthews_corrcoef(references, predictions)
        assert mcc == pytest.approx(_mcc_from_confusion(references, predictions), abs=1e-12)
        return {"matthews_correlation": mcc}
    out = {"accuracy": accuracy_score(references, predictions)}
    if task in ("mrpc", "qqp"):
        out["f1"] = f1_score(references, predictions)
        assert out["f1"] == pytest.approx(_f1_from_counts(references, predictions), abs=1e-12)
    return out


def _random_case(task: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random predictions correlated with random references (ties included for STS-B)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(60, 300))
    if task == "stsb":
        references = np.round(rng.uniform(0, 5, n) * 5) / 5  # 0.2 steps: many ties
        predictions = np.clip(references + rng.normal(0, 1.2, n), 0, 5)
        return predictions, references
    k = N_CLASSES.get(task, 2)
    references = rng.integers(0, k, n)
    flip = rng.random(n) < 0.35
    predictions = np.where(flip, rng.integers(0, k, n), references)
    return predictions, references


# ---------------------------------------------------------------- metric math


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", TASK_NAMES)
def test_metric_matches_sklearn_scipy_on_random_predictions(task, seed, tmp_path):
    predictions, references = _random_case(task, seed)
    metric = _metric(task, tmp_path)
    # Batches in the Accelerate pattern (add_batch per step, compute at the end).
    for chunk in np.array_split(np.arange(len(predictions)), 3):
        metric.add_batch(predictions=predictions[chunk], references=references[chunk])
    result = metric.compute()
    assert set(result) == HUB_KEYS[task]
    expected = _expected(task, predictions, references)
    for key, value in expected.items():
        assert isinstance(result[key], float)
        assert result[key] == pytest.approx(value, abs=1e-12), key


def test_matthews_on_hand_computed_2x2(tmp_path):
    # TP=3 FN=1 FP=2 TN=4: MCC = (3*4 - 2*1) / sqrt(5*4*6*5) = 10/sqrt(600) = 1/sqrt(6)
    references = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    predictions = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    result = _metric("cola", tmp_path).compute(predictions=predictions, references=references)
    assert result == {"matthews_correlation": pytest.approx(1 / math.sqrt(6), abs=1e-12)}
    inverted = _metric("cola", tmp_path).compute(predictions=[1, 0, 1, 0], references=[0, 1, 0, 1])
    assert inverted["matthews_correlation"] == pytest.approx(-1.0)


def test_accuracy_and_f1_on_hand_computed_case(tmp_path):
    # Same confusion: precision 3/5, recall 3/4, F1 = 2PR/(P+R) = 0.9/1.35 = 2/3; accuracy 7/10.
    references = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    predictions = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    result = _metric("mrpc", tmp_path).compute(predictions=predictions, references=references)
    assert result == {"accuracy": pytest.approx(0.7), "f1": pytest.approx(2 / 3)}
    assert glue_task_score("mrpc", result) == pytest.approx((0.7 + 2 / 3) / 2)


def test_multiclass_matthews_on_hand_computed_case(tmp_path):
    # 3 classes, s=6, c=4 correct; true counts t=(2,2,2), predicted counts p=(2,3,1):
    # R_K = (c*s - p.t) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt(22 * 24)
    references = [0, 0, 1, 1, 2, 2]
    predictions = [0, 1, 1, 1, 2, 0]
    result = _metric("ax", tmp_path).compute(predictions=predictions, references=references)
    assert result["matthews_correlation"] == pytest.approx(12 / math.sqrt(22 * 24), abs=1e-12)


def test_correlations_on_hand_computed_case(tmp_path):
    # Deviations from the means: x = (-3,-2,-1,6), y = (-1.5,-0.5,0.5,1.5);
    # Pearson = 14 / sqrt(50 * 5); the ranks agree exactly, so Spearman = 1.
    result = _metric("stsb", tmp_path).compute(predictions=[1.0, 2.0, 3.0, 10.0], references=[1, 2, 3, 4])
    assert result["pearson"] == pytest.approx(14 / math.sqrt(250), abs=1e-12)  # float64 kept
    assert result["spearmanr"] == pytest.approx(1.0)
    assert glue_task_score("sts-b", result) == pytest.approx((14 / math.sqrt(250) + 1) / 2)


def test_accuracy_on_hand_computed_case(tmp_path):
    result = _metric("mnli-mm", tmp_path).compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    assert result == {"accuracy": 0.75}


# ---------------------------------------------------------------- names and loading


def test_task_spellings_and_unknown_task():
    assert normalize_task("SST-2") == "sst2"
    assert normalize_task(" sts-b ") == "stsb"
    assert normalize_task("CoLA") == "cola"
    assert normalize_task("MNLI-m") == "mnli_matched"
    with pytest.raises(ConfigError, match=r"'sst3'.*sst2.*mnli_mismatched.*ax.*sts-b"):
        load_glue_metric("sst3")
    with pytest.raises(ConfigError, match="unknown GLUE task"):
        glue_task_score("squad", {"accuracy": 1.0})


def test_module_file_matches_package_and_evaluate_can_parse_it():
    from evaluate.loading import get_imports

    from nlpattn.metrics import glue

    assert glue.CONFIG_NAMES == TASK_NAMES
    assert Path(glue_metric_path()) == Path(glue.__file__)
    imports = get_imports(glue_metric_path())
    assert {kind for kind, *_ in imports} == {"library"}  # nothing for evaluate to copy or fetch
    assert {name for _, name, *_ in imports} == {"datasets", "evaluate", "numpy", "scipy", "sklearn"}
    with pytest.raises(KeyError, match="unknown GLUE config"):
        glue.NlpattnGlue(config_name="squad", keep_in_memory=True)


def test_import_is_light():
    code = "import sys, nlpattn.metrics; print([m for m in ('evaluate', 'datasets', 'torch') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


_CHILD = textwrap.dedent(
    """
    import json, multiprocessing, sys, traceback
    sys.modules["transformers.pipelines"] = None  # speed only: evaluate then skips transformers
    import evaluate
    from nlpattn.metrics import TASK_NAMES, glue_metric_path, load_glue_metric

    def score_all(barrier, queue):
        try:
            barrier.wait()  # every process reaches evaluate's module cache at the same time
            out = {}
            for task in TASK_NAMES:
                three = task in ("ax", "mnli", "mnli_matched", "mnli_mismatched")
                refs = [0, 1, 2, 1, 0] if three else [0, 1, 1, 0, 1]
                metric = evaluate.load(glue_metric_path(), config_name=task)
                out[task] = metric.compute(predictions=[0, 1, 0, 1, 1], references=refs)
                ours = load_glue_metric(task).compute(predictions=[0, 1, 0, 1, 1], references=refs)
                assert ours == out[task], (task, ours, out[task])
            out["class"] = type(metric).__module__ + "." + type(metric).__name__
            queue.put(out)
        except BaseException:
            queue.put({"error": traceback.format_exc()})

    # Forked after the imports: separate processes (own locks, own module cache state)
    # that pay for importing evaluate once.
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=score_all, args=(barrier, queue)) for _ in range(3)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join()
    print(json.dumps(results))
    """
)


def test_evaluate_load_offline_from_package_with_concurrent_processes(tmp_path):
    home, hf_home = tmp_path / "home", tmp_path / "hf"
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HTTP_PROXY": "http://127.0.0.1:9",  # any network attempt would fail
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "PYTHONPATH": str(REPO),
    }
    for key in ("HF_MODULES_CACHE", "HF_METRICS_CACHE", "HF_EVALUATE_CACHE", "HF_DATASETS_CACHE"):
        env.pop(key, None)
    run = subprocess.run([sys.executable, "-c", _CHILD], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert [r.get("error") for r in results] == [None] * 3, results
    assert all(r == results[0] for r in results)
    assert results[0]["class"].startswith("evaluate_modules.metrics.glue.")
    assert results[0]["class"].endswith(".glue.NlpattnGlue")
    for task in TASK_NAMES:
        assert set(results[0][task]) == HUB_KEYS[task]
    f1 = f1_score([0, 1, 1, 0, 1], [0, 1, 0, 1, 1])
    assert results[0]["mrpc"] == {"accuracy": 0.6, "f1": pytest.approx(f1)}
    # evaluate copied the module once, byte for byte, under a hash of its code.
    copies = list((hf_home / "modules" / "evaluate_modules" / "metrics" / "glue").glob("*/glue.py"))
    assert len(copies) == 1
    assert copies[0].read_bytes() == Path(glue_metric_path()).read_bytes()
    assert not home.exists()  # nothing written outside HF_HOME (and the tmp working dir)


# ---------------------------------------------------------------- scoreboard arithmetic

# The GLUE leaderboard entry of BERT-large (test set), score 80.5:
# CoLA 60.5, SST-2 94.9, MRPC 89.3/85.4, STS-B 87.6/86.5, QQP 72.1/89.3, MNLI 86.7/85.9,
# QNLI 92.7, RTE 70.1, WNLI 65.1, AX 39.6.
BERT_LARGE = {
    "cola": {"matthews_correlation": 0.605},
    "sst-2": {"accuracy": 0.949},
    "mrpc": {"f1": 0.893, "accuracy": 0.854},
    "sts-b": {"pearson": 0.876, "spearmanr": 0.865},
    "qqp": {"f1": 0.721, "accuracy": 0.893},
    "mnli_matched": {"accuracy": 0.867},
    "mnli_mismatched": {"accuracy": 0.859},
    "qnli": {"accuracy": 0.927},
    "rte": {"accuracy": 0.701},
    "wnli": {"accuracy": 0.651},
    "ax": {"matthews_correlation": 0.396},
}
# Task scores (x100): 60.5, 94.9, (89.3+85.4)/2=87.35, (87.6+86.5)/2=87.05, (72.1+89.3)/2=80.7,
# (86.7+85.9)/2=86.3, 92.7, 70.1, 65.1 -> sum 724.7 over 9 tasks = 80.52 (AX not counted).
BERT_LARGE_SCORE = 7.247 / 9


def test_glue_average_on_published_example():
    scores = {task: glue_task_score(task, metrics) for task, metrics in BERT_LARGE.items()}
    assert scores["mrpc"] == pytest.approx(0.8735)
    assert scores["sts-b"] == pytest.approx(0.8705)
    assert glue_average(scores) == pytest.approx(BERT_LARGE_SCORE, abs=1e-12)
    # Averaging MNLI-m and MNLI-mm first is what makes the published 80.5 (not 81.1 or 80.6).
    assert round(100 * glue_average(scores), 1) == 80.5
    canonical = {normalize_task(task): score for task, score in scores.items()}
    for task in GLUE_TASKS:  # every one of the nine tasks is required; AX is not
        drop = ("mnli_matched",) if task == "mnli" else (task,)
        kept = {name: score for name, score in canonical.items() if name not in drop}
        with pytest.raises(ConfigError, match=f"missing: {drop[0]}$"):
            glue_average(kept)
    del canonical["ax"]
    assert glue_average(canonical) == pytest.approx(BERT_LARGE_SCORE, abs=1e-12)


def test_glue_average_missing_tasks():
    scores = {"cola": 0.5, "sst2": 0.9, "mrpc": 0.8, "stsb": 0.7, "qqp": 0.8,
              "mnli": 0.6, "qnli": 0.9}  # bare "mnli" means matched: mismatched is missing
    with pytest.raises(ConfigError, match="missing: mnli_mismatched, rte, wnli"):
        glue_average(scores)
    assert glue_average(scores, partial=True) == pytest.approx((0.5 + 0.9 + 0.8 + 0.7 + 0.8 + 0.9) / 6)
    with pytest.raises(ConfigError, match="twice"):
        glue_average({"sst2": 0.9, "SST-2": 0.8}, partial=True)
    with pytest.raises(ConfigError, match="hans is not a GLUE task"):
        glue_average({"hans": 0.5, "sst2": 0.9}, partial=True)
    with pytest.raises(DataError, match="mrpc metrics lack"):
        glue_task_score("mrpc", {"accuracy": 0.9})


def test_scoreboard_markdown_full():
    table = scoreboard_markdown(BERT_LARGE)
    header, rule, row = table.splitlines()[:3]
    assert header.split(" | ")[0] == "| Score"
    assert "MRPC (F1/Acc)" in header and "AX (MCC)" in header
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == ["80.5", "60.5", "94.9", "89.3/85.4", "87.6/86.5", "72.1/89.3",
                     "86.7", "85.9", "92.7", "70.1", "65.1", "39.6"]
    assert rule.count("---:") == len(cells)
    assert "Missing" not in table


def test_scoreboard_markdown_partial():
    results = {"cola": {"matthews_correlation": 0.25}, "mrpc": {"accuracy": 0.75, "f1": 0.8},
               "stsb": {"pearson": 0.5, "spearmanr": 0.25}, "mnli_matched": {"accuracy": 0.5}}
    table = scoreboard_markdown(results)
    row = [cell.strip() for cell in table.splitlines()[2].strip("|").split("|")]
    # Complete tasks: CoLA 0.25, MRPC (0.8 + 0.75)/2 = 0.775, STS-B (0.5 + 0.25)/2 = 0.375;
    # MNLI lacks mm. Mean = 1.4 / 3 = 0.4667, starred as partial.
    assert row == ["46.7*", "25.0", "—", "80.0/75.0", "50.0/25.0", "—", "50.0", "—", "—", "—", "—"]
    assert "Missing: SST-2, QQP, MNLI-mm, QNLI, RTE, WNLI." in table
    assert "3 of 9 tasks" in table
    assert "AX" not in table.splitlines()[0]
    assert scoreboard_markdown({}).splitlines()[2].startswith("| — |")

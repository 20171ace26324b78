"""`nlpattn curve` (issue 16): downstream score against pretraining minutes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nlpattn.cli import main
from nlpattn.config import load_config
from nlpattn.errors import ConfigError
from nlpattn.train.curve import Point, pick, run_curve, run_points, scratch_overrides, split_curve_args
from nlpattn.train.glue_suite import task_config

REPO = Path(__file__).resolve().parents[1]


def fake_run(root: Path, setup=(30.0, 30.0), saves=((25, 840.0), (50, 1740.0)), final=(100, 3540.0)) -> Path:
    """A run directory with only the files the curve reads: summary.json and trainer states."""
    root.mkdir(parents=True)
    (root / "summary.json").write_text(json.dumps({"setup_s": {"tokenizer": setup[0], "cache": setup[1]},
                                                   "wall_s": final[1], "steps": final[0]}))
    for step, wall in saves:
        ckpt = root / "checkpoints" / f"step-{step:07d}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"step": step, "wall_s": wall}))
    return root


def test_points_count_the_setup_time(tmp_path):
    run = fake_run(tmp_path / "run")
    points = run_points(run)
    assert [(p.minutes, p.step) for p in points] == [(15.0, 25), (30.0, 50), (60.0, 100)]
    assert points[-1].path == run and points[0].path.name == "step-0000025"


def test_points_of_a_resumed_run_count_the_setup_of_the_sessions_before_each_save(tmp_path):
    run = fake_run(tmp_path / "run", saves=())
    summary = json.loads((run / "summary.json").read_text())  # two sessions: 60 s and 120 s of set-up
    (run / "summary.json").write_text(json.dumps({**summary, "setup_total_s": 180.0}))
    for step, wall, setup in ((25, 840.0, 60.0), (50, 1620.0, 180.0)):
        ckpt = run / "checkpoints" / f"step-{step:07d}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"step": step, "wall_s": wall, "setup_s": setup}))
    assert [(p.minutes, p.step) for p in run_points(run)] == [(15.0, 25), (30.0, 50), (62.0, 100)]


def test_pick_takes_the_last_model_saved_in_time(tmp_path):
    points = [Point(15.0, Path("a"), 25), Point(30.0, Path("b"), 50), Point(60.3, Path("run"), 100)]
    assert pick(points, 15).step == 25
    assert pick(points, 29).step == 25
    assert pick(points, 60).step == 100  # a final save a few seconds late still counts
    assert pick(points, 1000).step == 100
    with pytest.raises(ConfigError, match="train.save_every"):
        pick(points, 10)


def test_scratch_builds_the_runs_model_with_its_tokenizer(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  norm: pre\n  bias: false\n  position: sinusoidal\n"
                                     "  final_norm: null\n  d_model: 48\n  vocab_size: 999\n  pad_token_id: 0\n")
    overrides = scratch_overrides(run)
    assert f"tokenizer.path={run}" in overrides
    assert not any(o.startswith(("model.vocab_size", "model.pad_token_id")) for o in overrides)
    cfg = load_config(task_config("sst2"), overrides)
    assert (cfg.model.norm, cfg.model.bias, cfg.model.position, cfg.model.final_norm, cfg.model.d_model) == \
        ("pre", False, "sinusoidal", None, 48)


def test_curve_keys_apart_from_finetune_overrides():
    picked, rest = split_curve_args(["minutes=0,30", "train.lr=1e-4", "seeds=[1, 2]", "tasks=cola"])
    assert picked == {"minutes": [0.0, 30.0], "tasks": ["cola"], "seeds": [1, 2], "missing": ["run"]}
    assert rest == ["train.lr=1e-4"]
    assert split_curve_args([])[0] == {"minutes": [0.0, 15.0, 30.0, 60.0], "tasks": ["sst2", "cola"],
                                       "seeds": [0, 1, 2], "missing": ["run"]}
    with pytest.raises(ConfigError, match="seeds: expected a comma-separated list of int"):
        split_curve_args(["seeds=a"])
    with pytest.raises(ConfigError, match="missing: 'run'"):
        split_curve_args(["missing=maybe"])


def test_unknown_task_and_missing_run_are_one_line(tmp_path):
    run = fake_run(tmp_path / "run")
    with pytest.raises(Exception, match="unknown GLUE task 'sst3'"):
        run_curve(run, [0], ["sst3"], [0], tmp_path / "out", [])
    for args, says in (([f"--run={tmp_path / 'nope'}"], "nope/summary.json"), ([], "--run: required"),
                       ([f"--run={run}", "minutes=5"], "first checkpoint came at 15.0 min")):
        proc = subprocess.run([sys.executable, str(REPO / "scripts/finetune/curve.py"), *args],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert not (tmp_path / "nope-curve").exists() and not (tmp_path / "run-curve").exists()


def test_tiny_curve_end_to_end(tmp_path):
    """A tiny MLM run with checkpoints, then SST-2 from scratch and from two of its checkpoints."""
    run = tmp_path / "mlm"
    assert main(["pretrain", "--config", str(REPO / "configs/pretrain/mlm-small.yaml"), f"output_dir={run}",
                 "tokenizer.vocab_size=400", "model.d_model=32", "model.n_heads=2", "model.d_ff=64",
                 "model.n_layers=1", "model.max_len=64", "model.bias=false", "data.block_size=32",
                 f"data.train_files=[{REPO / 'data/wikitext-2/valid.txt.gz'}]",
                 f"data.valid_files=[{REPO / 'data/wikitext-2/test.txt.gz'}]",
                 "train.batch_size=8", "train.max_steps=6", "train.save_every=3", "train.keep_last=5",
                 "train.eval_every=3", "train.eval_batches=1", "train.final_eval_batches=1",
                 "train.num_threads=1", "train.progress=false"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["setup_s"]) == {"tokenizer", "cache"} and all(v >= 0 for v in summary["setup_s"].values())
    points = run_points(run)
    assert [p.step for p in points] == [3, 6, 6]  # step-3, step-6 and the final model
    out = tmp_path / "curve"
    overrides = [f"glue.data_dir={REPO / 'data/glue'}", "glue.max_train_examples=32", "glue.max_eval_examples=24", "train.batch_size=16",
                 "glue.max_length=32", "train.num_threads=1", "train.progress=false"]
    assert main(["curve", "--run", str(run), "--out", str(out), "minutes=0,1000", "tasks=sst2", "seeds=0,1",
                 *overrides]) == 0
    result = json.loads((out / "curve.json").read_text())
    scratch, last = result["marks"]
    assert scratch["source"] == "scratch" and last["step"] == 6 and last["source"] == str(run)
    for mark in result["marks"]:
        scores = mark["tasks"]["sst2"]["scores"]
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    scratch_cfg = (out / "runs" / "scratch-sst2-seed0" / "config.yaml").read_text()
    assert "bias: false" in scratch_cfg and "d_model: 32" in scratch_cfg  # the run's model, not glue.yaml's
    assert (out / "curve.png").stat().st_size > 0 and "| 0 min | scratch |" in (out / "curve.md").read_text()
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/eval/sst2.json")}
    run_curve(run, [0, 1000], ["sst2"], [0, 1], out, overrides)  # finished runs are kept, not redone
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/eval/sst2.json")} == before
    partial = run_curve(run, [0, 1000], ["sst2"], [0, 1, 2], out, overrides, run_missing=False)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/eval/sst2.json")} == before  # nothing trained
    assert partial["marks"][0]["tasks"]["sst2"]["seeds"] == [0, 1] and "(2 seeds)" in (out / "curve.md").read_text()
    with pytest.raises(ConfigError, match="no finished sst2 run for 1000 minutes"):
        run_curve(run, [1000], ["sst2"], [7], out, overrides, run_missing=False)


def test_a_single_seed_cell_says_so_instead_of_a_zero_spread():
    from nlpattn.train.curve import _cell

    assert _cell({"mean": 0.86, "std": 0.0, "scores": [0.86]}, 1) == "86.0 (1 seed)"
    assert _cell({"mean": 0.8, "std": 0.005, "scores": [0.795, 0.8, 0.805]}, 3) == "80.0 ± 0.5"
    assert _cell({"mean": 0.8, "std": 0.005, "scores": [0.795, 0.805]}, 3) == "80.0 (2 seeds)"


def test_a_task_missing_at_a_mark_is_a_dash_and_no_point(tmp_path):
    from nlpattn.train.curve import curve_markdown, plot_curve

    cell = {"metric": "accuracy", "seeds": [0], "scores": [0.8], "mean": 0.8, "std": 0.0, "seconds": [1.0]}
    result = {"run": "runs/x", "seeds": [0], "tasks": ["sst2", "imdb"], "overrides": [],
              "marks": [{"minutes": 0, "source": "scratch", "actual_minutes": 0.0, "step": 0,
                         "tasks": {"sst2": cell, "imdb": cell}},
                        {"minutes": 15, "source": "runs/x/checkpoints/step-3", "actual_minutes": 11.0, "step": 3,
                         "tasks": {"sst2": cell}}]}
    md = curve_markdown(result)
    assert "| 15 min | step 3 (11.0 min) | 80.0 (1 seed) | — |" in md
    assert plot_curve(result, tmp_path / "c.png").stat().st_size > 0


def test_the_table_names_the_fine_tuning_overrides():
    from nlpattn.train.curve import curve_markdown

    cell = {"metric": "accuracy", "seeds": [0], "scores": [0.8], "mean": 0.8, "std": 0.0, "seconds": [1.0]}
    result = {"run": "runs/x", "seeds": [0], "tasks": ["sst2"], "overrides": [],
              "marks": [{"minutes": 0, "source": "scratch", "actual_minutes": 0.0, "step": 0, "tasks": {"sst2": cell}}]}
    assert curve_markdown(result).rstrip().endswith("pretraining run `runs/x`.")
    result["overrides"] = ["model.pooling=mean", "glue.max_length=512"]
    assert curve_markdown(result).rstrip().endswith(
        "pretraining run `runs/x`; every fine-tuning run with `model.pooling=mean glue.max_length=512`.")

"""`nlpattn cost compare`: run configs, validation curves from metrics.jsonl, a tiny real run."""
import json

import pytest

from nlpattn.config import load_config
from nlpattn.cost.compare import run_configs, val_curve


def test_run_configs_apply_each_entry_and_the_budget(tmp_path):
    cfg = load_config("configs/cost/compare.yaml", [f"output_dir={tmp_path}", "cost.compare_minutes=0.5"])
    runs = run_configs(cfg, "configs/cost/compare.yaml", [f"output_dir={tmp_path}"])
    assert [name for name, _ in runs] == ["transformer", "lstm", "gru", "cnn"]
    for name, run in runs:
        assert run.model.body == name and run.output_dir == str(tmp_path / name)
        assert run.train.max_minutes == 0.5 and run.train.resume == "never" and run.objective == "clm"
    assert [r.model.n_layers for _, r in runs] == [4, 6, 8, 8]


def test_val_curve_rebuilds_training_time_from_train_events():
    events = [{"step": 10, "split": "train", "tokens": 1000, "tokens_per_s": 500.0},
              {"step": 20, "split": "train", "tokens": 2000, "tokens_per_s": 250.0},
              {"step": 20, "split": "val", "loss": 3.0},
              {"step": 25, "split": "train", "tokens": 2500, "tokens_per_s": 500.0},
              {"step": 25, "split": "val", "loss": 2.5}]
    curve = val_curve(events)
    assert [p["step"] for p in curve] == [20, 25]
    assert [p["seconds"] for p in curve] == pytest.approx([2.0 + 4.0, 2.0 + 4.0 + 1.0])
    assert [p["loss"] for p in curve] == [3.0, 2.5]


def test_compare_end_to_end_tiny(tmp_path):
    from nlpattn.cli import main

    out = tmp_path / "cmp"
    rc = main(["cost", "compare", "--config", "configs/cost/compare.yaml", f"output_dir={out}",
               "cost.compare_runs=[model.body=transformer model.n_layers=1,model.body=lstm model.position=none]",
               "model.d_model=16", "model.n_layers=1", "model.d_ff=32", "data.block_size=16",
               "train.max_steps=4", "train.batch_size=4", "train.log_every=2", "train.eval_every=2",
               "train.eval_batches=1", "train.final_eval_batches=1", "cost.compare_minutes=5"])
    assert rc == 0
    results = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in results["runs"]] == ["transformer", "lstm"]
    for r in results["runs"]:
        assert r["steps"] == 4 and r["flops_per_step"] > 0 and len(r["curve"]) >= 2
        assert r["curve"][-1]["flops"] == 4 * r["flops_per_step"]
    assert "| lstm |" in (out / "compare.md").read_text()
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"

"""The benchmarks' two sides are configured alike where they are meant to be (nothing is timed)."""
import importlib.util

import pytest

from test_train_utils import REPO

SAME = ("optimizer", "fused", "lr", "betas", "eps", "batch", "schedule", "clip", "precision")


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sst2_peer_gets_our_optimizer_decay_groups_schedule_and_data():
    sides = load("sst2_peer").describe()
    ours, peer = sides["ours"], sides["peer"]
    assert ours["optimizer"] == "AdamW" and ours["fused"] is True  # transformers' default: fused torch AdamW
    for key in (*SAME, "elements_by_decay", "epochs", "max_length", "eval"):
        assert ours[key] == peer[key], (key, ours[key], peer[key])
    decay = ours["elements_by_decay"]
    assert set(decay) == {0.0, 0.01} and min(decay.values()) > 1e6  # matrices decay; embeddings, norms do not


def test_shakespeare_anchor_reference_has_our_recipe_and_eval_work():
    sides = load("shakespeare_anchor").describe()
    ours, ref = sides["ours"], sides["reference"]
    assert ours["fused"] is True
    for key in (*SAME, "min_lr", "weight_decay", "steps"):
        assert ours[key] == ref[key], (key, ours[key], ref[key])
    assert ours["eval"][:3] == ref["eval"][:3] and ours["eval"][3] is None  # final eval: the whole split


def test_shakespeare_reference_trains(monkeypatch):
    anchor = load("shakespeare_anchor")
    monkeypatch.setitem(anchor.RECIPE, "max_steps", 3)
    monkeypatch.setitem(anchor.RECIPE, "warmup_steps", 1)
    monkeypatch.setitem(anchor.RECIPE, "eval_every", 2)
    out = anchor.train_reference()
    assert 3.0 < out["final_val_loss"] < 5.0  # ~log(65) after 3 steps

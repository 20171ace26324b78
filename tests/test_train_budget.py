"""train.max_minutes counts the wall time of every session of a run, not only the current one."""
import json

import pytest

from nlpattn.train import checkpoint as ckpt
from nlpattn.train.loop import Trainer
from test_train import ListBatches, fit, tiny_clm, train_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_time_budget_counts_across_resumes(tmp_path):
    first, _ = fit(tmp_path, max_steps=6, save_every=6)
    saved = ckpt.read_checkpoint(ckpt.list_checkpoints(tmp_path)[-1])["trainer_state"]
    assert saved["step"] == 6 and saved["wall_s"] > 0
    # A budget the first session already used up: the resumed one may take one step, no more
    # (counted from zero it would have the whole budget again, ~6 steps' worth).
    budget = saved["wall_s"] / 60
    summary, _ = fit(tmp_path, max_steps=1000, save_every=1000, resume="auto", max_minutes=budget)
    assert summary["resumed_from"].endswith("step-0000006")
    assert summary["stop_reason"] == "max_minutes" and summary["steps"] == 7
    assert summary["wall_s"] >= saved["wall_s"]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 7


def test_time_budget_left_over_is_spent_after_a_resume(tmp_path):
    fit(tmp_path, max_steps=3, save_every=3)
    summary, _ = fit(tmp_path, max_steps=8, save_every=1000, resume="auto", max_minutes=60.0)
    assert summary["stop_reason"] == "max_steps" and summary["steps"] == 8


def test_setup_time_adds_up_across_resumes(tmp_path):
    def session(setup_s, **kw):
        model, batches = tiny_clm(0)
        return Trainer(model, train_cfg(**kw), ListBatches(batches), tmp_path, setup_s=setup_s).fit()

    assert session(2.5, max_steps=4, save_every=4)["setup_total_s"] == 2.5
    summary = session(1.0, max_steps=6, save_every=6, resume="auto")
    assert summary["resumed_from"].endswith("step-0000004") and summary["setup_total_s"] == 3.5
    states = [ckpt.read_checkpoint(p)["trainer_state"] for p in ckpt.list_checkpoints(tmp_path)]
    assert [(s["step"], s["setup_s"]) for s in states] == [(4, 2.5), (6, 3.5)]

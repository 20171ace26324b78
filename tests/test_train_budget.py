"""train.max_minutes counts the wall time of every session of a run, not only the current one."""
import json

import pytest

from nlpattn.errors import ConfigError
from nlpattn.train import checkpoint as ckpt
from nlpattn.train.loop import Trainer
from nlpattn.train.schedule import BudgetClock, budget_clock, lr_multiplier
from test_train import ListBatches, events, fit, tiny_clm, train_cfg

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


def test_decay_over_minutes_follows_the_clock_not_the_step():
    clock = BudgetClock()
    lin = lr_multiplier("linear", warmup=4, total=10, min_ratio=0.1, clock=clock)
    assert lin(0) == pytest.approx(0.25)  # the warm-up ramp still counts steps
    clock.fraction = 0.5
    assert lin(1000) == pytest.approx(0.55) and lin(2) == pytest.approx(0.55)  # past max_steps: the clock rules
    clock.fraction = 1.3
    assert lin(5) == pytest.approx(0.1)
    cos = lr_multiplier("cosine", warmup=0, total=10, min_ratio=0.0, clock=clock)
    clock.fraction = 0.5
    assert cos(9) == pytest.approx(0.5)


@pytest.mark.parametrize("overrides, key", [(dict(decay_over="hours"), "train.decay_over"),
                                            (dict(decay_over="minutes"), "train.max_minutes"),
                                            (dict(decay_over="minutes", max_minutes=1.0, warmup_ratio=0.1),
                                             "train.warmup_ratio")])
def test_decay_over_minutes_is_checked(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key):
        budget_clock(train_cfg(**overrides))


def test_a_time_budget_ends_the_decay_when_decay_over_minutes(tmp_path):
    """Stopped by the clock long before max_steps: the lr has decayed to ~0 by then with
    decay_over=minutes; over steps it would still be near its peak."""
    budget = dict(max_steps=100_000, max_minutes=0.02, schedule="linear", warmup_steps=1,
                  save_every=100_000, log_every=1)
    fit(tmp_path / "minutes", decay_over="minutes", **budget)
    fit(tmp_path / "steps", **budget)
    by_minutes, by_steps = events(tmp_path / "minutes"), events(tmp_path / "steps")
    assert len(by_minutes) > 20 and len(by_steps) > 20  # enough steps for the decay to show
    peak = train_cfg().lr
    assert by_minutes[-1]["lr"] < 0.1 * peak < 0.9 * peak < by_steps[-1]["lr"]
    lrs = [e["lr"] for e in by_minutes]
    assert all(b <= a for a, b in zip(lrs[1:], lrs[2:]))  # falls with the clock after the ramp

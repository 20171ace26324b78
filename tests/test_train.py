"""Trainer pieces in-process: schedules, AdamW groups, atomic checkpoints, resume, NaN, budget."""
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nlpattn.config import TrainConfig
from nlpattn.errors import CheckpointError, OutputError, TrainingError
from nlpattn.train import checkpoint as ckpt
from nlpattn.train.log import RunLogger
from nlpattn.train.loop import Trainer, projected_last_step
from nlpattn.train.schedule import lr_multiplier, param_groups
from test_train_utils import ListBatches, events, tiny_clm


def train_cfg(**kw) -> TrainConfig:
    opts = dict(max_steps=6, batch_size=4, lr=1e-2, warmup_steps=1, log_every=1, eval_every=1000,
                save_every=2, keep_last=5, progress=False, resume="never", precision="fp32")
    opts.update(kw)
    return TrainConfig(**opts)


def fit(run_dir: Path, model_seed: int = 0, model=None, **kw) -> tuple[dict, Trainer]:
    _, batches = tiny_clm(0)
    model = model if model is not None else tiny_clm(model_seed)[0]
    trainer = Trainer(model, train_cfg(**kw), ListBatches(batches), run_dir)
    return trainer.fit(), trainer


def train_losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(run_dir)}


def test_schedule_warmup_then_decay_to_min():
    cos = lr_multiplier("cosine", warmup=10, total=110, min_ratio=0.1)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.55) and cos(110) == pytest.approx(0.1) and cos(500) == pytest.approx(0.1)
    lin = lr_multiplier("linear", warmup=0, total=100, min_ratio=0.0)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.5) and lin(100) == 0.0
    assert lr_multiplier("constant", warmup=4, total=100, min_ratio=0.0)(50) == 1.0


def test_no_weight_decay_on_biases_norms_and_tied_embeddings():
    model, _ = tiny_clm()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decayed == {n for n, p in model.named_parameters() if p.ndim == 2 and "embeddings" not in n}
    assert "embeddings.token.weight" in {names[id(p)] for p in no_decay["params"]}  # tied to the LM head
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_rng_states_round_trip():
    state = ckpt.capture_rng()
    first = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    ckpt.restore_rng(state)
    again = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def test_checkpoint_files_load_without_pickle(tmp_path):
    fit(tmp_path, max_steps=2)
    path = ckpt.list_checkpoints(tmp_path)[-1]
    state = ckpt.read_checkpoint(path)
    assert state["trainer_state"]["step"] == 2 and "embeddings.token.weight" in state["model"]
    torch.save({"state": {}, "param_groups": [], "evil": Path("x")}, path / "optimizer.pt")  # pickles a class
    with pytest.raises(CheckpointError, match="optimizer|unreadable"):
        ckpt.read_checkpoint(path)


def test_crash_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    reference, _ = fit(tmp_path / "ref")
    real_save, calls = torch.save, []

    def crashing_save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:  # the step-4 checkpoint: write half a file, then die
            Path(f).write_bytes(b"half")
            raise OSError("simulated crash while writing optimizer.pt")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crashing_save)
    run = tmp_path / "run"
    with pytest.raises(OutputError, match=r"step-0000004: cannot write \(simulated crash"):
        fit(run)
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000002"]  # nothing half visible
    assert ckpt.read_checkpoint(run / "checkpoints" / "step-0000002")["trainer_state"]["step"] == 2
    (run / "checkpoints" / ".step-0000004.killed.tmp").mkdir()  # what a SIGKILL mid-save leaves
    summary, _ = fit(run, model_seed=1, resume="auto")  # different init: must be replaced by the checkpoint
    assert summary["resumed_from"].endswith("step-0000002")
    assert not (run / "checkpoints" / ".step-0000004.killed.tmp").exists()
    ref, got = train_losses(tmp_path / "ref"), train_losses(run)
    assert sorted(got) == list(range(1, 7))
    assert max(abs(ref[s] - got[s]) for s in range(1, 7)) == 0.0  # bit for bit on CPU
    assert summary["final_val_loss"] is None and reference["steps"] == summary["steps"] == 6


def test_keep_last_prunes_old_checkpoints(tmp_path):
    fit(tmp_path, max_steps=10, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000008", "step-0000010"]


def test_resume_path_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty"):
        fit(tmp_path / "run", resume=str(tmp_path / "empty"))


class NaNAt(nn.Module):
    """Wraps a model; the loss of the given (1-based) calls becomes NaN."""

    def __init__(self, inner: nn.Module, bad: set[int]) -> None:
        super().__init__()
        self.inner, self.bad, self.calls = inner, bad, 0
        self.cfg, self.task = inner.cfg, inner.task

    def forward(self, **batch):
        self.calls += 1
        out = self.inner(**batch)
        if self.calls in self.bad:
            out.loss = out.loss * float("nan")
        return out


def test_nan_loss_stops_naming_the_step(tmp_path):
    model, _ = tiny_clm()
    with pytest.raises(TrainingError, match=r"^step 7: loss is nan"):
        fit(tmp_path, model=NaNAt(model, {7}), max_steps=20, log_every=5, save_every=100)
    assert not (tmp_path / "checkpoints" / "step-0000010").exists()


def test_nan_skip_tolerates_then_stops(tmp_path):
    model, _ = tiny_clm()
    summary, trainer = fit(tmp_path / "a", model=NaNAt(model, {3}), max_steps=8, nan_skip=1)
    assert summary["nan_skipped"] == 1 and summary["steps"] == 8
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    logged = {e["step"]: e for e in events(tmp_path / "a")}
    assert logged[3]["skipped_steps"] == 1 and logged[3]["loss"] is None  # NaN is written as null
    assert all(math.isfinite(e["loss"]) for s, e in logged.items() if s != 3)
    model, _ = tiny_clm()
    with pytest.raises(TrainingError, match=r"step 5: non-finite loss, more than train.nan_skip=1"):
        fit(tmp_path / "b", model=NaNAt(model, {3, 5}), max_steps=8, nan_skip=1)


def test_wall_clock_budget_stops_early(tmp_path):
    summary, _ = fit(tmp_path, max_steps=1000, max_minutes=1e-9)
    assert summary["stop_reason"] == "max_minutes" and summary["steps"] == 1
    assert ckpt.list_checkpoints(tmp_path)[-1].name == "step-0000001"  # the final state is saved


def test_progress_bar_aims_at_the_budgets_end(tmp_path, monkeypatch):
    assert projected_last_step(100, 100_000, steps_per_s=5.0, seconds_left=60.0) == 400
    assert projected_last_step(100, 300, steps_per_s=5.0, seconds_left=60.0) == 300  # the step cap comes first
    assert projected_last_step(100, 1000, steps_per_s=5.0, seconds_left=-3.0) == 100  # the budget is spent
    logger = RunLogger(tmp_path / "log", progress=True, total_steps=100_000, tensorboard=False)
    logger.expect_steps(400)
    assert logger._bar.total == 400
    logger.close()
    aimed = []
    monkeypatch.setattr(RunLogger, "expect_steps", lambda self, total: aimed.append(total))
    fit(tmp_path / "budget", max_steps=6, max_minutes=10.0)
    assert aimed == [6] * 6  # log_every=1; ten minutes outlast six steps, so the cap is the end
    fit(tmp_path / "steps", max_steps=6)
    assert aimed == [6] * 6  # no budget: the bar keeps max_steps and is never re-aimed


pytestmark = pytest.mark.usefixtures("one_thread")

"""Faults survived by a real `nlpattn pretrain` process: SIGKILL then resume, SIGTERM, SIGINT."""
import re
import signal
import subprocess
import sys

import pytest

from nlpattn.train import checkpoint as ckpt
from test_train_utils import REPO, child_env, events, run_cli, tiny_overrides, wait_for_step

MLM_STEPS = 120


def pretrain_args(tmp_path, name: str, **train) -> list[str]:
    return ["pretrain", *tiny_overrides(tmp_path / "data", tmp_path / name, objective="mlm", **train)]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nlpattn", *args], cwd=REPO, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    # MLM with dropout: batches, masking and dropout RNG must all continue exactly
    train = dict(max_steps=MLM_STEPS, save_every=5, eval_every=40)
    args = pretrain_args(tmp_path, "killed", **train) + ["model.dropout=0.1"]
    proc = start(args)
    killed_at = wait_for_step(tmp_path / "killed", 12, proc)
    proc.kill()  # SIGKILL: no handler, no cleanup
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert killed_at < MLM_STEPS and not (tmp_path / "killed" / "summary.json").exists()
    newest = ckpt.list_checkpoints(tmp_path / "killed")[-1]
    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {newest}" in resumed.stderr
    reference = run_cli(pretrain_args(tmp_path, "reference", **train) + ["model.dropout=0.1"])
    assert reference.returncode == 0, reference.stderr
    for split in ("train", "val"):
        ref, got = events(tmp_path / "reference", split), events(tmp_path / "killed", split)
        assert [e["step"] for e in got] == [e["step"] for e in ref]
        diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(ref, got))
        print(f"resume max |loss diff| ({split}): {diff:.3g}")
        assert diff == 0.0  # bit for bit on CPU: same batches, masks, dropout, optimizer state


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig):
    proc = start(pretrain_args(tmp_path, "run", max_steps=100000, save_every=100000))
    wait_for_step(tmp_path / "run", 3, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    match = re.search(rf"received {sig.name} at step (\d+): checkpoint saved in (\S+);", err)
    assert match, err
    assert "Traceback" not in err
    saved = ckpt.read_checkpoint(match.group(2))
    assert saved["trainer_state"]["step"] == int(match.group(1)) >= 3
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == [ckpt.checkpoint_name(int(match.group(1)))]

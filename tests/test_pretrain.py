"""`run_pretrain` for each objective (a self-contained run directory) and the CLI's bad-input errors."""
import json
import math

import pytest
import torch

from nlpattn.config import load_config
from nlpattn.models import load_model
from nlpattn.tokenizer import load_tokenizer
from nlpattn.train.pretrain import run_pretrain
from test_train_utils import REPO, child_env, events, run_cli, tiny_overrides

SUMMARY_KEYS = {"steps", "tokens", "wall_s", "tokens_per_s", "final_val_loss", "final_ppl", "peak_mem_mib"}


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("objective,arch", [("mlm", "encoder"), ("clm", "decoder"), ("seq2seq", "encoder-decoder")])
def test_each_objective_writes_a_self_contained_run(tmp_path, objective, arch):
    run = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(tmp_path / "data", run, objective=objective, max_steps=4, eval_every=2))
    summary = run_pretrain(cfg)
    assert SUMMARY_KEYS <= set(summary) and summary["steps"] == 4 and summary["stop_reason"] == "max_steps"
    assert math.isfinite(summary["final_val_loss"]) and summary["final_ppl"] == pytest.approx(
        math.exp(summary["final_val_loss"]))
    assert 0.0 <= summary["final_val_accuracy"] <= 1.0
    for name in ("config.yaml", "tokenizer.json", "model.safetensors", "model.json", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir()) and (run / "checkpoints" / "step-0000004").is_dir()
    saved = load_config(run / "config.yaml")
    tok = load_tokenizer(run)
    assert saved.model.arch == arch and saved.model.vocab_size == tok.vocab_size
    model = load_model(run)
    assert model.task == objective and model.cfg.arch == arch
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert [e["step"] for e in events(run, "val")] == [2, 4]
    assert {"step", "epoch", "split", "loss", "lr", "tokens_per_s"} <= set(events(run)[0])


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    result = run_cli(["pretrain", *tiny_overrides(tmp_path / "data", tmp_path / "run", max_steps=4),
                      "train.precision=bf16"])
    assert result.returncode == 0, result.stderr
    assert all(math.isfinite(e["loss"]) for e in events(tmp_path / "run"))


BAD = {
    "contradictory arch": (["objective=mlm", "model.arch=decoder"], "model.arch"),
    "causal-only body for mlm": (["objective=mlm", "model.body=lstm", "model.bidirectional=false"],
                                 "model.bidirectional"),
    "resume path": (["train.resume=/nonexistent/ckpt"], "/nonexistent/ckpt"),
    "memory": (["train.batch_size=100000000"], "train.batch_size"),
    "fp16 on cpu": (["train.precision=fp16"], "train.precision"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_and_exit_2(tmp_path, name):
    extra, key = BAD[name]
    result = run_cli(["pretrain", *tiny_overrides(tmp_path / "data", tmp_path / "run"), *extra], timeout=120)
    if name == "fp16 on cpu" and torch.cuda.is_available():
        pytest.skip("fp16 is valid with a GPU")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nlpattn pretrain: error:") and key in lines[0], lines
    if name == "memory":
        assert "GiB" in lines[0]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_script_forces_its_objective(tmp_path):
    import subprocess
    import sys

    args = tiny_overrides(tmp_path / "data", tmp_path / "run", objective="clm") + ["model.arch=decoder"]
    result = subprocess.run([sys.executable, "scripts/pretrain/mlm.py", *args], cwd=REPO, env=child_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "objective=mlm needs arch 'encoder'" in result.stderr, result.stderr

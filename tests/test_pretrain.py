"""`run_pretrain` for each objective (a self-contained run directory) and the CLI's bad-input errors."""
import json
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

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


MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default}


class MatmulDtypes(TorchDispatchMode):
    """Records the floating dtypes of every matmul / attention kernel's tensor inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, set]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            dtypes = {a.dtype for a in args if torch.is_tensor(a) and a.is_floating_point()}
            self.calls.append((func.overloadpacket.__name__, dtypes))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one mixed-precision setting per process: reset it around the test."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_precision_sets_the_matmul_dtype(tmp_path, fresh_accelerate_state, precision, dtype):
    """bf16 must reach the kernels (forward, backward and eval): finite losses alone would pass
    with the setting silently ignored."""
    cfg = load_config(None, tiny_overrides(tmp_path / "data", tmp_path / "run", max_steps=2, eval_every=1000,
                                           final_eval_batches=1) + [f"train.precision={precision}"])
    with MatmulDtypes() as seen:
        summary = run_pretrain(cfg)
    assert math.isfinite(summary["final_val_loss"]) and all(math.isfinite(e["loss"]) for e in events(tmp_path / "run"))
    kinds = {name for name, _ in seen.calls}
    assert {"mm", "addmm", "_scaled_dot_product_flash_attention_for_cpu"} <= kinds, kinds
    wrong = [(name, dtypes) for name, dtypes in seen.calls if dtypes != {dtype}]
    assert not wrong, f"{len(wrong)} of {len(seen.calls)} matmuls not in {dtype}: {wrong[:3]}"


def test_bf16_from_the_command_line(tmp_path):
    result = run_cli(["pretrain", *tiny_overrides(tmp_path / "data", tmp_path / "run", max_steps=4),
                      "train.precision=bf16"])
    assert result.returncode == 0, result.stderr
    assert all(math.isfinite(e["loss"]) for e in events(tmp_path / "run"))
    assert load_config(tmp_path / "run" / "config.yaml").train.precision == "bf16"


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


def test_continued_pretraining_starts_from_init_with_its_shape_and_tokenizer(tmp_path):
    """init=RUN (or RUN/checkpoints/step-N): the weights, model config and tokenizer are init's."""
    from safetensors.torch import load_file

    first = tmp_path / "first"
    run_pretrain(load_config(None, tiny_overrides(tmp_path / "data", first, objective="mlm", max_steps=4)))
    for init in (first, first / "checkpoints" / "step-0000004"):
        out = tmp_path / f"continued-{init.name}"
        # lr ~0: the continued model must still be init's; d_ff=128 is ignored, the shape is init's
        overrides = tiny_overrides(tmp_path / "data", out, objective="mlm", max_steps=1, lr=1e-12, eval_every=1)
        summary = run_pretrain(load_config(None, [*overrides, f"init={init}", "model.d_ff=128"]))
        assert summary["steps"] == 1 and load_config(out / "config.yaml").model.d_ff == 64
        before, after = load_file(first / "model.safetensors"), load_file(out / "model.safetensors")
        assert before.keys() == after.keys()
        for name in before:
            torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-6)
        assert load_tokenizer(out).hash() == load_tokenizer(first).hash()
    # a fresh run of the same config starts elsewhere: the check above can fail
    fresh = tmp_path / "fresh"
    run_pretrain(load_config(None, tiny_overrides(tmp_path / "data", fresh, objective="mlm", max_steps=1, lr=1e-12)))
    assert not torch.allclose(load_file(fresh / "model.safetensors")["embeddings.token.weight"],
                              load_file(first / "model.safetensors")["embeddings.token.weight"], atol=1e-3)


@pytest.mark.parametrize("case", ["missing", "objective"])
def test_continued_pretraining_refuses_a_wrong_init_in_one_line(tmp_path, case):
    first = tmp_path / "first"
    run_pretrain(load_config(None, tiny_overrides(tmp_path / "data", first, objective="mlm", max_steps=2)))
    init, extra = (tmp_path / "nowhere", []) if case == "missing" else (first, ["model.arch=decoder"])
    objective = "mlm" if case == "missing" else "clm"
    out = tmp_path / "out"
    result = run_cli(["pretrain", *tiny_overrides(tmp_path / "data", out, objective=objective), f"init={init}", *extra])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "init:" in lines[0] and str(init) in lines[0], lines
    assert not (out / "metrics.jsonl").exists() and not (out / "model.safetensors").exists()


def test_continued_pretraining_refuses_another_tokenizer(tmp_path):
    first, other = tmp_path / "first", tmp_path / "other"
    run_pretrain(load_config(None, tiny_overrides(tmp_path / "data", first, objective="mlm", max_steps=2)))
    run_pretrain(load_config(None, [*tiny_overrides(tmp_path / "data", other, objective="mlm", max_steps=2),
                                    "tokenizer.n_sentinels=4"]))  # a vocabulary of other ids
    assert load_tokenizer(other).hash() != load_tokenizer(first).hash()
    out = tmp_path / "out"
    result = run_cli(["pretrain", *tiny_overrides(tmp_path / "data", out, objective="mlm"), f"init={first}",
                      f"tokenizer.path={other}"])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tokenizer.path:" in lines[0] and f"init={first}" in lines[0], lines
    assert not out.exists()


def test_a_continued_run_resumes_with_the_same_command(tmp_path):
    first, out = tmp_path / "first", tmp_path / "continued"
    run_pretrain(load_config(None, tiny_overrides(tmp_path / "data", first, objective="mlm", max_steps=2)))
    overrides = [*tiny_overrides(tmp_path / "data", out, objective="mlm", max_steps=4, save_every=2), f"init={first}"]
    assert run_pretrain(load_config(None, [*overrides, "train.max_steps=2"]))["steps"] == 2
    summary = run_pretrain(load_config(None, overrides))  # the same settings: init's tokenizer and shape
    assert summary["steps"] == 4 and summary["resumed_from"].endswith("step-0000002")

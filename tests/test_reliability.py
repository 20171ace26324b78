"""Hostile-user sweep: nothing a user owns is destroyed, and every bad file, path or value gets
one line on stderr naming it, exit code 2, no traceback — and a refused command leaves the run
directory byte for byte as it was.

Commands run in-process through `nlpattn.cli.main` (the same code path as the console script,
without a Python start-up per case); the lock and signal cases use real second processes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nlpattn.cli import main
from nlpattn.rundir import LOCK_NAME
from test_train_utils import REPO, child_env, tiny_overrides, wait_for_step

NEWEST, OLDER = "step-0000012", "step-0000008"


# --- helpers --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, data_dir) -> Path:
    """A finished tiny MLM run: checkpoints at steps 8 and 12, final model, tokenizer, cache."""
    run = tmp_path_factory.mktemp("base") / "run"
    assert main(pretrain_args(data_dir, run)) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [OLDER, NEWEST]
    return run


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    """A private copy of the base run for one test to break."""
    return Path(shutil.copytree(base_run, tmp_path / "run"))


def pretrain_args(data_dir: Path, run: Path, *extra: str) -> list[str]:
    return ["pretrain", *tiny_overrides(data_dir, run, objective="mlm"), "model.norm=post", *extra]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under `root` with a hash of its bytes (directories: 'dir')."""
    if not root.exists():
        return {}
    out = {".": "dir" if root.is_dir() else _hash(root)}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else _hash(p)
    return out


def _hash(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Run `nlpattn ARGV` in-process; (exit code, stderr). Training commands pin fp32: Accelerate
    keeps one precision per process, and `auto` may be bf16 on the machine."""
    capsys.readouterr()
    pin = ["train.precision=fp32"] if argv and argv[0] in ("pretrain", "finetune") else []
    code = main([str(a) for a in argv] + pin)
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, *needles: str, started: bool = False) -> None:
    """Exit 2, exactly one stderr line (after the run's own log lines if it had `started`), no
    traceback, and each needle in that line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    if started:
        lines = [line for line in lines if "error" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- data loss ------------------------------------------------------------------------------

def test_export_refuses_a_users_directory_and_the_run_itself(run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep\n")
    before_run, before_mine = snapshot(run), snapshot(mine)
    code, err = cli(capsys, "export-hf", "--run", run, "--out", mine)
    assert_refused(code, err, f"--out: {mine} is not empty and not an earlier export")
    code, err = cli(capsys, "export-hf", "--run", run, "--out", mine, "--force")
    assert_refused(code, err, str(mine))
    code, err = cli(capsys, "export-hf", "--run", run, "--out", run, "--force")
    assert_refused(code, err, f"{run} is an nlpattn run directory")
    assert snapshot(mine) == before_mine and snapshot(run) == before_run


def test_export_replaces_only_an_earlier_export_and_only_with_force(run, tmp_path, capsys):
    out = tmp_path / "hf"
    code, err = cli(capsys, "export-hf", "--run", run, "--out", out)
    assert code == 0, err
    first = snapshot(out)
    code, err = cli(capsys, "export-hf", "--run", run, "--out", out)
    assert_refused(code, err, "holds an earlier export; add --force")
    assert snapshot(out) == first
    code, err = cli(capsys, "export-hf", "--run", run, "--out", out, "--force")
    assert code == 0, err
    assert set(snapshot(out)) == set(first)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_export_to_a_file_or_under_one(run, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("mine\n")
    code, err = cli(capsys, "export-hf", "--run", run, "--out", target)
    assert_refused(code, err, f"--out: {target} is a file")
    code, err = cli(capsys, "export-hf", "--run", run, "--out", target / "sub")
    assert_refused(code, err, str(target))
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize("override, key", [
    ("train.batch_size=8", "train.batch_size"),
    ("model.d_model=64", "model.d_model"),
    ("objective=clm", "objective"),
    ("tokenizer.vocab_size=64", "tokenizer.vocab_size"),
    ("train.seed=5", "train.seed"),
])
def test_refused_resume_changes_nothing(run, data_dir, capsys, override, key):
    before = snapshot(run)
    code, err = cli(capsys, *pretrain_args(data_dir, run, override))
    assert_refused(code, err, f"{key}: the checkpoints in {run} were made with", "now")
    assert snapshot(run) == before


def test_resume_may_change_the_attention_kernel(run, data_dir, capsys):
    """model.attention picks a kernel for the same function: a run may resume under another one."""
    code = main(pretrain_args(data_dir, run, "model.attention=math", "train.max_steps=14"))
    assert code == 0, capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith(NEWEST) and summary["steps"] == 14


def test_a_second_process_on_the_same_run_is_refused(run, data_dir, capsys):
    args = pretrain_args(data_dir, run, "train.max_steps=100000", "train.save_every=100000",
                         "train.eval_every=100000", "train.resume=never")
    first = subprocess.Popen([sys.executable, "-m", "nlpattn", *args], cwd=REPO, env=child_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lock(run, first)
        before = {k: v for k, v in snapshot(run).items() if k.startswith("checkpoints")}
        code, err = cli(capsys, *args)  # resume=never would prune the first one's checkpoints
        assert_refused(code, err, f"output_dir: {run} is in use by another nlpattn process (pid {first.pid}")
        assert {k: v for k, v in snapshot(run).items() if k.startswith("checkpoints")} == before
    finally:
        first.kill()  # SIGKILL: the lock file stays behind, but the kernel releases the lock
        first.communicate(timeout=120)
    code, err = cli(capsys, *pretrain_args(data_dir, run, "train.resume=never"))
    assert code == 0, err
    assert not (run / LOCK_NAME).exists()  # released on exit


def wait_for_lock(run: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until `proc` holds the run directory's lock (its pid is in the lock file)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        lock = run / LOCK_NAME
        if lock.is_file() and f"pid {proc.pid}:" in lock.read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise AssertionError(f"{proc.pid} did not lock {run}")


# --- one loader for run files ---------------------------------------------------------------

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _reshape_config(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["config"]["d_model"] = 48
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, bad_file", [
    (lambda run: _truncate(run / "model.safetensors"), "model.safetensors"),
    (lambda run: _truncate(run / "model.json"), "model.json"),
    (lambda run: _reshape_config(run / "model.json"), "model.safetensors"),
])
@pytest.mark.parametrize("command", ["generate", "attention-map", "export-hf", "finetune"])
def test_a_damaged_run_is_one_line_in_every_command(run, tmp_path, capsys, damage, bad_file, command):
    damage(run)
    before = snapshot(run)
    argv = {"generate": ["generate", "--run", run, "prompt=a", "max_new_tokens=2"],
            "attention-map": ["attention-map", "--run", run, "text=a b", f"out={tmp_path / 'a.png'}"],
            "export-hf": ["export-hf", "--run", run, "--out", tmp_path / "hf"],
            "finetune": ["finetune", "task=rte", f"init={run}", f"output_dir={tmp_path / 'ft'}",
                         "train.max_steps=1"]}[command]
    code, err = cli(capsys, *argv)
    assert_refused(code, err, str(run / bad_file))
    assert snapshot(run) == before
    assert not (tmp_path / "hf").exists() and not (tmp_path / "a.png").exists()
    assert not (tmp_path / "ft" / "config.yaml").exists()


def _scheduler_empty(ck: Path) -> None:
    (ck / "scheduler.json").write_text("{}")


def _rng_empty(ck: Path) -> None:
    (ck / "rng.json").write_text("{}")


def _rng_garbage(ck: Path) -> None:
    (ck / "rng.json").write_text(json.dumps([{"python": [3, [1, 2], None], "numpy": [], "torch": "AAAA"}]))


def _data_seed_text(ck: Path) -> None:
    state = json.loads((ck / "data.json").read_text())
    (ck / "data.json").write_text(json.dumps({**state, "seed": "abc"}))


def _trainer_state_step(ck: Path) -> None:
    state = json.loads((ck / "trainer_state.json").read_text())
    (ck / "trainer_state.json").write_text(json.dumps({**state, "step": "twelve"}))


def _optimizer_not_a_state(ck: Path) -> None:
    torch.save({"hello": torch.zeros(2)}, ck / "optimizer.pt")


def _optimizer_wrong_shapes(ck: Path) -> None:
    state = torch.load(ck / "optimizer.pt", weights_only=True)
    for s in state["state"].values():
        s["exp_avg"] = torch.zeros(3)
    torch.save(state, ck / "optimizer.pt")


def _weights_truncated(ck: Path) -> None:
    _truncate(ck / "model.safetensors")


def _weights_other_shape(ck: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(ck / "model.safetensors")
    name = next(k for k, v in tensors.items() if v.dim() == 2)
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, ck / "model.safetensors")


CHECKPOINT_DAMAGE = [
    (_scheduler_empty, "scheduler.json"), (_rng_empty, "rng.json"), (_rng_garbage, "rng.json"),
    (_data_seed_text, "data.json"), (_trainer_state_step, "trainer_state.json"),
    (_optimizer_not_a_state, "optimizer.pt"), (_optimizer_wrong_shapes, "optimizer.pt"),
    (_weights_truncated, "model.safetensors"), (_weights_other_shape, "model.safetensors"),
]


@pytest.mark.parametrize("damage, bad_file", CHECKPOINT_DAMAGE)
def test_resume_from_a_damaged_checkpoint_names_the_file(run, data_dir, capsys, damage, bad_file):
    newest = run / "checkpoints" / NEWEST
    damage(newest)
    before = snapshot(run)
    code, err = cli(capsys, *pretrain_args(data_dir, run, f"train.resume={newest}"))
    assert_refused(code, err, str(newest / bad_file))
    assert snapshot(run) == before


@pytest.mark.parametrize("damage, bad_file", CHECKPOINT_DAMAGE[::3])
def test_resume_auto_falls_back_to_the_newest_checkpoint_that_loads(run, data_dir, capsys, damage, bad_file):
    damage(run / "checkpoints" / NEWEST)
    code, err = cli(capsys, *pretrain_args(data_dir, run, "train.max_steps=14"))
    assert code == 0, err
    assert f"skipping checkpoint {NEWEST}: {run / 'checkpoints' / NEWEST / bad_file}" in err
    assert f"resumed from {run / 'checkpoints' / OLDER} (step 8)" in err
    assert json.loads((run / "summary.json").read_text())["steps"] == 14


def test_resume_auto_with_no_loadable_checkpoint_is_refused(run, data_dir, capsys):
    for name in (NEWEST, OLDER):
        _rng_empty(run / "checkpoints" / name)
    before = snapshot(run)
    code, err = cli(capsys, *pretrain_args(data_dir, run, "train.max_steps=14"))
    assert_refused(code, err, f"no checkpoint of {run} can be resumed; newest: {run / 'checkpoints' / NEWEST / 'rng.json'}")
    assert snapshot(run) == before


def test_a_checkpoint_loads_as_a_model_with_its_own_weights(run):
    from safetensors.torch import load_file

    from nlpattn.models import load_model

    checkpoint = run / "checkpoints" / OLDER
    model = load_model(checkpoint)
    weights = load_file(checkpoint / "model.safetensors")
    assert weights and all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    final = load_model(run).state_dict()["embeddings.token.weight"]
    assert not torch.equal(model.state_dict()["embeddings.token.weight"], final)  # step 8, not 12


def test_stale_temporaries_of_a_killed_run_are_cleaned_and_nothing_else(run, data_dir, capsys):
    stale = [run / ".config.yaml.k1ll3d.tmp", run / "checkpoints" / ".step-0000016.k1ll3d.tmp",
             run / "checkpoints" / ".step-0000004.deleting", run / "cache" / ".train.k1ll3d.tmp"]
    for p in stale:
        p.mkdir() if "step" in p.name or "train" in p.name else p.write_text("half")
    mine = [run / ".my-notes", run / "notes.tmp", run / "checkpoints" / "step-keep"]
    for p in mine:
        p.write_text("mine")
    code, err = cli(capsys, *pretrain_args(data_dir, run, "train.max_steps=14"))
    assert code == 0, err
    assert not [p for p in stale if p.exists()]
    assert all(p.read_text() == "mine" for p in mine)


# --- bad paths and values -------------------------------------------------------------------

def test_config_that_is_not_utf8(tmp_path, capsys):
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes("model:\n  d_model: 64  # größe\n".encode("latin-1"))
    code, err = cli(capsys, "info", "--config", cfg)
    assert_refused(code, err, f"{cfg}: not UTF-8 text (byte 0xf6")


@pytest.mark.parametrize("where", ["file", "under-file", "unwritable"])
def test_output_dir_that_cannot_be_a_run_directory(tmp_path, data_dir, capsys, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine\n")
    out = {"file": blocker, "under-file": blocker / "run",
           "unwritable": Path("/sys/nlpattn-test-run")}[where]
    code, err = cli(capsys, *pretrain_args(data_dir, out))
    assert_refused(code, err, "output_dir:", str(out if where != "under-file" else blocker))
    assert blocker.read_text() == "mine\n"


def test_full_disk_is_named_and_leaves_no_half_checkpoint(tmp_path, data_dir, capsys):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); "
                    "test_disk_full_error_from_any_writer covers the mechanism")
    try:
        run = disk / "run"
        code, err = cli(capsys, *pretrain_args(data_dir, run))
        assert_refused(code, err, "disk full (no space left on device)", str(run), started=True)
        assert not [p for p in run.rglob(".*")], list(run.rglob(".*"))  # no temporaries left
        assert not [p for p in (run / "checkpoints").iterdir()] if (run / "checkpoints").exists() else True
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_disk_full_error_from_any_writer(tmp_path, monkeypatch):
    """torch.save wraps ENOSPC in a RuntimeError: the atomic writer still names the disk."""
    from nlpattn import fileio
    from nlpattn.errors import OutputError

    def failing_save(obj, f, *a, **k):
        Path(f).write_bytes(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    target = tmp_path / "ck"
    with pytest.raises(OutputError, match=f"{target}: disk full"):
        with fileio.atomic_dir(target) as tmp:
            torch.save({}, tmp / "optimizer.pt")
    assert list(tmp_path.iterdir()) == []


def test_transformers_init_whose_weights_the_safe_loader_refuses(tmp_path, capsys):
    import pickle

    import transformers

    hf = tmp_path / "hf-bert"
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)
    config.save_pretrained(hf)
    marker = tmp_path / "code-ran"
    payload = type("Exploit", (), {"__reduce__": lambda self: (os.system, (f"touch {marker}",))})()
    (hf / "pytorch_model.bin").write_bytes(pickle.dumps(payload))
    (hf / "tokenizer.json").write_text("{}")
    code, err = cli(capsys, "finetune", "task=rte", f"init={hf}", f"output_dir={tmp_path / 'ft'}")
    assert_refused(code, err, str(hf))
    assert not marker.exists()


def test_info_with_an_absurd_size(capsys):
    code, err = cli(capsys, "info", "--config", REPO / "configs/model/transformer-small.yaml",
                    "model.d_model=4000000", "model.n_heads=1")
    assert_refused(code, err, "memory:", "model.d_model=4000000")


@pytest.mark.parametrize("override, key", [("train.max_steps=0", "train.max_steps"),
                                           ("train.lr=-1", "train.lr"),
                                           ("train.max_minutes=0", "train.max_minutes")])
def test_values_refused_before_any_work(tmp_path, data_dir, capsys, override, key):
    out = tmp_path / "run"
    code, err = cli(capsys, *pretrain_args(data_dir, out, override))
    assert_refused(code, err, key)
    assert not out.exists()


def test_settings_checked_before_tokenizer_and_cache_work(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code, err = cli(capsys, *pretrain_args(data_dir, out, "objective=seq2seq", "tokenizer.n_sentinels=1"))
    assert_refused(code, err, "tokenizer.n_sentinels")
    assert not out.exists()


def test_glue_data_dir_that_is_not_a_directory(tmp_path, capsys):
    blocker = tmp_path / "glue.tsv"
    blocker.write_text("x\n")
    for data_dir, needle in ((blocker, "is a file"), (tmp_path / "nowhere", "does not exist")):
        out = tmp_path / "ft"
        code, err = cli(capsys, "finetune", "task=rte", f"glue.data_dir={data_dir}", f"output_dir={out}")
        assert_refused(code, err, "glue.data_dir:", needle)
        assert not out.exists()


@pytest.mark.parametrize("bad_row, message", [
    (lambda fields: [*fields[:-1], "nan"], "label 'nan' is not a finite number"),
    (lambda fields: ["no tab in this row"], "expected"),
])
def test_a_bad_row_inside_a_gzipped_task_file_is_bad_data(tmp_path, capsys, bad_row, message):
    """One line naming the file and line, exit 2, and no run directory at all: the task files are
    read before a tokenizer would be trained and saved into it."""
    import gzip

    task_dir = tmp_path / "glue" / "STS-B"
    task_dir.mkdir(parents=True)
    src = REPO / "data" / "glue" / "STS-B"
    for split in ("train", "dev"):
        path = next(src.glob(f"{split}.tsv*"))
        text = (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8").read()
        lines = text.splitlines()
        if split == "train":
            lines[3] = "\t".join(bad_row(lines[3].split("\t")))
        with gzip.open(task_dir / f"{split}.tsv.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    out = tmp_path / "ft"
    code, err = cli(capsys, "finetune", "task=stsb", f"glue.data_dir={tmp_path / 'glue'}", f"output_dir={out}",
                    "train.max_steps=1")
    assert_refused(code, err, f"{task_dir / 'train.tsv.gz'}:4: {message}")
    assert not out.exists()


# --- signals --------------------------------------------------------------------------------

def test_a_signal_during_the_final_evaluation_is_honoured(run, data_dir):
    """SIGTERM while the final evaluation runs (slowed by a large validation set): the process
    stops at once with a checkpoint, exit 128+SIGTERM, no final model."""
    long_valid = data_dir / "long-valid.txt"
    long_valid.write_text((data_dir / "train.txt").read_text() * 6)
    args = pretrain_args(data_dir, run, "train.max_steps=14", f"data.valid_files=[{long_valid}]",
                         "train.final_eval_batches=null", "train.eval_batch_size=1", "data.valid_fraction=0")
    (run / "model.safetensors").unlink()
    shutil.rmtree(run / "cache" / "valid")
    proc = subprocess.Popen([sys.executable, "-m", "nlpattn", *args], cwd=REPO, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(run, 14, proc)  # the last train step is logged: the final evaluation starts
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "received SIGTERM at step 14: checkpoint saved" in err and "Traceback" not in err
    assert (run / "checkpoints" / "step-0000014").is_dir()
    assert not (run / "model.safetensors").exists()
    assert json.loads((run / "summary.json").read_text())["stop_reason"] == "SIGTERM"


def test_finetune_starts_from_a_checkpoint(run, tmp_path, capsys):
    out = tmp_path / "ft"
    code, err = cli(capsys, "finetune", "task=rte", f"init={run / 'checkpoints' / OLDER}", f"output_dir={out}",
                    "glue.max_length=32", "data.block_size=32", "train.max_steps=2", "train.epochs=null", "train.batch_size=4",
                    "train.eval_batches=1", "train.precision=fp32", "train.progress=false", "train.num_threads=1")
    assert code == 0, err
    assert json.loads((out / "eval" / "rte.json").read_text())["init"] == str(run / "checkpoints" / OLDER)


def test_one_process_runs_trainings_of_different_precisions_in_turn():
    """make demo, nlpattn glue and cost compare run several trainings in one process."""
    from nlpattn.config import TrainConfig
    from nlpattn.train.runtime import make_accelerator

    assert str(make_accelerator(TrainConfig(precision="bf16")).mixed_precision) == "bf16"
    assert str(make_accelerator(TrainConfig(precision="fp32")).mixed_precision) == "no"

"""Helpers shared by the training tests (no tests here): tiny data, configs, subprocess runs."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nlpattn.config import ModelConfig
from nlpattn.models import build_model

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO / "data" / "tinyshakespeare" / "input.txt.gz"


def tiny_text(directory: Path, n_train: int = 30000, n_valid: int = 6000) -> tuple[Path, Path]:
    """Real text (tiny-shakespeare): the first n_train characters, and n_valid from the end."""
    text = gzip.open(SHAKESPEARE, "rt", encoding="utf-8").read()
    directory.mkdir(parents=True, exist_ok=True)
    train, valid = directory / "train.txt", directory / "valid.txt"
    for path, part in ((train, text[:n_train]), (valid, text[-n_valid:])):
        if not path.is_file() or path.read_text(encoding="utf-8") != part:  # keep mtimes: caches stay valid
            path.write_text(part, encoding="utf-8")
    return train, valid


def tiny_overrides(data_dir: Path, out: Path, objective: str = "clm", **train) -> list[str]:
    """key=value overrides for a tiny, fast run on tiny_text data (char tokenizer)."""
    train_file, valid_file = tiny_text(data_dir)
    opts = {"max_steps": 12, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "log_every": 1,
            "eval_every": 6, "eval_batches": 2, "eval_batch_size": 8, "final_eval_batches": 4,
            "save_every": 4, "keep_last": 2, "progress": False, "num_threads": 1,
            "precision": "fp32"}  # tests compare numerics: never the machine-dependent auto
    opts.update(train)
    return [f"objective={objective}", f"output_dir={out}", "model.d_model=32", "model.n_layers=2",
            "model.n_heads=4", "model.d_ff=64", "model.max_len=32", "model.dropout=0.0",
            "tokenizer.kind=char", "tokenizer.vocab_size=128", "tokenizer.n_sentinels=8",
            f"data.train_files=[{train_file}]", f"data.valid_files=[{valid_file}]", "data.block_size=32",
            *[f"train.{k}={v}" for k, v in opts.items()]]


def run_cli(args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`python -m nlpattn ARGS` in a subprocess (captured text output)."""
    return subprocess.run([sys.executable, "-m", "nlpattn", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=child_env(), **kw)


def float32_step(x: float) -> float:
    """The gap between float32 `x` and the next float32 (one rounding step at x's size)."""
    return float(np.spacing(np.float32(abs(x))))


def child_env() -> dict:
    """Environment for subprocesses: one thread each (the test machine is shared)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def events(run_dir: Path, split: str = "train") -> list[dict]:
    """The metrics.jsonl events of one split."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e["split"] == split]


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Poll metrics.jsonl until a train event with step >= `step` appears; returns that step."""
    deadline = time.monotonic() + timeout
    path = Path(run_dir) / "metrics.jsonl"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process ended early (rc {proc.returncode}): {proc.stderr.read()}")
        if path.is_file():
            steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]
            if steps and max(steps) >= step:
                return max(steps)
        time.sleep(0.02)
    raise AssertionError(f"no step {step} in {path} after {timeout}s")


class ListBatches:
    """A resumable BatchSource over a fixed list of batches (cycled)."""

    def __init__(self, batches: list[dict]) -> None:
        self.items, self.position = batches, 0

    def __next__(self) -> dict:
        batch = self.items[self.position % len(self.items)]
        self.position += 1
        return batch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def tiny_clm(seed: int = 0, vocab: int = 50, dropout: float = 0.0):
    """A tiny causal LM (d=16) and 8 batches of random ids for in-process Trainer tests."""
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="decoder", vocab_size=vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                      max_len=16, dropout=dropout)
    g = torch.Generator().manual_seed(seed + 1)
    batches = []
    for _ in range(8):
        ids = torch.randint(0, vocab, (4, 16), generator=g)
        batches.append({"input_ids": ids, "attention_mask": None, "labels": ids.clone()})
    return build_model(cfg, "clm"), batches


def sharpen(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw every parameter large (std 0.3, LayerNorm gains 1 ± 0.5, biases ± 0.1)."""
    g = torch.Generator().manual_seed(seed)
    norms = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.5 * noise if id(p) in norms else (0.3 if p.dim() > 1 else 0.1) * noise)
    return model

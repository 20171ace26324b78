"""make docs, stage 1: the small real runs the guide quotes, each through the `nlpattn` CLI.

Each run is skipped when its result file already exists (resumable, idempotent); a fine-tuning
run left half-written by an interrupted build is removed and started again (pretraining
resumes from its last checkpoint by itself)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    """One `nlpattn` command of make docs and the file that says it is done."""

    name: str
    command: str  # as printed in the guide: `nlpattn ...`
    done: str  # a file the command writes last, relative to the repo

    @property
    def run_dir(self) -> Path:
        """The run directory (the folder holding `done`, or its parent for eval/ files)."""
        path = REPO / self.done
        return path.parent.parent if path.parent.name == "eval" else path.parent


RUNS = [
    Run("gates", "nlpattn finetune --config configs/docs/gates.yaml", "runs/docs/gates/eval/sst2.json"),
    Run("mlm", "nlpattn pretrain --config configs/docs/mlm.yaml", "runs/docs/mlm/summary.json"),
    Run("sst2", "nlpattn finetune --config configs/docs/sst2-from-mlm.yaml",
        "runs/docs/sst2-from-mlm/eval/sst2.json"),
    Run("clm", "nlpattn pretrain --config configs/docs/clm.yaml", "runs/docs/clm/summary.json"),
    Run("seq2seq", "nlpattn pretrain --config configs/docs/seq2seq.yaml", "runs/docs/seq2seq/summary.json"),
    Run("char", "nlpattn pretrain --config configs/docs/char.yaml", "runs/docs/char/summary.json"),
    Run("cost", "nlpattn cost --config configs/docs/cost.yaml", "runs/docs/cost/table1.json"),
]


def run_one(run: Run) -> float:
    """Run one command unless done; return the seconds it took (0 when skipped)."""
    if (REPO / run.done).is_file():
        print(f"[docs] {run.name}: done already ({run.done})", flush=True)
        return 0.0
    if " finetune " in run.command and run.run_dir.exists():
        shutil.rmtree(run.run_dir)  # an interrupted fine-tuning run: start it again
    print(f"[docs] {run.name}: {run.command}", flush=True)
    start = time.perf_counter()
    args = [sys.executable, "-m", "nlpattn", *run.command.split()[1:]]
    subprocess.run(args, cwd=REPO, check=True)
    return time.perf_counter() - start


def run_all() -> dict[str, float]:
    """Every run of make docs in order; seconds per run (0 for those already done)."""
    return {run.name: round(run_one(run), 1) for run in RUNS}

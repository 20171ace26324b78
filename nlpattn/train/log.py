"""Training logs, written by the main process only: `metrics.jsonl` (one JSON object per event),
TensorBoard scalars under `tb/`, and a tqdm progress bar."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from nlpattn.fileio import atomic_write_text

METRICS_FILE = "metrics.jsonl"


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class RunLogger:
    """metrics.jsonl + TensorBoard + tqdm. A disabled logger (non-main process) does nothing."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, progress: bool = True,
                 total_steps: int = 0, start_step: int = 0, tensorboard: bool = True) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.path = self.run_dir / METRICS_FILE
        self._file = self._tb = self._bar = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.path, start_step)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step + 1)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                             dynamic_ncols=True, mininterval=1.0)

    def log(self, event: dict) -> None:
        """Append one event (`step`, `split`, metrics…) to metrics.jsonl and TensorBoard."""
        if not self.enabled:
            return
        clean = {k: _finite_or_none(v) for k, v in event.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tb is not None:
            split, step = event.get("split", "train"), int(event.get("step", 0))
            for key, value in event.items():
                if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{split}/{key}", value, step)
        if self._bar is not None and "loss" in event:
            self._bar.set_postfix({f"{event.get('split', 'train')}_loss": f"{event['loss']:.4f}"}, refresh=False)

    def advance(self, n: int = 1) -> None:
        """Move the progress bar by `n` steps."""
        if self._bar is not None:
            self._bar.update(n)

    def expect_steps(self, total: int) -> None:
        """Re-aim the progress bar at `total` steps (where a time budget will stop the run first)."""
        if self._bar is not None and total != self._bar.total:
            self._bar.total = total
            self._bar.refresh()

    def write(self, message: str) -> None:
        """Print a message on stderr without breaking the progress bar (main process only)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Flush and close every sink."""
        for sink in (self._bar, self._tb, self._file):
            if sink is not None:
                sink.close()
        self._file = self._tb = self._bar = None


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only events with `step <= last_step` (a resumed run rewrites what came after)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= last_step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue  # a line cut short by a crash
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_metrics(run_dir: str | os.PathLike, split: str | None = None) -> list[dict]:
    """The events of a run's metrics.jsonl (optionally only one split)."""
    path = Path(run_dir) / METRICS_FILE
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [e for e in events if split is None or e.get("split") == split]

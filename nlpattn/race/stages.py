"""The race's stages, each resumable: data (tokenizer + token cache), lr sweep, MLM
pretraining, fine-tuning; then the report. A run whose directory holds summary.json (pretraining)
or eval/<task>.json (fine-tuning) is finished and skipped; an unfinished one is started afresh
(wall-clock runs are not resumed mid-way: their budget would no longer be comparable).

Every process runs every stage (the Trainer is Accelerate-based); only the main process deletes
unfinished run directories, writes stage_seconds.json and the report, and shows progress bars.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from nlpattn.config import Config, load_config
from nlpattn.errors import ConfigError
from nlpattn.fileio import atomic_write_json
from nlpattn.race import plan

STAGES = ("data", "sweep", "pretrain", "finetune")
SIGNALS = ("SIGINT", "SIGTERM")


class Procs:
    """Rank and barrier through Accelerate's PartialState, looked up on each use: every run's
    make_accelerator resets that state in a single process, so no instance is kept."""

    @staticmethod
    def _partial():
        from accelerate import PartialState

        from nlpattn.train.runtime import multi_cpu

        return PartialState(cpu=multi_cpu())

    @property
    def is_main_process(self) -> bool:
        """True on the main process (the only one that writes shared files)."""
        return self._partial().is_main_process

    def wait_for_everyone(self) -> None:
        """Barrier across processes (no-op with one)."""
        self._partial().wait_for_everyone()

    def main_process_first(self):
        """Context: the main process runs the block first, the others after it."""
        return self._partial().main_process_first()


def _state() -> Procs:
    return Procs()


def reset_peak_memory() -> None:
    """Restart the peak-memory counters the run summaries read (CUDA allocator or the RSS high-water mark)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    from nlpattn.allocator import release_free_memory

    release_free_memory()  # blocks the last stage freed but the process kept must not count in the next peak
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM, i.e. ru_maxrss
    except OSError:
        pass


def read_json(path: Path) -> dict | None:
    """The JSON object at `path`, or None when the file does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class StageClock:
    """Seconds spent working in each stage, summed over every invocation (stage_seconds.json)."""

    def __init__(self, out: Path, is_main: bool) -> None:
        self.path, self.is_main = out / "stage_seconds.json", is_main
        self.seconds = read_json(self.path) or {}

    def add(self, stage: str, seconds: float) -> None:
        """Add `seconds` to `stage` and save (main process only)."""
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + seconds, 3)
        if self.is_main:
            atomic_write_json(self.path, self.seconds)


def finished(done: Path) -> bool:
    """Whether a run's marker file exists and the run was not stopped by a signal."""
    marker = read_json(done)
    return marker is not None and marker.get("stop_reason") not in SIGNALS


def _check_finished(done: Path) -> None:
    """After a run: stop the race (exit 130, resumable) if a signal stopped that run."""
    if not finished(done):
        raise KeyboardInterrupt(f"{done.parent} did not finish")


# What our pretraining and fine-tuning runs write into a run directory (hidden temporaries aside).
RUN_ENTRIES = {"config.yaml", "metrics.jsonl", "tb", "checkpoints", "summary.json", "model.safetensors",
               "model.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "eval", "predictions"}


def remove_unfinished_run(run_dir: Path) -> None:
    """Remove a run directory a killed race left unfinished; ConfigError (nothing removed) if it
    holds anything our runs do not write: it is not ours to delete."""
    strangers = [run_dir.name] if not run_dir.is_dir() else sorted(
        p.name for p in run_dir.iterdir() if p.name not in RUN_ENTRIES and not p.name.startswith("."))
    if strangers:
        raise ConfigError(f"output_dir: {run_dir} is not an unfinished race run (it holds {strangers[:3]}); "
                          f"move it away or choose another output_dir")
    shutil.rmtree(run_dir)


def _fresh(run_dir: Path, done: Path, state) -> bool:
    """True if the run must be (re)done: removes an unfinished run directory on the main process."""
    state.wait_for_everyone()
    todo = not finished(done)
    if todo and run_dir.exists() and state.is_main_process:
        remove_unfinished_run(run_dir)
    state.wait_for_everyone()
    return todo


def _bar(total: int, desc: str, state):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"race {desc}", disable=not state.is_main_process, dynamic_ncols=True)


def stage_data(cfg: Config, state) -> None:
    """Train the one tokenizer (output_dir/tokenizer) and build the one token cache (output_dir/cache)."""
    import dataclasses

    from nlpattn.data.corpus import build_corpus
    from nlpattn.tokenizer import train_or_load

    out = Path(cfg.output_dir)
    tok_cfg = dataclasses.replace(cfg, output_dir=str(out / "tokenizer"))
    with _bar(2, "data", state) as bar, state.main_process_first():
        tok = train_or_load(tok_cfg)
        bar.update()
        build_corpus(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=str(out / "cache"))), tok)
        bar.update()


def pretrain_run(run_cfg: Config, state) -> dict:
    """Run one MLM pretraining (unless finished) and return its summary."""
    from nlpattn.train.pretrain import run_pretrain

    run_dir = Path(run_cfg.output_dir)
    if _fresh(run_dir, run_dir / "summary.json", state):
        reset_peak_memory()
        run_pretrain(run_cfg)
    state.wait_for_everyone()
    _check_finished(run_dir / "summary.json")
    return read_json(run_dir / "summary.json")


def stage_sweep(cfg: Config, source, overrides, state) -> dict[str, dict[float, float]]:
    """{body: {lr: final validation loss}} of race.sweep_minutes MLM runs per lr."""
    out, losses = Path(cfg.output_dir), {}
    with _bar(len(cfg.race.bodies) * len(cfg.race.lrs), "sweep", state) as bar:
        for body in cfg.race.bodies:
            losses[body] = {}
            for lr in cfg.race.lrs:
                run_dir = out / "sweep" / body / f"lr-{lr:g}"
                c = plan.body_config(cfg, source, overrides, body, run_dir, cfg.race.sweep_minutes, lr)
                losses[body][lr] = pretrain_run(c, state).get("final_val_loss")
                bar.update()
    return losses


def stage_pretrain(cfg: Config, source, overrides, lrs: dict[str, float], state) -> dict[str, Path]:
    """{body: run dir} of each body's race.minutes MLM run at its best lr."""
    out, runs = Path(cfg.output_dir), {}
    with _bar(len(lrs), "pretrain", state) as bar:
        for body, lr in lrs.items():
            run_dir = out / "pretrain" / body
            pretrain_run(plan.body_config(cfg, source, overrides, body, run_dir, cfg.race.minutes, lr), state)
            runs[body] = run_dir
            bar.update()
    return runs


def stage_finetune(cfg: Config, inits: dict[str, Path], state) -> list[plan.Job]:
    """Every fine-tuning run (nlpattn finetune with init=the body's pretrained run)."""
    from nlpattn.train.finetune import run_finetune

    jobs = plan.finetune_jobs(cfg, inits)
    with _bar(len(jobs), "finetune", state) as bar:
        for job in jobs:
            done = job.run_dir / "eval" / f"{job.cfg.task}.json"
            if _fresh(job.run_dir, done, state):
                reset_peak_memory()
                run_finetune(job.cfg)
                state.wait_for_everyone()
                _check_finished(done)
            bar.update()
    state.wait_for_everyone()
    return jobs


def _timed(clock: StageClock, stage: str, fn, *args):
    t = time.perf_counter()
    try:
        return fn(*args)
    finally:  # an interrupted stage's time counts too
        clock.add(stage, time.perf_counter() - t)


def run_race(cfg: Config, source: str | None, overrides: list[str], command: str = "") -> dict | None:
    """Run (or resume) the whole race; returns race.json's content on the main process."""
    from nlpattn.race.report import write_report
    from nlpattn.tokenizer import load_tokenizer

    plan.check_race(cfg)
    plan.check_corpus(cfg)
    plan.check_bodies(cfg, source, overrides, cfg.tokenizer.vocab_size)  # fail fast, before any run
    from nlpattn.rundir import RunDirGuard

    state, out = _state(), Path(cfg.output_dir)
    with RunDirGuard(out, is_main=state.is_main_process):  # one race per output_dir at a time
        clock = StageClock(out, state.is_main_process)
        _timed(clock, "data", stage_data, cfg, state)
        sizes = plan.check_bodies(cfg, source, overrides, load_tokenizer(out / "tokenizer").vocab_size)
        sweep = _timed(clock, "sweep", stage_sweep, cfg, source, overrides, state)
        lrs = {body: plan.pick_best(losses) for body, losses in sweep.items()}
        inits = _timed(clock, "pretrain", stage_pretrain, cfg, source, overrides, lrs, state)
        jobs = _timed(clock, "finetune", stage_finetune, cfg, inits, state)
        if not state.is_main_process:
            return None
        return write_report(cfg, command, sizes, sweep, lrs, inits, jobs, clock.seconds)


def cli_main(args: argparse.Namespace) -> int:
    """`nlpattn race --config configs/race/default.yaml [k=v ...]`."""
    import shlex

    source = args.config or "configs/race/default.yaml"
    cfg = load_config(source, args.overrides)
    command = shlex.join(["nlpattn", "race", "--config", source, *args.overrides])
    result = run_race(cfg, source, list(args.overrides), command)
    if result is not None:
        print(f"nlpattn race: wrote {Path(cfg.output_dir) / 'race.md'}, race.json and figures", flush=True)
    return 0

"""The one training loop, built on Hugging Face Accelerate (pretraining and fine-tuning).

`Trainer` is task-agnostic: it is given a model (called `model(**batch)` → `.loss`), an endless
resumable iterator of this process's micro-batches, and evaluation function(s). It owns the
optimizer (AdamW, no decay on biases/norms/embeddings), the schedule, gradient accumulation,
mixed precision, clipping, logging, atomic checkpoints, resuming, the wall-clock budget and
SIGINT/SIGTERM handling. Nothing in it syncs the device per step except where asked
(`train.nan_skip > 0`): losses are gathered at log steps.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn

from nlpattn.allocator import memory_settings
from nlpattn.config import TrainConfig
from nlpattn.errors import CheckpointError, NlpattnError, TrainingError
from nlpattn.fileio import atomic_write_json
from nlpattn.train import checkpoint as ckpt
from nlpattn.train.log import RunLogger
from nlpattn.train.runtime import (Interrupted, Signals, count_tokens, make_accelerator, peak_memory_mib,
                                   run_precision)
from nlpattn.train.schedule import budget_clock, build_optimizer, build_scheduler

EvalFn = Callable[[nn.Module, "object"], dict]  # (model, accelerator) → {"loss": ..., ...}
_STOP_CODES = {None: 0, "max_minutes": 1, "SIGINT": 2, "SIGTERM": 3}
_SIGNALS = ("SIGINT", "SIGTERM")


def projected_last_step(step: int, max_steps: int, steps_per_s: float, seconds_left: float) -> int:
    """The step a run will stop at: `max_steps`, or sooner where its time budget runs out first at
    the pace so far (the progress bar's total, so that its ETA is the budget's end)."""
    return max(step, min(max_steps, step + int(max(seconds_left, 0.0) * steps_per_s)))


class BatchSource(Protocol):
    """What the Trainer needs from data: endless micro-batches for this process, a position."""

    def __next__(self) -> dict:
        """The next micro-batch of this process (a dict of CPU tensors for `model(**batch)`)."""

    def state_dict(self) -> dict:
        """The position in the stream (JSON-ready), stored in checkpoints."""

    def load_state_dict(self, state: dict) -> None:
        """Continue from a stored position."""


@dataclass
class TrainerState:
    """Progress counters, saved in every checkpoint's trainer_state.json."""

    step: int = 0  # optimizer steps done
    tokens: int = 0  # input tokens seen, all processes
    flops: float = 0.0  # training FLOPs done (analytic), all processes; 0 if not known
    wall_s: float = 0.0  # fit() wall time of earlier sessions (resumes add up)
    setup_s: float = 0.0  # set-up before fit() (tokenizer, token cache) of this and earlier sessions
    train_s: float = 0.0  # time in training steps only (no eval / checkpoint)
    nan_skipped: int = 0
    last_eval: dict = field(default_factory=dict)


class Trainer:
    """Train `model` on `train_batches` under Accelerate; see the module docstring."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, train_batches: BatchSource,
                 run_dir: str | os.PathLike, *, eval_fn: EvalFn | None = None,
                 final_eval_fn: EvalFn | None = None, accelerator=None,
                 tokens_fn: Callable[[dict], int] = count_tokens, summary_extra: dict | None = None,
                 flops_fn: Callable[[dict], int] | None = None, setup_s: float = 0.0) -> None:
        from nlpattn.train.mfu import model_flops_fn

        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.accelerator = accelerator if accelerator is not None else make_accelerator(cfg)
        self.precision, self.precision_reason = run_precision(cfg, self.accelerator)
        self.batches, self.tokens_fn = train_batches, tokens_fn
        self.flops_fn = flops_fn if flops_fn is not None else model_flops_fn(model)  # FLOPs of a micro-batch
        self.peak: tuple[float, str] | None = None  # (peak FLOP/s of one process, its source): main process
        self.eval_fn, self.final_eval_fn = eval_fn, final_eval_fn or eval_fn
        self.summary_extra = dict(summary_extra or {})
        self.setup_s = setup_s  # this session's set-up wall time, added to the run's on fit()
        self.state = TrainerState()
        self.resumed_from: Path | None = None
        self.n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        if cfg.compile:
            model = torch.compile(model)
        optimizer = build_optimizer(model, cfg)
        self.clock = budget_clock(cfg)  # None unless train.decay_over=minutes
        scheduler = build_scheduler(optimizer, cfg, cfg.max_steps, self.clock)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.logger: RunLogger | None = None
        self._grad_norm: torch.Tensor | None = None

    # --- public ---------------------------------------------------------------------------

    def fit(self, on_start: Callable[[], None] | None = None) -> dict:
        """Train until max_steps, the time budget or a signal; returns (and writes) the summary.
        `on_start` runs on the main process once the resume point is accepted, before the first
        write of this session (the caller's config.yaml), so a refused resume changes nothing."""
        acc = self.accelerator
        self._t0 = time.perf_counter()
        self._prepare_run_dir()
        self._resume()
        self._clock_s = self.state.wall_s  # the budget clock's agreed reading (train.decay_over=minutes)
        self.state.setup_s += self.setup_s
        if on_start is not None and acc.is_main_process:
            on_start()
        if acc.is_main_process:
            self.peak = self._peak_flops()
        acc.wait_for_everyone()
        self.logger = RunLogger(self.run_dir, enabled=acc.is_main_process, progress=self.cfg.progress,
                                total_steps=self.cfg.max_steps, start_step=self.state.step)
        self.logger.write(self._start_line())
        try:
            with Signals() as signals:
                self.model.train()
                return self._finish(self._loop(signals), signals)
        finally:
            self.logger.close()

    # --- the loop -------------------------------------------------------------------------

    def _loop(self, signals: Signals) -> str:
        cfg, st = self.cfg, self.state
        self._pending: list[tuple[int, torch.Tensor, bool]] = []
        self._tokens_local, self._flops_local, self._t_log, self._t_excluded = 0, 0, time.perf_counter(), 0.0
        self._loop_start = (st.step, time.perf_counter())
        while st.step < cfg.max_steps:
            t = time.perf_counter()
            loss, skipped = self._train_step()
            st.step += 1
            self._pending.append((st.step, loss, skipped))
            self.logger.advance()
            st.train_s += time.perf_counter() - t
            reason = self._stop_reason(signals)
            last = reason is not None or st.step >= cfg.max_steps
            if st.step % cfg.log_every == 0 or last or st.step % cfg.save_every == 0:
                self._flush_train_log()
            if st.step % cfg.eval_every == 0 and not last:
                self._evaluate(final=False)
            if st.step % cfg.save_every == 0 or reason in ("SIGINT", "SIGTERM"):
                self.save_checkpoint()
            if reason is not None:
                return reason
        return "max_steps"

    def _train_step(self) -> tuple[torch.Tensor, bool]:
        """One optimizer step over `grad_accum` micro-batches; returns (mean loss, skipped)."""
        acc, total, bad, skipped = self.accelerator, None, None, False
        for _ in range(self.cfg.grad_accum):
            batch = next(self.batches)
            self._tokens_local += self.tokens_fn(batch)
            if self.flops_fn is not None:
                self._flops_local += self.flops_fn(batch)
            batch = {k: v.to(acc.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            with acc.accumulate(self.model):
                loss = self.model(**batch).loss
                acc.backward(loss)
                loss = loss.detach().float()
                total = loss if total is None else total + loss
                if self.cfg.nan_skip > 0:
                    bad = ~torch.isfinite(loss) if bad is None else bad | ~torch.isfinite(loss)
                if acc.sync_gradients:
                    skipped = self.cfg.nan_skip > 0 and self._any_process(bad)
                    self._update(skipped)
        return total / self.cfg.grad_accum, skipped

    def _update(self, skipped: bool) -> None:
        """Clip, step optimizer and schedule, zero grads; a skipped step only zeroes grads."""
        if skipped:
            self.state.nan_skipped += 1
            if self.state.nan_skipped > self.cfg.nan_skip:
                raise TrainingError(f"step {self.state.step + 1}: non-finite loss, more than "
                                    f"train.nan_skip={self.cfg.nan_skip} times; lower train.lr or check the data")
            self.logger.write(f"step {self.state.step + 1}: non-finite loss, update skipped "
                              f"({self.state.nan_skipped}/{self.cfg.nan_skip})")
        else:
            if self.cfg.clip_grad:
                self._grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
            self.optimizer.step()
        if not getattr(self.optimizer, "step_was_skipped", False):  # fp16 overflow: keep the schedule
            if self.clock is not None:
                self.clock.fraction = self._clock_s / (self.cfg.max_minutes * 60)
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _any_process(self, flag: torch.Tensor) -> bool:
        """Whether `flag` (0-d bool tensor) is true on any process (one sync)."""
        if self.accelerator.num_processes == 1:
            return bool(flag)
        return bool(self.accelerator.reduce(flag.to(torch.float32), "sum") > 0)

    def _stop_reason(self, signals: Signals) -> str | None:
        """max_minutes / SIGINT / SIGTERM, agreed by every process (with several, every
        min(log_every, 10) steps: one small all-reduce, so a signal waits at most 10 steps).
        The same reduce agrees the budget clock, so every process steps the same lr."""
        reason, elapsed = signals.received, self._elapsed()
        budget = self.cfg.max_minutes
        if reason is None and budget is not None and elapsed >= budget * 60:
            reason = "max_minutes"
        if self.accelerator.num_processes == 1:
            self._clock_s = elapsed
            return reason
        if self.state.step % min(self.cfg.log_every, 10) != 0:
            return None
        reason, self._clock_s = self._agreed(reason, elapsed)
        return reason

    def _agreed(self, reason: str | None, elapsed: float) -> tuple[str | None, float]:
        """The most urgent stop reason and the longest elapsed time of any process (one all-reduce)."""
        packed = torch.tensor([float(_STOP_CODES[reason]), elapsed], dtype=torch.float64,
                              device=self.accelerator.device)
        code, elapsed = self.accelerator.reduce(packed, "max").tolist()
        return {v: k for k, v in _STOP_CODES.items()}[int(code)], elapsed

    def _elapsed(self) -> float:
        return self.state.wall_s + time.perf_counter() - self._t0

    # --- logging and evaluation -----------------------------------------------------------

    def _flush_train_log(self) -> None:
        """Gather the losses of the steps since the last log (one collective), check, log."""
        if not self._pending:
            return
        acc, st, pending = self.accelerator, self.state, self._pending
        zero = torch.zeros((), device=acc.device)
        packed = torch.stack([loss for _, loss, _ in pending] + [zero, zero]).double()
        packed[-2], packed[-1] = float(self._tokens_local), float(self._flops_local)
        if acc.num_processes > 1:
            packed = acc.reduce(packed, "sum")
            packed[:-2] /= acc.num_processes
        values = packed.tolist()
        tokens, flops = values[-2], values[-1]
        losses = [(s, v) for (s, _, skipped), v in zip(pending, values[:-2]) if not skipped]
        for s, v in losses:
            if not math.isfinite(v):
                raise TrainingError(f"step {s}: loss is {v} (non-finite); stopping. Lower train.lr, "
                                    f"set train.clip_grad, or allow skips with train.nan_skip=N")
        now = time.perf_counter()
        seconds = max(now - self._t_log - self._t_excluded, 1e-9)
        st.tokens += int(tokens)
        st.flops += flops
        event = {"step": st.step, "epoch": self._epoch(), "split": "train",
                 "loss": sum(v for _, v in losses) / len(losses) if losses else float("nan"),
                 "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": tokens / seconds,
                 "tokens": st.tokens, **self._mfu(flops, tokens, seconds)}
        if self._grad_norm is not None:
            event["grad_norm"] = float(self._grad_norm)
        if len(losses) < len(pending):
            event["skipped_steps"] = len(pending) - len(losses)
        self.logger.log(event)
        if self.cfg.max_minutes is not None:
            self._aim_progress_bar(now)
        self._last_tps = event["tokens_per_s"]
        self._pending, self._tokens_local, self._flops_local, self._t_log, self._t_excluded = [], 0, 0, now, 0.0

    def _aim_progress_bar(self, now: float) -> None:
        """Point the bar at the step where the time budget, at this session's pace, ends the run."""
        step0, t0 = self._loop_start
        pace = (self.state.step - step0) / max(now - t0, 1e-9)
        seconds_left = self.cfg.max_minutes * 60 - self._elapsed()
        self.logger.expect_steps(projected_last_step(self.state.step, self.cfg.max_steps, pace, seconds_left))

    def _peak_flops(self) -> tuple[float, str] | None:
        """(peak FLOP/s of one process, source): `train.peak_flops`, else measured / cached."""
        from nlpattn.train.mfu import run_peak

        return run_peak(self.cfg.peak_flops, self.precision, self.accelerator.device, self.flops_fn is not None)

    def _start_line(self) -> str:
        peak = "unknown" if self.peak is None else f"{self.peak[0] / 1e9:,.1f} GFLOP/s ({self.peak[1]})"
        memory = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in memory_settings().items())
        return f"precision {self.precision} ({self.precision_reason}); peak {peak} per process; {memory}"

    def _mfu(self, flops: float, tokens: float, seconds: float) -> dict:
        """flops_per_token and mfu (achieved FLOP/s ÷ the peak of all processes); None if unknown."""
        from nlpattn.train.mfu import mfu_fields

        peak = self.peak[0] * self.accelerator.num_processes if self.peak else None
        return mfu_fields(flops if self.flops_fn is not None else None, tokens, seconds, peak)

    def _epoch(self) -> float | None:
        epoch = getattr(self.batches, "epoch", None)
        return float(epoch) if epoch is not None else None

    def _evaluate(self, final: bool) -> dict:
        """Run the (final) eval function in eval mode without gradients; log a `val` event."""
        fn = self.final_eval_fn if final else self.eval_fn
        if fn is None:
            return {}
        t = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in fn(self.model, self.accelerator).items()}
        self.model.train()
        self.state.last_eval = metrics
        self.logger.log({"step": self.state.step, "epoch": self._epoch(), "split": "val", **metrics,
                         "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": getattr(self, "_last_tps", None)})
        self._t_excluded += time.perf_counter() - t
        return metrics

    # --- checkpoints ----------------------------------------------------------------------

    def _prepare_run_dir(self) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.clean_stale(self.run_dir)
        acc.wait_for_everyone()

    def save_checkpoint(self) -> Path:
        """Write checkpoints/step-N (every process takes part; the main process writes)."""
        from accelerate.utils import gather_object

        t, acc, st = time.perf_counter(), self.accelerator, self.state
        rng = gather_object([ckpt.capture_rng()]) if acc.num_processes > 1 else [ckpt.capture_rng()]
        model_state = acc.get_state_dict(self.model) if self._fsdp() else self._base_model().state_dict()
        optimizer_state = self._optimizer_state()
        path = self.run_dir / ckpt.CHECKPOINTS / ckpt.checkpoint_name(st.step)
        if acc.is_main_process:
            saved = dataclasses.replace(st, wall_s=self._elapsed())
            ckpt.write_checkpoint(self.run_dir, st.step, model_state=model_state,
                                  optimizer_state=optimizer_state, scheduler_state=self.scheduler.state_dict(),
                                  rng_states=rng, data_state=self.batches.state_dict(),
                                  trainer_state={**dataclasses.asdict(saved), "world_size": acc.num_processes},
                                  model_meta=self._model_meta())
            ckpt.prune(self.run_dir, self.cfg.keep_last)
        acc.wait_for_everyone()
        self._t_excluded += time.perf_counter() - t
        return path

    def _model_meta(self) -> dict | None:
        """model.json for a checkpoint, when the model is one of ours (has cfg and task)."""
        from nlpattn.models import model_meta

        base = self._base_model()
        return model_meta(base) if hasattr(base, "cfg") and hasattr(base, "task") else None

    def _optimizer_state(self) -> dict:
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_optimizer_state_dict(self.model, self.optimizer.optimizer, options=options)
        return self.optimizer.state_dict()

    def _fsdp(self) -> bool:
        return str(self.accelerator.distributed_type).endswith("FSDP")

    def _base_model(self) -> nn.Module:
        """The model without DDP / torch.compile wrappers (checkpoint keys never depend on them)."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def _resume(self) -> None:
        """Continue from `train.resume` (auto | never | PATH); `never` clears old checkpoints.
        Under `auto` a checkpoint that does not load is skipped (newest first), with a message."""
        acc = self.accelerator
        if self.cfg.resume == "never":
            if acc.is_main_process:
                ckpt.prune(self.run_dir, 0)
            acc.wait_for_everyone()
            return
        candidates = ckpt.resume_candidates(self.cfg.resume, self.run_dir)
        problems = []
        for path in candidates:
            try:
                self._load_checkpoint(path)
                return
            except CheckpointError as e:
                if self.cfg.resume != "auto":
                    raise
                problems.append(str(e))
                self._say(f"skipping checkpoint {path.name}: {e}")
        if problems:
            raise CheckpointError(f"no checkpoint of {self.run_dir} can be resumed; newest: {problems[0]}")

    def _say(self, message: str) -> None:
        if self.accelerator.is_main_process:
            print(message, file=sys.stderr, flush=True)

    def _load_checkpoint(self, path: Path) -> None:
        """Load every part of checkpoint `path`; CheckpointError names the file that does not fit."""
        acc = self.accelerator
        state = ckpt.read_checkpoint(path)
        loads = (("model.safetensors", self._load_model), ("optimizer.pt", self._load_optimizer),
                 ("scheduler.json", lambda st: self.scheduler.load_state_dict(st["scheduler"])),
                 ("data.json", lambda st: self.batches.load_state_dict(st["data"])))
        for name, load in loads:
            try:
                load(state)
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
                if isinstance(e, NlpattnError):
                    raise
                raise CheckpointError(f"{path}/{name}: does not fit this run "
                                      f"({str(e).strip().splitlines()[0][:300]})") from None
        rngs = state["rng"]
        ckpt.restore_rng(rngs[acc.process_index] if len(rngs) == acc.num_processes else rngs[0])
        names = {f.name for f in dataclasses.fields(TrainerState)}
        self.state = TrainerState(**{k: v for k, v in state["trainer_state"].items() if k in names})
        self.resumed_from = path
        self._say(f"resumed from {path} (step {self.state.step})")

    def _load_model(self, state: dict) -> None:
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.model, state["model"], options=StateDictOptions(full_state_dict=True))
        else:
            self._base_model().load_state_dict(state["model"])

    def _load_optimizer(self, state: dict) -> None:
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
            for group in self.optimizer.param_groups:  # load_state_dict checks sizes of groups only
                for p in group["params"]:
                    for key, value in self.optimizer.state.get(p, {}).items():
                        if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                            raise ValueError(f"state '{key}' has shape {tuple(value.shape)}, "
                                             f"its parameter {tuple(p.shape)}")

    # --- the end --------------------------------------------------------------------------

    def _finish(self, reason: str, signals: Signals) -> dict:
        """Final eval and model, summary.json; returns the summary. A signal before or during the
        final eval stops there: checkpoint saved, no final model, exit code 128+signal."""
        acc, st = self.accelerator, self.state
        if reason not in _SIGNALS:
            reason = self._final_eval(signals) or reason
        if reason in _SIGNALS:
            if st.step % self.cfg.save_every != 0:
                self.save_checkpoint()
            self.logger.write(f"received {reason} at step {st.step}: checkpoint saved in "
                              f"{self._checkpoint_path()}; continue with train.resume=auto")
        else:
            if self.cfg.save_every and st.step % self.cfg.save_every != 0:
                self.save_checkpoint()
            self._save_final_model()
        summary = self._summary(reason)
        if acc.is_main_process:
            atomic_write_json(self.run_dir / "summary.json", summary)
        acc.wait_for_everyone()
        return summary

    def _checkpoint_path(self) -> Path:
        return self.run_dir / ckpt.CHECKPOINTS / ckpt.checkpoint_name(self.state.step)

    def _final_eval(self, signals: Signals) -> str | None:
        """The final evaluation; the signal that interrupted it (one process: at once; several:
        when the evaluation's collectives are done), or None."""
        if self.accelerator.num_processes == 1:
            try:
                with signals.interrupting():
                    self._evaluate(final=True)
            except Interrupted:
                self.model.train()
                return signals.received
            return None
        self._evaluate(final=True)
        reason, _ = self._agreed(signals.received, self._elapsed())
        return reason if reason in _SIGNALS else None

    def _save_final_model(self) -> None:
        from nlpattn.models import build_model, save_model

        acc = self.accelerator
        model = self._base_model()
        if self._fsdp():  # gather the full weights into a plain copy
            state = acc.get_state_dict(self.model)
            if acc.is_main_process:
                model = build_model(model.cfg, model.task, getattr(model, "num_labels", None))
                model.load_state_dict(state)
        if acc.is_main_process:
            save_model(model, self.run_dir)
        acc.wait_for_everyone()

    def _summary(self, reason: str) -> dict:
        st, wall = self.state, self._elapsed()
        ev = st.last_eval
        summary = {"steps": st.step, "tokens": st.tokens, "wall_s": round(wall, 3),
                   "setup_total_s": round(st.setup_s, 3),
                   "train_s": round(st.train_s, 3),
                   "tokens_per_s": st.tokens / st.train_s if st.train_s > 0 else None,
                   "final_val_loss": ev.get("loss"), "final_ppl": ev.get("ppl"),
                   "peak_mem_mib": round(peak_memory_mib(), 1), "stop_reason": reason,
                   "nan_skipped": st.nan_skipped, "params": self.n_params,
                   "processes": self.accelerator.num_processes, "precision": self.precision,
                   "precision_reason": self.precision_reason, "memory": memory_settings(),
                   **self._mfu(st.flops, st.tokens, st.train_s),
                   "peak_flops": self.peak[0] if self.peak else None,
                   "peak_flops_source": self.peak[1] if self.peak else None,
                   "resumed_from": str(self.resumed_from) if self.resumed_from else None}
        summary.update({f"final_val_{k}": v for k, v in ev.items() if k not in ("loss", "ppl")})
        summary.update(self.summary_extra)
        return summary


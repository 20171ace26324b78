"""Process-level helpers of the Trainer: the Accelerator and its precision (`auto`: bf16 where
the hardware has native bf16), signal capture, memory, token counts."""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
from typing import Iterator

import torch

from nlpattn.config import TrainConfig
from nlpattn.errors import ConfigError


CPUINFO = "/proc/cpuinfo"  # where the CPU's model name and feature flags are read (Linux)
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # native bf16 matmul instructions, best first


def _cpuinfo_field(name: str) -> str:
    """The value of the first `name : value` line of CPUINFO ('' when unreadable or absent)."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx2, avx512f, avx512_bf16, amx_bf16, ...); empty if unknown."""
    return set(_cpuinfo_field("flags").split())


def cpu_bf16_flag() -> str | None:
    """The CPU's best native bf16 matmul flag (amx_bf16, avx512_bf16), or None."""
    flags = cpu_flags()
    return next((flag for flag in BF16_CPU_FLAGS if flag in flags), None)


def cpu_model() -> str:
    """The CPU's model name (e.g. 'Intel(R) Xeon(R) Processor'), else the platform's best guess."""
    import platform

    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown CPU"


def bf16_support() -> tuple[bool, str]:
    """(native bf16?, why): a CUDA GPU with bf16, else a CPU with amx_bf16 or avx512_bf16."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"GPU {name} has native bf16"
        return False, f"GPU {name} has no native bf16"
    flag = cpu_bf16_flag()
    if flag is not None:
        return True, f"CPU has {flag}"
    return False, f"CPU has no {' or '.join(BF16_CPU_FLAGS)}"


def native_bf16() -> bool:
    """Whether this machine's device computes bf16 matmuls natively (see `bf16_support`)."""
    return bf16_support()[0]


def resolve_precision(precision: str) -> tuple[str, str]:
    """`train.precision` → (fp32 | bf16 | fp16, the reason): `auto` is bf16 where native, else fp32."""
    if precision != "auto":
        return precision, "set by train.precision"
    native, why = bf16_support()
    return ("bf16" if native else "fp32"), f"auto: {why}"


def run_precision(cfg: TrainConfig, accelerator) -> tuple[str, str]:
    """(fp32 | bf16 | fp16, why) of the run: what `accelerator` computes in, and the reason."""
    mixed = str(getattr(accelerator, "mixed_precision", "no"))
    precision = {"no": "fp32"}.get(mixed, mixed)
    wanted, reason = resolve_precision(cfg.precision)
    return precision, reason if wanted == precision else f"the Accelerator given runs {precision}"


def multi_cpu() -> bool:
    """True for several processes on a machine without GPUs (torchrun / accelerate launch): then
    Accelerate needs cpu=True to pick MULTI_CPU (gloo) rather than a lone process."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(cfg: TrainConfig):
    """An Accelerator for `train.precision` and `train.grad_accum` (scheduler stepped by us)."""
    from accelerate import Accelerator

    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}.get(resolve_precision(cfg.precision)[0])
    if precision is None:
        raise ConfigError(f"train.precision must be auto, fp32, bf16 or fp16; got '{cfg.precision}'")
    if precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.precision=fp16 needs a GPU (loss scaling); use bf16 or fp32 on CPU")
    cpu = multi_cpu()
    # one process may run several trainings (make demo, nlpattn glue, cost compare, race): each is a
    # new run, but Accelerate keeps its first mixed-precision setting per process unless reset. With
    # several processes the process group (PartialState) stays; only the per-run state is reset.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=int(os.environ.get("WORLD_SIZE", "1")) == 1)
    try:
        return Accelerator(mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum,
                           log_with=None, step_scheduler_with_optimizer=False, cpu=cpu)
    except ValueError as e:
        raise ConfigError(f"train.precision={cfg.precision}: {str(e).splitlines()[0]}") from None


def set_threads(cfg: TrainConfig, accelerator) -> None:
    """torch threads per process: `train.num_threads`, else the cores shared among local CPU processes."""
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    elif accelerator.num_processes > 1 and accelerator.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def count_tokens(batch: dict) -> int:
    """Input tokens of a batch: real (unpadded) positions of `input_ids`."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def peak_memory_mib() -> float:
    """Peak accelerator memory (CUDA) or peak resident memory of this process (CPU), MiB."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Interrupted(Exception):
    """Raised by `Signals.interrupting()` when a signal arrives during abandonable work."""


class Signals:
    """Records SIGINT/SIGTERM instead of dying, so the loop can checkpoint and stop cleanly."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict = {}
        self._raise = False

    @contextlib.contextmanager
    def interrupting(self) -> Iterator[None]:
        """Inside this block a signal (or one already received) raises `Interrupted` at once:
        for work that writes nothing and may be abandoned, such as an evaluation."""
        self._raise = True
        try:
            if self.received is not None:
                raise Interrupted(self.received)
            yield
        finally:
            self._raise = False

    def __enter__(self) -> "Signals":
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        if self._raise:
            self._raise = False
            raise Interrupted(self.received)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()

"""The run-directory guard: one process at a time, checked before anything is written.

Every command that writes a run directory (`pretrain`, `finetune`, `tokenizer train`) enters
`RunDirGuard(path, key)` first. On the main process it

1. checks that the path can be a directory we write into (not a file, not under a file,
   writable), naming the config key;
2. takes an exclusive lock (`.nlpattn.lock`, flock): a second process on the same directory is
   refused with one line naming the directory and the process that holds it;
3. removes the hidden temporaries a killed run left behind (only ours, only under the lock).

The lock file is removed on exit, so a refused command leaves the directory as it found it.
The caller then validates everything it will resume from (`check_resume_config`) and only
after that writes config.yaml and the rest: nothing in a run changes until the run is accepted.
"""
from __future__ import annotations

import errno
import fcntl
import os
import sys
from pathlib import Path

import yaml

from nlpattn.errors import CheckpointError, ConfigError, OutputError
from nlpattn.fileio import clean_stale_temps, write_failure

LOCK_NAME = ".nlpattn.lock"
# Sub-directories of a run whose hidden temporaries are cleaned when a run starts.
_TEMP_HOMES = ("", "checkpoints", "eval", "predictions", "cache")


def check_output_dir(path: str | os.PathLike, key: str = "output_dir") -> Path:
    """`path` as a directory that exists (created if needed) and is writable; OutputError naming `key`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{key}: {path} is a file, not a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{key}: {path} is under {parent}, which is a file")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".{LOCK_NAME}.{os.getpid()}.tmp"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{key}: {write_failure(path, e)}") from None
    return path


class RunDirGuard:
    """Exclusive use of a run directory by this process (main process only; others no-op)."""

    def __init__(self, path: str | os.PathLike, key: str = "output_dir", is_main: bool = True) -> None:
        self.path, self.key, self.is_main = Path(path), key, is_main
        self._fd: int | None = None

    def __enter__(self) -> "RunDirGuard":
        if self.is_main:
            existed = self._existed = self.path.exists()
            check_output_dir(self.path, self.key)
            try:
                self._lock()
            except BaseException:
                if not existed:
                    _remove_if_empty(self.path)
                raise
            for sub in _TEMP_HOMES:
                clean_stale_temps(self.path / sub)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            (self.path / LOCK_NAME).unlink(missing_ok=True)  # unlink first: see _lock's inode check
            os.close(self._fd)
            self._fd = None
            if exc and exc[0] is not None and not self._existed:
                _remove_if_empty(self.path)  # a run that failed before writing leaves no directory

    def _lock(self) -> None:
        """flock the lock file; retry if it was replaced between open and lock (a holder unlinked it)."""
        lock = self.path / LOCK_NAME
        for _ in range(10):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise CheckpointError(f"{self.key}: {self.path} is in use by another nlpattn process "
                                          f"({holder}); wait for it to finish or choose another {self.key}") from None
                raise write_failure(lock, e) from None
            if _same_file(fd, lock):
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n".encode())
                self._fd = fd
                return
            os.close(fd)
        raise CheckpointError(f"{self.key}: could not lock {lock} (it keeps changing)")


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


# --- resuming: the new settings must describe the run that made the checkpoint -----------------

# Keys a resumed run must share with the run that wrote its checkpoints: they decide what the
# weights mean (model, tokenizer, objective) and where the data stream stands (data, batch, seed).
RESUME_KEYS = ("objective", "task", "init", "model", "tokenizer", "data.train_files", "data.train_weights",
               "data.dataset", "data.block_size", "data.doc_split", "data.mlm_probability",
               "data.whole_word_mask", "data.cls_sep", "data.noise_density", "data.mean_span_length", "glue.max_length",
               "glue.truncation", "glue.head_tokens",
               "train.batch_size", "train.grad_accum", "train.seed", "train.group_by_length")
# Filled in from the tokenizer or the objective after the config is read: not the user's choice;
# or a kernel choice that computes the same function (a run may resume under another one).
_NOT_COMPARED = ("model.vocab_size", "model.pad_token_id", "model.arch", "model.attention")


def check_resume_config(new: dict, run_config: Path) -> None:
    """ConfigError naming the first key in RESUME_KEYS whose value differs from `run_config`
    (the config.yaml of the run whose checkpoint is resumed)."""
    try:
        old = yaml.safe_load(run_config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(f"{run_config}: unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(old, dict):
        raise CheckpointError(f"{run_config}: not a config mapping")
    for key in RESUME_KEYS:
        for sub, before, now in _differences(key, _get(old, key), _get(new, key)):
            raise ConfigError(f"{sub}: the checkpoints in {run_config.parent} were made with {before!r}, "
                              f"now {now!r}; resume with the same value, or use train.resume=never "
                              f"(deletes its checkpoints) or another output_dir")


_MISSING = object()


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return _MISSING
        d = d[part]
    return d


def _differences(key: str, before, now):
    """(key, before, now) for each leaf that differs; a key absent from the old config is skipped."""
    if before is _MISSING or now is _MISSING or key in _NOT_COMPARED:
        return
    if isinstance(before, dict) and isinstance(now, dict):
        for sub in now:
            yield from _differences(f"{key}.{sub}", before.get(sub, _MISSING), now[sub])
    elif before != now:
        yield key, before, now


def check_resume_from(config: dict, checkpoint: Path) -> None:
    """Before resuming `checkpoint`, compare `config` with the config.yaml of the run that wrote
    it (checkpoints live in RUN/checkpoints/step-N); nothing to compare if that file is gone."""
    run_config = Path(checkpoint).parent.parent / "config.yaml"
    if run_config.is_file():
        check_resume_config(config, run_config)

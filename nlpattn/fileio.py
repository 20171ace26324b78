"""Atomic file and directory writes: write to a temporary name, then rename.

Every temporary name starts with "." and ends with ".tmp" (or ".old" / ".deleting" for a
directory being replaced or removed), so a run killed mid-write leaves only hidden names that
`clean_stale_temps` recognises as ours. A write that fails for lack of space or permission
becomes an `OutputError` naming the final path; nothing half-written is left behind.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from nlpattn.errors import OutputError

# Hidden names made by this module (and by checkpoint pruning): safe to delete after a crash.
_NEARLY_FULL = 1 << 20  # bytes free below which a failed write is reported as a full disk
_TEMP_NAME = re.compile(r"^\..+\.(tmp|old|deleting)$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_failure(path: str | os.PathLike, e: OSError) -> OutputError:
    """An OSError met while writing `path` as a one-line OutputError (disk full named as such)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"{path}: disk full (no space left on device); nothing was written")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{path}: not writable ({e.strerror})")
    return OutputError(f"{path}: cannot write ({e.strerror or e})")


def _reraise_as_output_error(path: Path, e: Exception) -> None:
    """Raise OutputError for an OSError, or for any error met while the disk is (nearly) full."""
    if isinstance(e, OutputError):
        return
    if isinstance(e, OSError):
        raise write_failure(path, e) from None
    try:
        full = shutil.disk_usage(path.parent).free < _NEARLY_FULL
    except OSError:
        full = False
    if full:
        raise OutputError(f"{path}: disk full (no space left on device); nothing was written") from None


def ensure_parent(path: Path) -> None:
    """Create `path`'s parent directories; OutputError if one of them is a file or not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path}: cannot write it, {_file_above(path)} is a file") from None
    except NotADirectoryError:
        raise OutputError(f"{path}: cannot write it, {_file_above(path)} is a file") from None
    except OSError as e:
        raise write_failure(path.parent, e) from None


def _file_above(path: Path) -> Path:
    """The nearest ancestor of `path` that exists and is not a directory (or the parent)."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            return parent if not parent.is_dir() else path.parent
    return path.parent


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; cannot write a file there")
    ensure_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise write_failure(path, e) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give the final file the usual mode
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except Exception as e:  # noqa: BLE001 - writers (torch, safetensors) wrap ENOSPC in their own types
        _reraise_as_output_error(path, e)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary directory that becomes `path` only when the block completes.

    An existing `path` is an error unless `replace=True`: callers pass that only for a directory
    they have checked is their own (a checkpoint, a token cache, an earlier export).
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not replace:
        raise OutputError(f"{path}: already exists; refusing to replace it")
    ensure_parent(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise write_failure(path, e) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
        _swap_in(tmp, path)
    except Exception as e:  # noqa: BLE001 - writers (torch, safetensors) wrap ENOSPC in their own types
        _reraise_as_output_error(path, e)
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename `tmp` onto `path`; an old `path` is renamed aside first and removed after."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def clean_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove the hidden temporaries (`.NAME.*.tmp|old|deleting`) that killed writers left in
    `directory`; call only while holding the directory's lock. Returns what was removed."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if _TEMP_NAME.match(p.name) and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed

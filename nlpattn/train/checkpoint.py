"""Atomic checkpoints: `checkpoints/step-NNNNNNN/` appears only when complete.

A checkpoint holds everything a run needs to continue bit for bit:

    model.safetensors     weights (tied tensors stored once, aliases in the metadata)
    optimizer.pt          optimizer state (torch.save; read back with weights_only=True)
    model.json            task and ModelConfig (as in the run directory)
    scheduler.json        LR scheduler state
    rng.json              Python / NumPy / torch (CPU + CUDA) RNG states, one entry per process
    data.json             the batch source's position
    trainer_state.json    step, tokens, elapsed time, …; written last, lists every file

Files are written into a hidden temporary directory that is renamed onto the final name, so a
crash in the middle of a save leaves the previous checkpoints as they were and no half
directory among them. optimizer.pt is the one pickle-format file: it is read with
`torch.load(weights_only=True)`, which rebuilds tensors and plain containers only and refuses
any other object. Every other file is JSON or safetensors.

Reading a checkpoint checks every file's content, not only that it parses: a problem is a
`CheckpointError` naming the file, and `resume=auto` falls back to the newest checkpoint that
reads cleanly, saying which it skipped and why.
"""
from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from nlpattn.errors import CheckpointError
from nlpattn.fileio import atomic_dir, atomic_write_json, clean_stale_temps

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{7,})$")


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint after `step` optimizer steps."""
    return f"step-{step:07d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (hidden temporary directories are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if is_complete(p)]


def is_complete(path: Path) -> bool:
    """Whether `path` holds a trainer_state.json whose listed files all exist."""
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        return all((path / name).is_file() for name in state.get("files", []))
    except (OSError, ValueError):
        return False


def resume_candidates(resume: str, run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints to try, best first: `auto` → the run's complete checkpoints, newest first;
    `never` → none; else a path that must be a checkpoint or a run directory that has one."""
    if resume == "never":
        return []
    if resume == "auto":
        return list_checkpoints(run_dir)[::-1]
    path = Path(resume)
    if path.is_dir() and is_complete(path):
        return [path]
    found = list_checkpoints(path) if path.is_dir() else []
    if found:
        return [found[-1]]
    raise CheckpointError(f"train.resume: '{resume}' is not a checkpoint (no complete {STATE_FILE}) "
                          f"nor a run directory with checkpoints")


def resolve_resume(resume: str, run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: the first candidate whose files all read and check out
    (a read-only check before a run writes anything; the Trainer then loads it, and under
    `auto` skips, with a message, one whose weights or state do not fit the model)."""
    errors = []
    for path in resume_candidates(resume, run_dir):
        try:
            read_checkpoint(path)
            return path
        except CheckpointError as e:
            if resume != "auto":
                raise
            errors.append(str(e))
    if errors:
        raise CheckpointError(f"no checkpoint of {run_dir} can be resumed; newest: {errors[0]}")
    return None


def clean_stale(run_dir: str | os.PathLike) -> None:
    """Remove hidden temporary directories left by a save or prune that was killed."""
    clean_stale_temps(Path(run_dir) / CHECKPOINTS)


def prune(run_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints (renamed away first: never half visible)."""
    found = list_checkpoints(run_dir)
    for old in found[:max(0, len(found) - keep_last)]:
        hidden = old.with_name(f".{old.name}.deleting")
        os.replace(old, hidden)
        shutil.rmtree(hidden, ignore_errors=True)


# --- model weights -------------------------------------------------------------------------

def dedupe_tensors(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tied tensors share storage: keep the first name of each, return {alias: kept name}."""
    seen: dict[tuple, str] = {}
    out, aliases = {}, {}
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        out[name] = t.detach().contiguous().cpu()
    return out, aliases


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state dict as safetensors (aliases of tied tensors kept in the metadata)."""
    from safetensors.torch import save_file

    tensors, aliases = dedupe_tensors(state)
    save_file(tensors, str(path), metadata={"aliases": json.dumps(aliases)})


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict written by `save_weights` (safetensors: no pickle)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(f"{path}: unreadable weights ({str(e).splitlines()[0]})") from None
    for alias, name in aliases.items():
        state[alias] = state[name]
    return state


# --- RNG states ----------------------------------------------------------------------------

def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def capture_rng() -> dict:
    """This process's Python, NumPy and torch RNG states as JSON-ready values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": _b64(torch.get_rng_state())}
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict) -> None:
    """Set this process's RNGs from `capture_rng()` output."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# --- whole checkpoints ---------------------------------------------------------------------

def write_checkpoint(run_dir: str | os.PathLike, step: int, *, model_state: dict, optimizer_state: dict,
                     scheduler_state: dict, rng_states: list[dict], data_state: dict,
                     trainer_state: dict, model_meta: dict | None = None) -> Path:
    """Write one checkpoint atomically (call on the main process only); returns its path.
    `model_meta` (model.json) makes the checkpoint loadable on its own, e.g. as a fine-tuning init."""
    final = Path(run_dir) / CHECKPOINTS / checkpoint_name(step)
    files = ["model.safetensors", "optimizer.pt", "scheduler.json", "rng.json", "data.json"]
    with atomic_dir(final, replace=True) as tmp:  # our own step-N (a re-save of the same step)
        if model_meta is not None:
            atomic_write_json(tmp / "model.json", model_meta)
            files.append("model.json")
        save_weights(model_state, tmp / "model.safetensors")
        torch.save(optimizer_state, tmp / "optimizer.pt")
        atomic_write_json(tmp / "scheduler.json", scheduler_state)
        atomic_write_json(tmp / "rng.json", rng_states)
        atomic_write_json(tmp / "data.json", data_state)
        atomic_write_json(tmp / STATE_FILE, {**trainer_state, "step": step, "files": files})
    return final


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Every part of a checkpoint (weights via safetensors, optimizer via weights_only=True),
    each checked for the content the Trainer needs; CheckpointError names the bad file."""
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path}: not a complete checkpoint (no valid {STATE_FILE})")
    out = {name: _read_json(path / f"{name}.json") for name in ("scheduler", "rng", "data", "trainer_state")}
    for name, check in _CHECKS.items():
        problem = check(out[name])
        if problem:
            raise CheckpointError(f"{path / (name + '.json')}: {problem}")
    out["optimizer"] = _read_optimizer(path / "optimizer.pt")
    return {"model": load_weights(path / "model.safetensors"), **out}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None


def _read_optimizer(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types
        raise CheckpointError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list) \
            or not isinstance(state.get("state"), dict):
        raise CheckpointError(f"{path}: not an optimizer state (needs 'state' and 'param_groups')")
    return state


def _check_scheduler(state) -> str | None:
    if not isinstance(state, dict):
        return "must be a JSON object"
    if not _is_int(state.get("last_epoch")) or state["last_epoch"] < -1:
        return f"'last_epoch' must be an integer >= -1, got {state.get('last_epoch')!r}"
    for key in ("base_lrs", "_last_lr"):
        value = state.get(key)
        if not isinstance(value, list) or not value or not all(_is_number(v) for v in value):
            return f"'{key}' must be a non-empty list of numbers, got {value!r}"
    return None


def _check_rng(states) -> str | None:
    if not isinstance(states, list) or not states:
        return "must be a non-empty list of per-process RNG states"
    saved = capture_rng()
    try:
        for i, state in enumerate(states):
            if not isinstance(state, dict):
                return f"entry {i} must be a JSON object"
            try:
                restore_rng(state)  # the one complete check of its content
            except Exception as e:  # noqa: BLE001 - random/numpy/torch raise many types
                return f"entry {i} is not an RNG state ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r})"
    finally:
        restore_rng(saved)
    return None


def _check_data(state) -> str | None:
    if not isinstance(state, dict) or not state:
        return "must be a JSON object with the data position"
    for key, value in state.items():
        if not _is_int(value) or value < 0:
            return f"'{key}' must be a non-negative integer, got {value!r}"
    return None


def _check_trainer_state(state) -> str | None:
    if not isinstance(state, dict):
        return "must be a JSON object"
    for key in ("step", "tokens"):
        if not _is_int(state.get(key, 0)) or state.get(key, 0) < 0:
            return f"'{key}' must be a non-negative integer, got {state.get(key)!r}"
    for key in ("wall_s", "train_s"):
        if not _is_number(state.get(key, 0.0)) or state.get(key, 0.0) < 0:
            return f"'{key}' must be a non-negative number, got {state.get(key)!r}"
    return None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


_CHECKS = {"scheduler": _check_scheduler, "rng": _check_rng, "data": _check_data,
           "trainer_state": _check_trainer_state}

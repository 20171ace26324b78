"""Atomic checkpoints: `checkpoints/step-NNNNNNN/` appears only when complete.

A checkpoint holds everything a run needs to continue bit for bit:

    model.safetensors     weights (tied tensors stored once, aliases in the metadata)
    optimizer.pt          optimizer state (torch.save; read back with weights_only=True)
    scheduler.json        LR scheduler state
    rng.json              Python / NumPy / torch (CPU + CUDA) RNG states, one entry per process
    data.json             the batch source's position
    trainer_state.json    step, tokens, elapsed time, …; written last, lists every file

Files are written into a hidden temporary directory that is renamed onto the final name, so a
crash in the middle of a save leaves the previous checkpoints as they were and no half
directory among them. Nothing is ever unpickled from a file.
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
from nlpattn.fileio import atomic_dir, atomic_write_json

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


def resolve_resume(resume: str, run_dir: str | os.PathLike) -> Path | None:
    """`auto` → newest complete checkpoint of the run (or None); `never` → None; else a path that
    must be a checkpoint or a run directory that has one (CheckpointError otherwise)."""
    if resume == "never":
        return None
    if resume == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if path.is_dir() and is_complete(path):
        return path
    found = list_checkpoints(path) if path.is_dir() else []
    if found:
        return found[-1]
    raise CheckpointError(f"train.resume: '{resume}' is not a checkpoint (no complete {STATE_FILE}) "
                          f"nor a run directory with checkpoints")


def clean_stale(run_dir: str | os.PathLike) -> None:
    """Remove hidden temporary directories left by a save that was killed."""
    root = Path(run_dir) / CHECKPOINTS
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


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
                     trainer_state: dict) -> Path:
    """Write one checkpoint atomically (call on the main process only); returns its path."""
    final = Path(run_dir) / CHECKPOINTS / checkpoint_name(step)
    files = ["model.safetensors", "optimizer.pt", "scheduler.json", "rng.json", "data.json"]
    with atomic_dir(final) as tmp:
        save_weights(model_state, tmp / "model.safetensors")
        torch.save(optimizer_state, tmp / "optimizer.pt")
        atomic_write_json(tmp / "scheduler.json", scheduler_state)
        atomic_write_json(tmp / "rng.json", rng_states)
        atomic_write_json(tmp / "data.json", data_state)
        atomic_write_json(tmp / STATE_FILE, {**trainer_state, "step": step, "files": files})
    return final


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Every part of a checkpoint (weights via safetensors, optimizer via weights_only=True)."""
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path}: not a complete checkpoint (no valid {STATE_FILE})")
    try:
        optimizer = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        out = {name: json.loads((path / f"{name}.json").read_text(encoding="utf-8"))
               for name in ("scheduler", "rng", "data", "trainer_state")}
    except Exception as e:  # noqa: BLE001 - torch.load/json raise many types
        raise CheckpointError(f"{path}: unreadable checkpoint ({str(e).splitlines()[0]})") from None
    return {"model": load_weights(path / "model.safetensors"), "optimizer": optimizer, **out}

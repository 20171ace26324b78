"""Statistics of attention weights, as pure functions of tensors (no model, no files).

Every function takes weights `w` of shape (..., T, S) whose rows (queries i) sum to 1 over
the keys j, and reduces the last two axes: one number per head (or per layer, per batch...).

- entropy: how spread out a query's attention is, averaged over queries (nats);
- mean distance: Σ_j w_ij·|i−j|, averaged over queries (how far a head looks, in tokens);
- share: Σ_{j∈set} w_ij averaged over queries, e.g. on [CLS]/[SEP]/punctuation
  (Clark et al. 2019, "What does BERT look at?", §3);
- rollout: attention flow through the layers (Abnar & Zuidema 2020, "Quantifying attention
  flow in Transformers", §3): average the heads, add the identity for the residual path,
  renormalise the rows, multiply the layers' matrices together.
"""
from __future__ import annotations

import unicodedata
from typing import Sequence

import torch


def entropy(w: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over query rows of −Σ_j w_ij·ln w_ij: (..., T, S) → (...) in nats."""
    row = -(w * torch.log(w.clamp_min(eps))).sum(-1)  # (..., T)
    return row.mean(-1)


def mean_distance(w: torch.Tensor) -> torch.Tensor:
    """Mean over query rows of Σ_j w_ij·|i−j| (self-attention, T == S): (..., T, T) → (...)."""
    t, s = w.shape[-2], w.shape[-1]
    if t != s:
        raise ValueError(f"mean_distance needs square (self-)attention, got T={t}, S={s}")
    pos = torch.arange(t, dtype=w.dtype, device=w.device)
    dist = (pos[:, None] - pos[None, :]).abs()  # (T, T): |i − j|
    return (w * dist).sum(-1).mean(-1)


def share(w: torch.Tensor, keys: torch.Tensor | Sequence[bool]) -> torch.Tensor:
    """Mean over query rows of the weight on the keys where `keys` (S,) is true: (..., T, S) → (...)."""
    mask = torch.as_tensor(keys, dtype=torch.bool, device=w.device)
    if mask.shape != w.shape[-1:]:
        raise ValueError(f"share: key mask of shape {tuple(mask.shape)} for {w.shape[-1]} keys")
    return (w * mask.to(w.dtype)).sum(-1).mean(-1)


def rollout(layers: Sequence[torch.Tensor], residual: bool = True) -> torch.Tensor:
    """Attention rollout over layers, each (H, T, T) (first layer first) → (T, T).

    Row i of the result says how much input token j flows into position i at the top."""
    if not layers:
        raise ValueError("rollout needs at least one layer")
    t = layers[0].shape[-1]
    eye = torch.eye(t, dtype=layers[0].dtype, device=layers[0].device)
    out = eye
    for heads in layers:
        a = heads.mean(0)  # (T, T): heads averaged
        if residual:
            a = a + eye
        a = a / a.sum(-1, keepdim=True)
        out = a @ out  # later layers act on the result of earlier ones
    return out


def is_punctuation(token: str) -> bool:
    """True for tokens made only of punctuation (word-piece markers such as ##, Ġ, ▁ ignored)."""
    text = token.strip().removeprefix("##").lstrip("Ġ▁").strip()
    return bool(text) and all(unicodedata.category(c).startswith("P") for c in text)


def head_stats(layers: Sequence[torch.Tensor], groups: dict[str, Sequence[bool]],
               self_attention: bool = True) -> list[dict]:
    """One row per (layer, head) of (H, T, S) weights: entropy, distance (self-attention only)
    and the share of attention on each named key group (e.g. {"cls": [...], "punct": [...]})."""
    rows = []
    for layer, w in enumerate(layers):
        ent = entropy(w)
        dist = mean_distance(w) if self_attention else None
        shares = {name: share(w, mask) for name, mask in groups.items()}
        for h in range(w.shape[0]):
            row = {"layer": layer, "head": h, "entropy": float(ent[h])}
            if dist is not None:
                row["distance"] = float(dist[h])
            row.update({name: float(v[h]) for name, v in shares.items()})
            rows.append(row)
    return rows

"""Sequence bodies: each maps embeddings (B, T, d) → hidden states (B, T, d).

A body declares what it can do through class attributes, and the rest of the code only ever
branches on those: `causal_ok` (can run without seeing the future), `bidirectional_ok` (can
use both directions), `returns_attention` (can return attention weights), `returns_gates`
(can return per-layer gate maps: channel and spatial attention), `supports_cache` (can decode
incrementally with a KV cache), `left_padding_ok` (left-padded rows give the same outputs at
real tokens as unpadded rows, given per-row `position_ids`: batched generation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from nlpattn.config import ModelConfig


@dataclass
class LayerGates:
    """The multiplicative gates one layer applied (None = that gate is off), for inspection."""

    channel: torch.Tensor | None = None  # (B, T, d) squeeze-and-excitation weights per channel
    spatial: torch.Tensor | None = None  # (B, T) spatial gate per position


@dataclass
class BodyOutput:
    """What a body returns: hidden states, optional per-layer attentions, optional KV cache."""

    hidden: torch.Tensor  # (B, T, d)
    attentions: list[torch.Tensor] = field(default_factory=list)  # each (B, H, T, S)
    cache: object | None = None
    cross_attentions: list[torch.Tensor] = field(default_factory=list)  # each (B, H, T, S_enc)
    gates: list[LayerGates] = field(default_factory=list)  # one per layer if returns_gates


class Body(nn.Module):
    """Base class of every body. Subclasses implement `forward` with this signature."""

    causal_ok: bool = False
    bidirectional_ok: bool = False
    returns_attention: bool = False
    returns_gates: bool = False  # output_attentions=True also fills BodyOutput.gates
    supports_cache: bool = False  # incremental decoding with a KV cache
    left_padding_ok: bool = False  # left-padded rows (with position_ids) equal unpadded rows
    pooling: str = "cls"  # how a classifier summarises a bidirectional sequence: cls | mean

    def __init__(self, cfg: ModelConfig, causal: bool):
        super().__init__()
        self.cfg = cfg
        self.causal = causal

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                output_attentions: bool = False, cache: object | None = None,
                position_offset: int = 0, position_ids: torch.Tensor | None = None) -> BodyOutput:
        """x: (B, T, d); padding_mask: (B, T) bool, True = real token (None = no padding);
        position_ids: (B, T) positions of left-padded rows (None → position_offset + t)."""
        raise NotImplementedError


def sequence_direction(cfg: ModelConfig, causal: bool) -> bool:
    """Whether a recurrent/convolutional body reads both directions (cfg.bidirectional; None →
    not causal). A causal body that asks for both directions is a ConfigError."""
    from nlpattn.errors import ConfigError

    if cfg.bidirectional is None:
        return not causal
    if cfg.bidirectional and causal:
        raise ConfigError(f"model.bidirectional: true is impossible for a causal {cfg.body} body "
                          f"(decoder / clm); use false or leave it unset")
    return cfg.bidirectional


def check_no_memory_or_cache(body: Body, memory: torch.Tensor | None, cache: object | None) -> None:
    """Reject the Transformer-only inputs (cross-attention memory, KV cache) with one clear line."""
    from nlpattn.errors import ConfigError

    if memory is not None:
        raise ConfigError(f"model.body: '{body.cfg.body}' has no cross-attention (memory given)")
    if cache is not None:
        raise ConfigError(f"model.body: '{body.cfg.body}' has no KV cache; "
                          f"recompute the whole prefix instead (generate with use_cache=False)")


BODY_REGISTRY: dict[str, Callable[[], type[Body]]] = {}


def register_body(name: str):
    """Class decorator adding a body to the registry under `name`."""

    def wrap(cls: type[Body]) -> type[Body]:
        BODY_REGISTRY[name] = lambda: cls
        return cls

    return wrap


def _import_bodies() -> None:
    # Imported lazily so that `nlpattn.bodies` does not pull in every body eagerly.
    import importlib

    for module in ("transformer", "rnn", "cnn"):
        try:
            importlib.import_module(f"nlpattn.bodies.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"nlpattn.bodies.{module}":
                raise


def build_body(cfg: ModelConfig, causal: bool, cross_attention: bool = False) -> Body:
    """Build the body named by `cfg.body`; `causal` → no future information may leak."""
    from nlpattn.errors import ConfigError

    _import_bodies()
    key = "lstm" if cfg.body in ("lstm", "gru") else cfg.body
    if key not in BODY_REGISTRY:
        raise ConfigError(f"model.body: '{cfg.body}' is not available (have: {sorted(BODY_REGISTRY)})")
    cls = BODY_REGISTRY[key]()
    if causal and not cls.causal_ok:
        raise ConfigError(f"model.body: '{cfg.body}' cannot run causally (needed by the decoder)")
    if cross_attention:
        return cls(cfg, causal=causal, cross_attention=True)
    return cls(cfg, causal=causal)

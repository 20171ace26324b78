"""Building blocks shared by the models: activations, position encodings, embeddings,
the position-wise feed-forward network and the Transformer block (Vaswani et al. 2017, §3)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nlpattn.attention import KVCache, MultiHeadAttention, RotaryEmbedding
from nlpattn.config import ModelConfig


def activation_fn(name: str):
    """The activation named in the config: gelu (exact), gelu_tanh (GPT-2's), relu."""
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"unknown activation '{name}'")


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...) — §3.5. Shape (L, d)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : d_model // 2]
    return table


def uses_embedding_norm(cfg: ModelConfig) -> bool:
    """Post-LN models (BERT) normalise the embeddings; pre-LN models normalise at the end."""
    return cfg.embedding_norm if cfg.embedding_norm is not None else cfg.norm == "post"


def uses_final_norm(cfg: ModelConfig) -> bool:
    """Pre-LN models (GPT-2) need a LayerNorm after the last block."""
    return cfg.final_norm if cfg.final_norm is not None else cfg.norm == "pre"


class Embeddings(nn.Module):
    """Token (+ absolute position) (+ segment) embeddings, optional LayerNorm, dropout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.token = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=None)
        self.position = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.position == "learned" else None
        if cfg.position == "sinusoidal":
            self.register_buffer("sinusoid", sinusoidal_table(cfg.max_len, cfg.d_model), persistent=False)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.d_model) if cfg.type_vocab_size else None
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if uses_embedding_norm(cfg) else None
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                offset: int = 0, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids: (B, T) → (B, T, d); positions start at `offset` (KV-cached decoding) or
        are given per row by position_ids (B, T) (left-padded batches)."""
        x = self.token(input_ids)
        T = input_ids.shape[1]
        if position_ids is not None and self.cfg.position in ("learned", "sinusoidal"):
            table = self.position.weight if self.position is not None else self.sinusoid.to(x.dtype)
            x = x + table[position_ids]  # (B, T, d)
        elif self.position is not None:
            x = x + self.position.weight[offset:offset + T]
        elif self.cfg.position == "sinusoidal":
            x = x + self.sinusoid[offset:offset + T].to(x.dtype)
        if self.token_type is not None:
            x = x + (self.token_type(token_type_ids) if token_type_ids is not None
                     else self.token_type.weight[0])
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


class FeedForward(nn.Module):
    """FFN(x) = act(x W1 + b1) W2 + b2 — the position-wise feed-forward network (§3.3)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)
        self.act = activation_fn(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) → (B, T, d)."""
        return self.fc_out(self.act(self.fc_in(x)))


class TransformerBlock(nn.Module):
    """One layer: self-attention, optional cross-attention, feed-forward; each a residual
    sublayer with LayerNorm before it (pre-LN) or after the residual sum (post-LN, §3.1)."""

    def __init__(self, cfg: ModelConfig, *, cross: bool = False, rope: RotaryEmbedding | None = None):
        super().__init__()
        attn_drop = cfg.attention_dropout if cfg.attention_dropout is not None else cfg.dropout
        common = dict(dropout=attn_drop, bias=cfg.bias, use_sdpa=cfg.attention != "math",
                      auto=cfg.attention == "auto")
        self.pre_norm = cfg.norm == "pre"
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, rope=rope,
                                            window=cfg.attention_window, **common)
        self.norm_self = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cross=True, **common) if cross else None
        self.norm_cross = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cross else None
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias)
        self.norm_ffn = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def _sublayer(self, x: torch.Tensor, norm: nn.LayerNorm, fn) -> tuple[torch.Tensor, object]:
        """Residual connection around `fn`, with the LayerNorm where cfg.norm says."""
        out = fn(norm(x) if self.pre_norm else x)
        y, extra = out if isinstance(out, tuple) else (out, None)
        x = x + self.dropout(y)
        return (x if self.pre_norm else norm(x)), extra

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, *, causal: bool,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                output_attentions: bool = False, cache: KVCache | None = None, layer: int = 0,
                offset: int = 0, positions: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x: (B, T, d) → (B, T, d), self-attention weights, cross-attention weights."""
        x, self_w = self._sublayer(x, self.norm_self, lambda h: self.self_attn(
            h, key_padding_mask=padding_mask, causal=causal, output_attentions=output_attentions,
            cache=cache, layer=layer, offset=offset, positions=positions))
        cross_w = None
        if self.cross_attn is not None:
            x, cross_w = self._sublayer(x, self.norm_cross, lambda h: self.cross_attn(
                h, memory=memory, key_padding_mask=memory_mask,
                output_attentions=output_attentions, cache=cache, layer=layer))
        x, _ = self._sublayer(x, self.norm_ffn, self.ffn)
        return x, self_w, cross_w

"""Multi-head attention (Vaswani et al. 2017, §3.2): self- and cross-attention, masks, KV cache.

Two interchangeable paths compute the same function:
- the fast path calls `torch.nn.functional.scaled_dot_product_attention` (fused kernels);
- the math path spells out softmax(QKᵀ/√d_k)V and can return the attention weights.
The math path is used whenever weights are requested, so `output_attentions=True` always
works, at the math path's cost.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=1)
def _cpu_has_native_bf16() -> bool:
    from nlpattn.train.runtime import cpu_bf16_flag

    return cpu_bf16_flag() is not None


FP32_MATH_MAX_LEN = 128  # fp32: the math path measured faster at 128 positions, slower at 512


def math_is_faster(x: torch.Tensor, dropout: float = 0.0, key_len: int = 0) -> bool:
    """`model.attention=auto`'s rule for q `x` (B, H, T, hd) and key_len keys: math where it trained faster.

    bf16 training on a CPU with native bf16, where PyTorch's CPU flash-attention backward in bf16 is
    slower than bf16 matmuls + softmax: 1.36× CLM, 1.61× MLM on AMX, 1.16× and 1.22× on AVX-512 with
    avx512_bf16 (train_throughput.py, dropout 0). fp32 training on a CPU without native bf16 (where
    `auto` picks fp32) at up to FP32_MATH_MAX_LEN positions and no attention dropout: 1.01-1.10× on
    AVX-512 without bf16 (attention_path.py), 1.01× on AVX2 (train_throughput.py); at 512 positions
    0.84-0.95×, with dropout 0.1 0.97-1.00×. Everything else keeps SDPA (measured no faster, or not measured).
    """
    if x.device.type != "cpu" or not torch.is_grad_enabled():
        return False
    bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                         and torch.get_autocast_dtype("cpu") == torch.bfloat16)
    if bf16:
        return _cpu_has_native_bf16()
    return (x.dtype == torch.float32 and not _cpu_has_native_bf16() and dropout == 0.0
            and max(x.shape[-2], key_len) <= FP32_MATH_MAX_LEN)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    """x·cos + rotate_half(x)·sin·sign, rotate_half(x) = [−x₂, x₁] (x (..., hd) split in halves).

    One product and two in-place multiply-adds on the halves: no `cat`, no negated copy.
    sign −1 rotates by −θ, the transpose: that is the backward pass.
    """
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-sign)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:], value=sign)
    return out


class _Rotate(torch.autograd.Function):
    """RoPE's rotation with a hand-written backward (the inverse rotation of the gradient).

    Autograd's graph of the textbook form (chunk, neg, cat, two products, a sum) runs about twice
    the element-wise passes backward (the products, the cat's split, the negation, the sum of the
    two paths); this backward runs the forward's three.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, -1.0), None, None


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021): rotates q/k pairs by position-dependent angles.

    Pairs are (i, i + hd/2), the convention of GPT-NeoX and Llama (`rotate_half`).
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (L, hd/2)
        angles = torch.cat([angles, angles], dim=-1)  # (L, hd)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate x: (B, H, T, hd) whose first position is `offset` (or at `positions` (B, T))."""
        T = x.shape[-2]
        if positions is not None:  # per-row positions (left-padded batches)
            cos, sin = self.cos[positions][:, None].to(x.dtype), self.sin[positions][:, None].to(x.dtype)
        else:
            cos = self.cos[offset:offset + T].to(x.dtype)
            sin = self.sin[offset:offset + T].to(x.dtype)
        if x.requires_grad and torch.is_grad_enabled():
            return _Rotate.apply(x, cos, sin)
        return _rotate(x, cos, sin, 1.0)


class KVCache:
    """Keys and values of past positions, one entry per layer, for incremental decoding."""

    def __init__(self) -> None:
        self.self_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.cross_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        """Number of cached positions (0 before the first step)."""
        if not self.self_kv:
            return 0
        return next(iter(self.self_kv.values()))[0].shape[-2]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's k, v (B, H, T, hd) for `layer`; return all keys and values so far."""
        if layer in self.self_kv:
            past_k, past_v = self.self_kv[layer]
            k, v = torch.cat([past_k, k], dim=-2), torch.cat([past_v, v], dim=-2)
        self.self_kv[layer] = (k, v)
        return k, v

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search): every cached tensor becomes tensor[index]."""
        for store in (self.self_kv, self.cross_kv):
            for layer, (k, v) in store.items():
                store[layer] = (k.index_select(0, index), v.index_select(0, index))


def build_attention_mask(query_len: int, key_len: int, *, key_padding_mask: torch.Tensor | None,
                         causal: bool, window: int | None = None, offset: int = 0,
                         device: torch.device | None = None) -> torch.Tensor | None:
    """Boolean mask (B or 1, 1, T, S), True = may attend; None when nothing is masked.

    Query i sits at absolute position offset + i; key j at position j. A row with no allowed
    key (e.g. a left-padded position under a causal mask) is opened fully, so softmax never
    sees a row of -inf; such rows belong to padding and their output is ignored.
    """
    mask = None
    if causal or window is not None:
        q_pos = torch.arange(offset, offset + query_len, device=device)[:, None]
        k_pos = torch.arange(key_len, device=device)[None, :]
        allowed = torch.ones(query_len, key_len, dtype=torch.bool, device=device)
        if causal:
            allowed &= k_pos <= q_pos
        if window is not None:
            allowed &= (q_pos - k_pos).abs() <= window
        mask = allowed[None, None]  # (1, 1, T, S)
    if key_padding_mask is not None:
        pad = key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        mask = pad if mask is None else mask & pad
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(QW_i^Q, KW_i^K, VW_i^V).

    Self-attention uses one fused QKV projection; cross-attention projects the queries from
    `x` and the keys/values from `memory` (the encoder output).
    """

    def __init__(self, d_model: int, n_heads: int, *, dropout: float = 0.0, bias: bool = True,
                 cross: bool = False, use_sdpa: bool = True, rope: RotaryEmbedding | None = None,
                 window: int | None = None, auto: bool = False):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.cross, self.use_sdpa, self.rope, self.window = cross, use_sdpa, rope, window
        self.auto = auto  # model.attention=auto: pick the path per call (math_is_faster)
        self.dropout = dropout
        if cross:
            self.q_proj = nn.Linear(d_model, d_model, bias=bias)
            self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=bias)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

    def _project(self, x: torch.Tensor, memory: torch.Tensor | None, cache: KVCache | None,
                 layer: int, offset: int, positions: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.cross:
            q = self._split_heads(self.q_proj(x))
            if cache is not None and layer in cache.cross_kv:
                k, v = cache.cross_kv[layer]
            else:
                k, v = (self._split_heads(t) for t in self.kv_proj(memory).chunk(2, dim=-1))
                if cache is not None:
                    cache.cross_kv[layer] = (k, v)
            return q, k, v
        q, k, v = (self._split_heads(t) for t in self.qkv_proj(x).chunk(3, dim=-1))
        if self.rope is not None:
            q, k = self.rope(q, offset, positions), self.rope(k, offset, positions)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        return q, k, v

    def forward(self, x: torch.Tensor, *, memory: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, causal: bool = False,
                output_attentions: bool = False, cache: KVCache | None = None, layer: int = 0,
                offset: int = 0, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, d); memory: (B, S, d) for cross-attention; key_padding_mask: (B, S), True = real;
        positions: (B, T) RoPE positions of left-padded rows (None → offset + t).

        Returns the output (B, T, d) and, if requested, the weights (B, H, T, S).
        """
        if self.cross and memory is None:
            raise ValueError("cross-attention needs `memory` (the encoder output)")
        q, k, v = self._project(x, memory, cache, layer, offset, positions)  # (B, H, T|S, hd)
        T, S = q.shape[-2], k.shape[-2]
        causal = causal and not self.cross
        mask = build_attention_mask(T, S, key_padding_mask=key_padding_mask, causal=causal,
                                    window=None if self.cross else self.window, offset=offset,
                                    device=x.device)
        dropout = self.dropout if self.training else 0.0
        if self.use_sdpa and not output_attentions and not (self.auto and math_is_faster(q, dropout, S)):
            # A plain causal square mask lets SDPA pick its fastest (flash) kernel.
            if causal and key_padding_mask is None and self.window is None and T == S:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            weights = None
        else:
            y, weights = self._math_attention(q, k, v, mask, dropout)
        y = y.transpose(1, 2).reshape(x.shape[0], T, self.d_model)  # (B, T, d)
        return self.out_proj(y), (weights if output_attentions else None)

    def _math_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: torch.Tensor | None, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        # Scaling q (T·hd values) is cheaper than scaling the scores (T·S) when S > hd.
        scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)  # (B, H, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        # No float32 upcast: PyTorch's softmax accumulates bf16/fp16 in float32 and rounds once,
        # which is what softmax(scores.float()).to(dtype) computes, without two copies of (B, H, T, S).
        weights = torch.softmax(scores, dim=-1)
        y = F.dropout(weights, p=dropout, training=dropout > 0) @ v  # (B, H, T, hd)
        return y, weights

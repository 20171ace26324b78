"""The layers Table 1 measures, each a module (B, n, d) → (B, n, d) built from the same pieces
the bodies train with: `MultiHeadAttention` (SDPA or math path, optional window), `nn.LSTM`
/ `nn.GRU` (one layer, one direction), the CNN body's `ConvUnit` (conv d → 2d + GLU, then its
optional `SqueezeExcite` and `SpatialGate`) and the Transformer's `TransformerBlock`. `BandedAttention` is the one addition: restricted
self-attention that computes only the r (+1) scores per query it keeps, for comparison with
the mask-based window of `MultiHeadAttention`, which still computes all n² scores.
"""
from __future__ import annotations

import contextlib
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from nlpattn.attention import MultiHeadAttention
from nlpattn.bodies.cnn import ConvUnit, SpatialGate, SqueezeExcite
from nlpattn.config import ModelConfig
from nlpattn.cost.analytic import RNN_GATES, LayerSpec, stack_dilations, window_keys
from nlpattn.layers import TransformerBlock


class AttentionLayer(nn.Module):
    """The self-attention sublayer alone: MultiHead(x, x, x) with projections (§3.2)."""

    def __init__(self, spec: LayerSpec, use_sdpa: bool = True, window: int | None = None):
        super().__init__()
        self.causal = spec.causal
        self.attn = MultiHeadAttention(spec.d_model, spec.n_heads, use_sdpa=use_sdpa, window=window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, d) → (B, n, d)."""
        return self.attn(x, causal=self.causal)[0]


class BandedAttention(AttentionLayer):
    """Restricted self-attention over a band of keys: O(n·r·d) work and memory, not O(n²·d)."""

    def __init__(self, spec: LayerSpec):
        super().__init__(spec, use_sdpa=False, window=spec.window)
        self.window, self.width = spec.window, window_keys(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, d) → (B, n, d); equals MultiHeadAttention(window=r) on the same weights."""
        attn, (B, n, d), r = self.attn, x.shape, self.window
        q, k, v = (attn._split_heads(t) for t in attn.qkv_proj(x).chunk(3, dim=-1))  # (B, H, n, hd)
        right = 0 if self.causal else r
        k = F.pad(k, (0, 0, r, right)).unfold(2, self.width, 1)  # (B, H, n, hd, w)
        v = F.pad(v, (0, 0, r, right)).unfold(2, self.width, 1)  # (B, H, n, hd, w)
        scores = torch.einsum("bhnc,bhncw->bhnw", q, k) / math.sqrt(attn.head_dim)  # (B, H, n, w)
        key_pos = torch.arange(n, device=x.device)[:, None] - r + torch.arange(self.width, device=x.device)
        scores = scores.masked_fill(((key_pos < 0) | (key_pos >= n))[None, None], float("-inf"))
        y = torch.einsum("bhnw,bhncw->bhnc", scores.softmax(dim=-1), v)  # (B, H, n, hd)
        return attn.out_proj(y.transpose(1, 2).reshape(B, n, d))


class RecurrentLayer(nn.Module):
    """One unidirectional LSTM or GRU layer with d units."""

    def __init__(self, spec: LayerSpec):
        super().__init__()
        cls = nn.LSTM if spec.kind == "lstm" else nn.GRU
        self.rnn = cls(spec.d_model, spec.d_model, batch_first=True)

    def forward(self, x: torch.Tensor, state: object | None = None) -> torch.Tensor:
        """(B, n, d) → (B, n, d)."""
        return self.rnn(x, state)[0]


class BlockLayer(nn.Module):
    """A whole pre-LN Transformer block: attention + feed-forward sublayers with residuals."""

    def __init__(self, spec: LayerSpec):
        super().__init__()
        cfg = ModelConfig(d_model=spec.d_model, n_heads=spec.n_heads, d_ff=spec.ff, dropout=0.0)
        self.block, self.causal = TransformerBlock(cfg), spec.causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, d) → (B, n, d)."""
        return self.block(x, None, causal=self.causal)[0]


class ConvLayer(nn.Module):
    """The CNN body's convolution unit (d → 2d channels, GLU) with a given dilation, then
    squeeze-and-excitation and the spatial gate when spec.se / spec.spatial."""

    def __init__(self, spec: LayerSpec, dilation: int):
        super().__init__()
        self.unit = ConvUnit(spec.d_model, spec.kernel_size, dilation, causal=spec.causal)
        self.se = SqueezeExcite(spec.d_model, spec.causal) if spec.se else None
        self.spatial = SpatialGate(spec.spatial_kernel, spec.causal) if spec.spatial else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, d) → (B, n, d)."""
        y = self.unit(x)
        y = self.se(y) if self.se is not None else y
        return self.spatial(y) if self.spatial is not None else y


def build_layer(spec: LayerSpec, index: int = 1) -> nn.Module:
    """The module of `spec.kind`; `index` is its place in a stack (sets a dilated conv's dilation)."""
    kind = spec.kind
    if kind in ("self-attention", "self-attention-math"):
        return AttentionLayer(spec, use_sdpa=kind == "self-attention")
    if kind == "restricted":
        return AttentionLayer(spec, window=spec.window)
    if kind == "restricted-banded":
        return BandedAttention(spec)
    if kind in RNN_GATES:
        return RecurrentLayer(spec)
    if kind in ("conv", "dilated-conv"):
        return ConvLayer(spec, stack_dilations(spec, index + 1)[index])
    if kind == "transformer-block":
        return BlockLayer(spec)
    raise ValueError(f"unknown layer kind '{kind}'")


def build_stack(spec: LayerSpec, n_layers: int) -> nn.ModuleList:
    """n_layers fresh layers of `spec.kind` (a dilated conv stack gets dilations k**i)."""
    return nn.ModuleList(build_layer(spec, i) for i in range(n_layers))


@contextlib.contextmanager
def decomposed(kind: str = "lstm"):
    """A context where an LSTM runs as the per-step ops it is made of.

    On CPU `nn.LSTM` is one fused oneDNN op (`aten.mkldnn_rnn_layer`) that FlopCounterMode
    counts as 0 FLOPs and that hides its n sequential steps; with oneDNN off PyTorch runs it as
    per-step addmm and gate ops. Other kinds run unchanged.
    """
    if kind != "lstm":
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "TF32 acceleration on top of oneDNN ..."
        with torch.backends.mkldnn.flags(enabled=False):
            yield


@contextlib.contextmanager
def countable(module: nn.Module):
    """While active, `module` computes the same function on paths FlopCounterMode counts:
    attention on the math path (it counts 0 FLOPs for CPU SDPA kernels such as
    `aten._scaled_dot_product_flash_attention_for_cpu`) and LSTMs unfused (see `decomposed`)."""
    flipped = [m for m in module.modules() if isinstance(m, MultiHeadAttention) and m.use_sdpa]
    for m in flipped:
        m.use_sdpa = False
    try:
        with decomposed("lstm"):
            yield module
    finally:
        for m in flipped:
            m.use_sdpa = True

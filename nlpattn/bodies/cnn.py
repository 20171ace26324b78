"""The convolutional body: stacked 1-D convolutions over time (Dauphin et al. 2017's gated
convolutions; dilations as in WaveNet, van den Oord et al. 2016), each a residual sublayer
with LayerNorm, as the Transformer's blocks are (§3.1).

Layer i convolves with `kernel_size` taps spaced `dilation**i` apart, so the receptive field
grows geometrically with depth (dilation 1 = contiguous kernels, linear growth). Causal
bodies pad on the left only (position t sees t-(k-1)·dil … t); encoders pad both sides
(centred kernels). The convolution makes 2d channels for GLU (a · sigmoid(b)) or d for
GELU. Optional squeeze-and-excitation (Hu et al. 2018) rescales channels by a gate computed
from the mean over time — the mean over the prefix in causal bodies, so nothing leaks.
Optional spatial attention (CBAM, Woo et al. 2018, §3 "spatial attention module", in 1-D)
then rescales positions: max and mean over channels → a convolution over positions (left
padded in causal bodies) → sigmoid, one gate per token. With `output_attentions=True` the
body returns both gates of every layer (`BodyOutput.gates`).
Padded positions are zeroed before every convolution, so real tokens of a right-padded row
see exactly the zeros an unpadded row sees. `n_heads` and `d_ff` are ignored.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nlpattn.bodies import (Body, BodyOutput, LayerGates, check_no_memory_or_cache, register_body,
                            sequence_direction)
from nlpattn.config import ModelConfig
from nlpattn.layers import uses_final_norm

SE_REDUCTION = 4  # squeeze-and-excitation bottleneck: d → d/4 → d


class ConvUnit(nn.Module):
    """One convolution over time with causal (left) or centred zero padding, then GLU or GELU."""

    def __init__(self, d_model: int, kernel_size: int, dilation: int = 1, *, causal: bool,
                 activation: str = "glu", bias: bool = True):
        super().__init__()
        self.activation = activation
        out_channels = 2 * d_model if activation == "glu" else d_model
        self.conv = nn.Conv1d(d_model, out_channels, kernel_size, dilation=dilation, bias=bias)
        total = (kernel_size - 1) * dilation
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d), mask: (B, T) True = real → (B, T, d)."""
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        h = F.pad(x.transpose(1, 2), self.pad)  # (B, d, pad + T)
        h = self.conv(h).transpose(1, 2)  # (B, T, 2d | d)
        return F.glu(h, dim=-1) if self.activation == "glu" else F.gelu(h)


class SqueezeExcite(nn.Module):
    """Channel attention: x · sigmoid(W2 relu(W1 mean_t(x))); the mean is over the prefix if causal."""

    def __init__(self, d_model: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.squeeze = nn.Linear(d_model, max(d_model // SE_REDUCTION, 1))
        self.excite = nn.Linear(max(d_model // SE_REDUCTION, 1), d_model)

    def weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The channel gates in (0, 1): x (B, T, d) → (B, T, d) causal, (B, 1, d) otherwise."""
        m = torch.ones_like(x[..., :1]) if mask is None else mask[..., None].to(x.dtype)  # (B, T, 1)
        if self.causal:
            summary = (x * m).cumsum(dim=1) / m.cumsum(dim=1).clamp(min=1)  # (B, T, d)
        else:
            summary = (x * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1, d)
        return torch.sigmoid(self.excite(F.relu(self.squeeze(summary))))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d) → (B, T, d)."""
        return x * self.weights(x, mask)


class SpatialGate(nn.Module):
    """Spatial attention (CBAM §3, in 1-D): x · sigmoid(conv([max_c x; mean_c x])), one gate per
    position; the convolution over positions is left-padded (sees t-k+1 … t) if causal."""

    def __init__(self, kernel_size: int, causal: bool):
        super().__init__()
        self.conv = nn.Conv1d(2, 1, kernel_size)  # 2 pooled maps → 1 gate map
        total = kernel_size - 1
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)

    def weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The gates in (0, 1): x (B, T, d) → (B, T); padded positions pool to zeros."""
        pooled = torch.stack([x.amax(dim=-1), x.mean(dim=-1)], dim=1)  # (B, 2, T)
        if mask is not None:
            pooled = pooled * mask[:, None].to(x.dtype)
        h = self.conv(F.pad(pooled, self.pad))  # (B, 1, T)
        return torch.sigmoid(h[:, 0])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d) → (B, T, d)."""
        return x * self.weights(x, mask)[..., None]


class ConvLayer(nn.Module):
    """x + Dropout(Gates(Conv(LayerNorm(x)))) (pre-LN) or LayerNorm(x + Dropout(Gates(Conv(x))))
    (post-LN); Gates = squeeze-and-excitation then the spatial gate, each optional."""

    def __init__(self, cfg: ModelConfig, dilation: int, causal: bool):
        super().__init__()
        self.unit = ConvUnit(cfg.d_model, cfg.kernel_size, dilation, causal=causal,
                             activation=cfg.conv_activation, bias=cfg.bias)
        self.se = SqueezeExcite(cfg.d_model, causal) if cfg.se else None
        self.spatial = SpatialGate(cfg.spatial_kernel, causal) if cfg.spatial else None
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pre_norm = cfg.norm == "pre"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, LayerGates]:
        """x: (B, T, d) → (B, T, d) and the gates applied (channel (B, T, d), spatial (B, T))."""
        y = self.unit(self.norm(x) if self.pre_norm else x, mask)  # (B, T, d)
        gates = LayerGates()
        if self.se is not None:
            gates.channel = self.se.weights(y, mask).expand_as(y)  # (B, T, d)
            y = y * gates.channel
        if self.spatial is not None:
            gates.spatial = self.spatial.weights(y, mask)  # (B, T)
            y = y * gates.spatial[..., None]
        x = x + self.dropout(y)
        return (x if self.pre_norm else self.norm(x)), gates


def dilation_schedule(n_layers: int, base: int) -> list[int]:
    """Dilation of each layer: base**i (1, 2, 4, … for base 2; all 1 for base 1)."""
    return [base ** i for i in range(n_layers)]


def receptive_field(kernel_size: int, dilations: list[int]) -> int:
    """Tokens one output sees on one side, itself included: 1 + (k-1)·Σ dilations (causal)."""
    return 1 + (kernel_size - 1) * sum(dilations)


@register_body("cnn")
class ConvBody(Body):
    """n_layers residual convolution layers with dilations dilation**i, then an optional final LayerNorm."""

    causal_ok = True
    bidirectional_ok = True
    returns_attention = False
    left_padding_ok = True  # padded positions are zeroed, as the convolution's own padding is
    pooling = "mean"  # position 0 does not see the whole sequence

    def __init__(self, cfg: ModelConfig, causal: bool):
        super().__init__(cfg, causal)
        self.returns_gates = cfg.se or cfg.spatial
        self.left_only = not sequence_direction(cfg, causal)
        self.dilations = dilation_schedule(cfg.n_layers, cfg.dilation)
        self.layers = nn.ModuleList(ConvLayer(cfg, dil, self.left_only) for dil in self.dilations)
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if uses_final_norm(cfg) else None

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                output_attentions: bool = False, cache: object | None = None,
                position_offset: int = 0, position_ids: torch.Tensor | None = None) -> BodyOutput:
        """x: (B, T, d) → hidden (B, T, d); no attention weights (attentions = []); with
        output_attentions and SE or spatial gates on, `gates`: one LayerGates per layer."""
        check_no_memory_or_cache(self, memory, cache)
        mask = None if padding_mask is None or bool(padding_mask.all()) else padding_mask.bool()
        gates = []
        for layer in self.layers:
            x, layer_gates = layer(x, mask)
            gates.append(layer_gates)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return BodyOutput(hidden=x, gates=gates if output_attentions and self.returns_gates else [])

"""The recurrent body: stacked LSTM or GRU layers (Hochreiter & Schmidhuber 1997; Cho et al.
2014), each a residual sublayer with LayerNorm, as the Transformer's blocks are (§3.1).

Direction: unidirectional for causal LM, bidirectional for encoder objectives (MLM,
classification). A bidirectional layer runs d/2 units per direction and concatenates them,
so every layer maps (B, T, d) → (B, T, d) with no extra projection (d_model must be even).
Padding: right-padded batches are packed (`pack_padded_sequence`), so the backward direction
starts at each sequence's last real token and real-token outputs equal an unpadded run.
`n_heads`, `d_ff`, `kernel_size` and `dilation` are ignored.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlpattn.bodies import Body, BodyOutput, check_no_memory_or_cache, register_body, sequence_direction
from nlpattn.config import ModelConfig
from nlpattn.errors import ConfigError
from nlpattn.layers import uses_final_norm

RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU}


def right_padded_lengths(padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Lengths (B,) of right-padded rows, or None when nothing is padded; left padding is rejected."""
    if padding_mask is None:
        return None
    mask = padding_mask.bool()
    if bool(mask.all()):
        return None
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("the recurrent body needs right padding (real tokens first, then padding)")
    return mask.sum(dim=1).clamp(min=1)


class RecurrentLayer(nn.Module):
    """x + Dropout(RNN(LayerNorm(x))) (pre-LN) or LayerNorm(x + Dropout(RNN(x))) (post-LN)."""

    def __init__(self, cfg: ModelConfig, bidirectional: bool):
        super().__init__()
        hidden = cfg.d_model // 2 if bidirectional else cfg.d_model
        self.rnn = RNN_CLASSES[cfg.body](cfg.d_model, hidden, batch_first=True,
                                         bidirectional=bidirectional, bias=cfg.bias)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pre_norm = cfg.norm == "pre"

    def run_rnn(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """(B, T, d) → (B, T, d); padded positions (past `lengths`) come out as zeros."""
        if lengths is None:
            return self.rnn(x)[0]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
        return out

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """x: (B, T, d) → (B, T, d)."""
        y = self.run_rnn(self.norm(x) if self.pre_norm else x, lengths)
        x = x + self.dropout(y)
        return x if self.pre_norm else self.norm(x)


@register_body("lstm")
class RecurrentBody(Body):
    """n_layers recurrent sublayers (LSTM or GRU, from cfg.body), then an optional final LayerNorm."""

    causal_ok = True
    bidirectional_ok = True
    returns_attention = False
    pooling = "mean"  # a bidirectional position 0 has seen only token 0 in its forward half

    def __init__(self, cfg: ModelConfig, causal: bool):
        super().__init__(cfg, causal)
        if cfg.body not in RNN_CLASSES:
            raise ConfigError(f"model.body: the recurrent body needs lstm or gru, got '{cfg.body}'")
        self.bidirectional = sequence_direction(cfg, causal)
        if self.bidirectional and cfg.d_model % 2:
            raise ConfigError(f"model.d_model must be even for a bidirectional {cfg.body} "
                              f"(d/2 units per direction), got {cfg.d_model}")
        self.layers = nn.ModuleList(RecurrentLayer(cfg, self.bidirectional) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if uses_final_norm(cfg) else None

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                output_attentions: bool = False, cache: object | None = None,
                position_offset: int = 0, position_ids: torch.Tensor | None = None) -> BodyOutput:
        """x: (B, T, d) → hidden (B, T, d); no attention weights (attentions = [])."""
        check_no_memory_or_cache(self, memory, cache)
        # A forward-only RNN never sees the padding after a real token: packing is only needed
        # so that the backward direction starts at each row's last real token.
        lengths = right_padded_lengths(padding_mask) if self.bidirectional else None
        for layer in self.layers:
            x = layer(x, lengths)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return BodyOutput(hidden=x)

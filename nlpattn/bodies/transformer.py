"""The Transformer body: a stack of attention blocks (encoder, decoder, or decoder with
cross-attention over an encoder's output)."""
from __future__ import annotations

import torch
from torch import nn

from nlpattn.attention import KVCache, RotaryEmbedding
from nlpattn.bodies import Body, BodyOutput, register_body
from nlpattn.config import ModelConfig
from nlpattn.layers import TransformerBlock, uses_final_norm


@register_body("transformer")
class TransformerBody(Body):
    """N identical blocks (§3.1); causal for decoders, with cross-attention in seq2seq decoders."""

    causal_ok = True
    bidirectional_ok = True
    returns_attention = True
    supports_cache = True
    left_padding_ok = True  # padded keys are masked; position_ids place each row's tokens

    def __init__(self, cfg: ModelConfig, causal: bool, cross_attention: bool = False):
        super().__init__(cfg, causal)
        n_layers = cfg.n_decoder_layers if cross_attention and cfg.n_decoder_layers else cfg.n_layers
        rope = RotaryEmbedding(cfg.head_dim, cfg.max_len, cfg.rope_base) if cfg.position == "rope" else None
        self.layers = nn.ModuleList(
            TransformerBlock(cfg, cross=cross_attention, rope=rope) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if uses_final_norm(cfg) else None

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                output_attentions: bool = False, cache: KVCache | None = None,
                position_offset: int = 0, position_ids: torch.Tensor | None = None) -> BodyOutput:
        """x: (B, T, d) → hidden (B, T, d); attentions: self (and cross) weights per layer."""
        attentions, cross_attentions = [], []
        for i, block in enumerate(self.layers):
            x, self_w, cross_w = block(x, padding_mask, causal=self.causal, memory=memory,
                                       memory_mask=memory_mask, output_attentions=output_attentions,
                                       cache=cache, layer=i, offset=position_offset,
                                       positions=position_ids)
            if output_attentions:
                attentions.append(self_w)
                if cross_w is not None:
                    cross_attentions.append(cross_w)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return BodyOutput(hidden=x, attentions=attentions, cache=cache,
                          cross_attentions=cross_attentions)

"""Weight initialisation for training from scratch (GPT-2 / BERT style).

`build_model` applies it (train.init_std; None keeps PyTorch's per-layer defaults, whose N(0, 1)
embeddings start a tied-embedding LM at a loss far above log(V)). `init_weights` draws
linears and embeddings from N(0, std), zeroes biases, resets norms, and scales the residual
output projections by 1/sqrt(2·layers) (Radford et al. 2019, §2.3). Recurrent and
convolutional weights keep their own initialisation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

RESIDUAL_OUTPUTS = ("out_proj.weight", "fc_out.weight")


def init_weights(model: nn.Module, std: float = 0.02, n_layers: int | None = None) -> nn.Module:
    """Re-initialise `model` in place (under the current torch seed); returns it."""
    layers = n_layers or getattr(getattr(model, "cfg", None), "n_layers", 1)
    residual_std = std / math.sqrt(2 * max(1, layers))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
            if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()
        for name, p in model.named_parameters():
            if name.endswith(RESIDUAL_OUTPUTS):
                p.normal_(0.0, residual_std)
    return model

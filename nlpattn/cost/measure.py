"""Measured cost: FLOPs counted by PyTorch's FlopCounterMode (time, memory and path length
measurements live here too)."""
from __future__ import annotations

import torch
from torch import nn


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs PyTorch's FlopCounterMode counts while running fn(*args, **kwargs) (no grad)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def model_forward_flops(model: nn.Module, batch_size: int = 1, seq_len: int = 128) -> int:
    """FLOPs of one forward pass of `model` on a (batch_size, seq_len) batch of token ids."""
    ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    if getattr(model, "task", "") == "seq2seq":
        return count_flops(model, ids, decoder_input_ids=ids)
    return count_flops(model, ids)

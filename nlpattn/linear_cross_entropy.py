"""The vocabulary projection and its cross-entropy in one pass over row chunks.

A causal LM's head turns every position's hidden vector into V logits and the loss reads them
once. Done plainly, training writes the (N, V) logits, their log-softmax and, in backward, a
gradient of the same size: at N = 16 × 128 rows and V = 8192 that is 64 MiB per tensor in float32,
several passes through memory for a few multiply-adds per element. Here each chunk of rows is
projected, turned into its loss and its logit gradient (softmax − one-hot) while still in cache,
and the gradient is pushed straight through the projection; backward only scales what forward
kept. The matrix multiplies are the same three as the plain head's.
"""
from __future__ import annotations

import torch

from nlpattn.data.collate import IGNORE_INDEX

CHUNK_BYTES = 8 * 2**20  # float32 logits per chunk (256 rows at V = 8192: the fastest of 64-512 measured)


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of hidden @ weightᵀ against targets; gradients computed in forward."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk_rows: int) -> torch.Tensor:
        valid = targets != IGNORE_INDEX  # (N,)
        count = valid.sum()
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        h_all, w = hidden.to(dtype), weight.to(dtype)  # cast once, not per chunk
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)  # (N, d)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)  # (V, d)
        # One set of chunk buffers, reused: a fresh 8 MiB tensor per chunk costs its page faults
        # every time (bf16 head + loss forward 99.7 → 86.6 ms at N 2048, V 8192; docs/results.md).
        rows = min(chunk_rows, hidden.shape[0])
        logits_buf = torch.empty(rows, weight.shape[0], dtype=torch.float32, device=hidden.device)  # (n, V)
        low = dtype != torch.float32
        if low:  # the matmuls' low-precision outputs, before the float32 softmax and after it
            low_buf = torch.empty(rows, weight.shape[0], dtype=dtype, device=hidden.device)  # (n, V)
            grad_weight_chunk = torch.empty(weight.shape, dtype=dtype, device=weight.device)  # (V, d)
        for start in range(0, hidden.shape[0], chunk_rows):
            h = h_all[start:start + chunk_rows]  # (n, d)
            t, keep = targets[start:start + chunk_rows], valid[start:start + chunk_rows]
            n = h.shape[0]
            if low:
                logits = logits_buf[:n].copy_(torch.mm(h, w.t(), out=low_buf[:n]))  # (n, V) float32
            else:
                logits = torch.mm(h, w.t(), out=logits_buf[:n])  # (n, V)
            picked = t.clamp(min=0).unsqueeze(1)  # (n, 1); ignored rows pick class 0, then drop out
            target_logit = logits.gather(1, picked)  # (n, 1), read before the logits are overwritten
            row_max = logits.amax(dim=-1, keepdim=True)  # (n, 1)
            exps = logits.sub_(row_max).exp_()  # in place of the logits: the chunk's only exp pass
            sums = exps.sum(dim=-1, keepdim=True)  # (n, 1)
            kept = keep.unsqueeze(1).float()  # (n, 1)
            total += ((row_max + sums.log() - target_logit) * kept).sum()  # lse − target logit
            grad = exps.mul_(kept / sums)  # softmax, zero on ignored rows, in one pass
            grad.scatter_add_(1, picked, -kept)  # − one-hot
            if low:
                grad = low_buf[:n].copy_(grad)
            grad_hidden[start:start + chunk_rows] = grad @ w  # (n, d)
            if low:
                grad_weight.add_(torch.mm(grad.t(), h, out=grad_weight_chunk))  # float32 sum of the chunks
            else:
                torch.addmm(grad_weight, grad.t(), h, out=grad_weight)  # (V, d); addmm_ escapes FlopCounterMode
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype), count)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight, count = ctx.saved_tensors
        scale = grad_loss / count
        return grad_hidden * scale.to(grad_hidden.dtype), grad_weight * scale.to(grad_weight.dtype), None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_rows: int | None = None) -> torch.Tensor:
    """`F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=-100)` for hidden
    (N, d), weight (V, d), targets (N,), without materialising the (N, V) logits."""
    rows = chunk_rows or max(1, CHUNK_BYTES // (4 * weight.shape[0]))
    return _LinearCrossEntropy.apply(hidden, weight, targets, rows)

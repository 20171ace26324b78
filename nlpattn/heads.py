"""Output heads shared by every body: masked-LM, causal-LM, replaced-token detection,
classification and regression."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nlpattn.config import ModelConfig
from nlpattn.layers import activation_fn
from nlpattn.linear_cross_entropy import linear_cross_entropy

IGNORE_INDEX = -100


# The masked-only MLM head projects a different number of rows every step. oneDNN (bf16 on CPU)
# builds and caches a kernel per matrix shape and glibc keeps the freed buffers of every size, so
# resident memory grew by ~20 MiB per distinct row count (4.65 GiB in the hour-long corpus run).
# Rounding the row count up to a multiple of MLM_ROW_BUCKET bounds the shapes for < 1 % more work.
MLM_ROW_BUCKET = 64


def mlm_head_rows(n_masked: int) -> int:
    """Rows the masked-only MLM head projects for `n_masked` labelled positions (padded to the bucket)."""
    return -(-n_masked // MLM_ROW_BUCKET) * MLM_ROW_BUCKET


CE_CHUNK_BYTES = 8 * 2**20  # float32 logits per cross-entropy chunk: stays in cache, never B·T·V at once
CE_ONE_CALL_BYTES = 16 * 2**20  # up to this much float32 logits, one call: chunks cost more there, and larger
# blocks (32 MiB and up) glibc maps and page-faults afresh on every call


class _LowPrecisionCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of bf16/fp16 logits (N, V), its gradient (softmax − one-hot) ÷ count
    computed in forward in float32 and rounded once, chunk by chunk in one reused float32 buffer;
    backward only scales it.
    The plain path upcasts, runs log-softmax, then in backward zero-fills, scatters and runs the
    log-softmax backward: five passes over N·V floats where this makes two."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        keep = (targets != IGNORE_INDEX).unsqueeze(1).float()  # (N, 1)
        count = keep.sum()  # 0 when every target is ignored: the loss is nan, as F.cross_entropy's
        grad = torch.empty_like(logits)  # (N, V) in the logits' dtype, as autograd would give it
        chunk = torch.empty(min(chunk_rows, logits.shape[0]), logits.shape[1], dtype=torch.float32,
                            device=logits.device)  # (n, V), reused: a fresh block per chunk page-faults
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            z = chunk[:logits[rows].shape[0]].copy_(logits[rows])  # (n, V) float32
            picked = targets[rows].clamp(min=0).unsqueeze(1)  # (n, 1); ignored rows pick 0, then drop out
            target_logit = z.gather(1, picked)  # (n, 1), read before z is overwritten
            row_max = z.amax(dim=-1, keepdim=True)
            exps = z.sub_(row_max).exp_()
            sums = exps.sum(dim=-1, keepdim=True)
            total += ((row_max + sums.log() - target_logit) * keep[rows]).sum()  # Σ lse − target logit
            weight = keep[rows] / count  # (n, 1): 1/count, zero on ignored rows
            softmax = exps.mul_(weight / sums)
            grad[rows].copy_(softmax.scatter_add_(1, picked, -weight))  # − one-hot, then one rounding
        ctx.save_for_backward(grad)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(grad.dtype), None, None


def chunked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of logits (N, V) against targets (N,) (IGNORE_INDEX skipped), computed over
    row chunks upcast to float32 one at a time: the same value and gradient as
    `F.cross_entropy(logits.float(), targets)` within float32 rounding (the sum runs per chunk), without
    the N·V float32 copy, log-probabilities and gradient that the whole-array call allocates.
    bf16/fp16 logits that need a gradient take `_LowPrecisionCrossEntropy` in chunks of CE_CHUNK_BYTES
    (1.1-1.7x faster for loss + backward at 320-1,024 rows, V = 8192: benchmarks/masked_lm_loss.py;
    float32 logits were not faster that way at 320 rows). Otherwise one call up to CE_ONE_CALL_BYTES
    of float32 logits (512 rows at V = 8192), else chunks of CE_CHUNK_BYTES."""
    chunk = max(1, CE_CHUNK_BYTES // (4 * logits.shape[-1]))
    if logits.dtype in (torch.bfloat16, torch.float16) and logits.requires_grad and torch.is_grad_enabled():
        return _LowPrecisionCrossEntropy.apply(logits, targets, chunk_rows or chunk)
    one_call = logits.shape[0] * logits.shape[-1] * 4 <= CE_ONE_CALL_BYTES
    rows = chunk_rows or (logits.shape[0] if one_call else chunk)
    if logits.shape[0] <= rows:
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
    total = sum(F.cross_entropy(part.float(), t, ignore_index=IGNORE_INDEX, reduction="sum")
                for part, t in zip(logits.split(rows), targets.split(rows)))  # split: one cat in backward
    return total / (targets != IGNORE_INDEX).sum()


class MaskedLMHead(nn.Module):
    """BERT-style MLM head: optional dense+act+LayerNorm transform, then vocabulary logits.

    With labels, only the masked positions (label != -100) are projected onto the vocabulary:
    for 15% masking that skips ~85% of the largest matrix multiply of MLM training.
    """

    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.transform = None
        if cfg.mlm_transform:
            self.transform = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model),
                                           _Activation(cfg.activation),
                                           nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps))
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.decoder.weight = embedding.weight
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) → (..., V)."""
        if self.transform is not None:
            hidden = self.transform(hidden)
        # one addmm with the bias, as BERT's tied decoder does: under autocast a separate `+ bias`
        # promotes the (N, V) bf16 logits to float32 (a full extra pass and copy)
        return F.linear(hidden, self.decoder.weight, self.bias)

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Without labels: logits (B, T, V). With labels: (loss, logits (N_masked, V))."""
        if labels is None:
            return self.logits(hidden), None
        rows = (labels.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)  # (N,) masked positions
        n = rows.numel()
        padded = torch.cat([rows, rows.new_zeros(mlm_head_rows(n) - n)])  # (N + pad,): pad rows repeat row 0
        logits = self.logits(hidden.reshape(-1, hidden.shape[-1]).index_select(0, padded))  # (N + pad, V)
        targets = labels.reshape(-1).index_select(0, padded)
        targets[n:] = IGNORE_INDEX  # padding rows add nothing to the loss or the gradients
        # chunked: the shipped recipe's 1,024 masked rows would make 32 MiB float32 blocks every step
        loss = chunked_cross_entropy(logits, targets) if n else logits.sum() * 0.0
        return logits[:n], loss


class LMHead(nn.Module):
    """Next-token prediction: logits = hidden · Eᵀ (tied to the input embedding by default)."""

    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.decoder.weight = embedding.weight

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None, *,
                shift: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden (B, T, d) → logits (B, T, V); loss of predicting labels[t+1] at t if shift.
        With labels while gradients are on (training), logits are None: see linear_cross_entropy."""
        if labels is None:
            return self.decoder(hidden), None
        # Shift the targets, not the logits: slicing logits[:, :-1] copies B·(T-1)·V values (and its
        # backward fills a zero tensor of that size); the last position's target is ignored instead.
        target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX) if shift else labels  # (B, T)
        if torch.is_grad_enabled() and (hidden.requires_grad or self.decoder.weight.requires_grad):
            # training: the projection and the loss in one pass over row chunks; no (B, T, V) logits
            return None, linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), self.decoder.weight,
                                              target.reshape(-1))
        logits = self.decoder(hidden)
        loss = chunked_cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        return logits, loss


class DetectionHead(nn.Module):
    """ELECTRA's discriminator head: dense + activation, then one logit per position (replaced?)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = activation_fn(cfg.activation)
        self.out = nn.Linear(cfg.d_model, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, d) → logits (B, T): > 0 means "this token was replaced"."""
        return self.out(self.act(self.dense(hidden))).squeeze(-1)


class ClassifierHead(nn.Module):
    """Sequence → label scores: pool one vector, optional dense+tanh pooler, dropout, linear.

    `num_labels == 1` is regression (mean squared error), otherwise classification.
    """

    def __init__(self, cfg: ModelConfig, num_labels: int, pooling: str):
        super().__init__()
        self.num_labels, self.pooling = num_labels, pooling
        self.pooler = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.Tanh()) if cfg.pooler else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.d_model, num_labels)

    def pool(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, d) → (B, d): first token (cls), last real token (last) or mean of real tokens."""
        if self.pooling == "cls":
            return hidden[:, 0]
        if padding_mask is None:
            return hidden[:, -1] if self.pooling == "last" else hidden.mean(dim=1)
        mask = padding_mask.to(hidden.dtype)  # (B, T)
        if self.pooling == "last":
            last = mask.sum(dim=1).long().clamp(min=1) - 1  # right padding assumed
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return (hidden * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns logits (B, num_labels) and the loss if labels are given."""
        pooled = self.pool(hidden, padding_mask)
        if self.pooler is not None:
            pooled = self.pooler(pooled)
        logits = self.out(self.dropout(pooled))
        if labels is None:
            return logits, None
        if self.num_labels == 1:
            loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
        else:
            loss = F.cross_entropy(logits.float(), labels.long())
        return logits, loss


class _Activation(nn.Module):
    """An activation function as a module (so it fits in nn.Sequential)."""

    def __init__(self, name: str):
        super().__init__()
        self.fn = activation_fn(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the activation."""
        return self.fn(x)

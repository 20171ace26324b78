"""Output heads shared by every body: masked-LM, causal-LM, classification and regression."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nlpattn.config import ModelConfig
from nlpattn.layers import activation_fn

IGNORE_INDEX = -100


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
        return self.decoder(hidden) + self.bias

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Without labels: logits (B, T, V). With labels: (loss, logits (N_masked, V))."""
        if labels is None:
            return self.logits(hidden), None
        selected = labels != IGNORE_INDEX  # (B, T)
        logits = self.logits(hidden[selected])  # (N, V)
        targets = labels[selected]
        loss = F.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
        return logits, loss


class LMHead(nn.Module):
    """Next-token prediction: logits = hidden · Eᵀ (tied to the input embedding by default)."""

    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.decoder.weight = embedding.weight

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None, *,
                shift: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden (B, T, d) → logits (B, T, V); loss of predicting labels[t+1] at t if shift."""
        logits = self.decoder(hidden)
        if labels is None:
            return logits, None
        if shift:
            pred, target = logits[:, :-1], labels[:, 1:]
        else:
            pred, target = logits, labels
        loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1),
                               ignore_index=IGNORE_INDEX)
        return logits, loss


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

"""Models = Embeddings → Body (→ decoder Body) → Head, plus saving and loading them.

`build_model(cfg, task)` returns one of MaskedLM, CausalLM, Seq2SeqLM, ReplacedTokenDetection,
SequenceClassifier.
Every model is called HF-style: `model(input_ids, attention_mask=..., labels=...)` → ModelOutput.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nlpattn.attention import KVCache
from nlpattn.bodies import build_body
from nlpattn.config import ModelConfig, model_config_from_dict, to_dict
from nlpattn.errors import CheckpointError, ConfigError
from nlpattn.heads import IGNORE_INDEX, ClassifierHead, DetectionHead, LMHead, MaskedLMHead
from nlpattn.layers import Embeddings

TASKS = ("mlm", "clm", "seq2seq", "electra", "classification", "regression")


@dataclass
class ModelOutput:
    """What every model returns. `logits` of an MLM given labels cover masked positions only."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    attentions: list[torch.Tensor] = field(default_factory=list)
    cross_attentions: list[torch.Tensor] = field(default_factory=list)
    encoder_attentions: list[torch.Tensor] = field(default_factory=list)
    cache: KVCache | None = None
    gates: list = field(default_factory=list)  # LayerGates per layer (bodies with returns_gates)
    parts: dict = field(default_factory=dict)  # a model's named sub-results (ReplacedTokenDetection's losses)


def check_inputs(cfg: ModelConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 name: str = "input_ids", offset: int = 0) -> None:
    """Raise a clear ValueError for ids out of the vocabulary, over-long inputs, bad masks."""
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, length), got shape {tuple(input_ids.shape)}")
    # The value check reads the ids back (a graph break under torch.compile): skipped when compiling.
    if input_ids.numel() and not torch.compiler.is_compiling() and (
            int(input_ids.max()) >= cfg.vocab_size or int(input_ids.min()) < 0):
        bad = int(input_ids.max()) if int(input_ids.max()) >= cfg.vocab_size else int(input_ids.min())
        raise ValueError(f"{name} contains token id {bad}, outside [0, vocab_size={cfg.vocab_size})")
    length = input_ids.shape[1] + offset
    if cfg.position in ("learned", "sinusoidal", "rope") and length > cfg.max_len:
        raise ValueError(f"{name} has length {length} > max_len={cfg.max_len}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match "
                         f"{name} shape {tuple(input_ids.shape)}")


def _padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if attention_mask is None else attention_mask.bool()


class _Model(nn.Module):
    """Embeddings + one body: the shared trunk of MaskedLM, CausalLM and SequenceClassifier."""

    task: str = ""

    def __init__(self, cfg: ModelConfig, causal: bool):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.body = build_body(cfg, causal=causal)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None, output_attentions: bool = False,
               cache: KVCache | None = None, position_ids: torch.Tensor | None = None):
        """input_ids (B, T) → BodyOutput with hidden (B, T, d). With a cache, attention_mask
        covers the cached positions too (B, past + T); position_ids (B, T) place left-padded rows."""
        offset = len(cache) if cache is not None else 0
        check_inputs(self.cfg, input_ids, attention_mask if cache is None else None, offset=offset)
        if position_ids is not None and position_ids.shape != input_ids.shape:
            raise ValueError(f"position_ids shape {tuple(position_ids.shape)} does not match "
                             f"input_ids shape {tuple(input_ids.shape)}")
        x = self.embeddings(input_ids, token_type_ids, offset=offset, position_ids=position_ids)
        return self.body(x, _padding_mask(attention_mask), output_attentions=output_attentions,
                         cache=cache, position_offset=offset, position_ids=position_ids)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of (unique) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


class MaskedLM(_Model):
    """BERT-style encoder trained to recover masked tokens."""

    task = "mlm"

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, causal=False)
        self.head = MaskedLMHead(cfg, self.embeddings.token)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Logits (B, T, V) without labels; with labels, loss and logits (N_masked, V)."""
        body = self.encode(input_ids, attention_mask, token_type_ids, output_attentions)
        logits, loss = self.head(body.hidden, labels)
        return ModelOutput(loss=loss, logits=logits, hidden=body.hidden, attentions=body.attentions,
                           gates=body.gates)


class CausalLM(_Model):
    """GPT-style decoder trained to predict the next token."""

    task = "clm"

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, causal=True)
        self.head = LMHead(cfg, self.embeddings.token)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_attentions: bool = False,
                cache: KVCache | None = None, position_ids: torch.Tensor | None = None) -> ModelOutput:
        """Logits (B, T, V); loss predicts labels shifted by one (labels = input_ids works)."""
        body = self.encode(input_ids, attention_mask, None, output_attentions, cache, position_ids)
        logits, loss = self.head(body.hidden, labels)
        return ModelOutput(loss=loss, logits=logits, hidden=body.hidden, attentions=body.attentions,
                           cache=cache, gates=body.gates)


@torch.no_grad()
def sample_tokens(logits: torch.Tensor) -> torch.Tensor:
    """One token per row of logits (N, V), drawn from softmax(logits): data for the discriminator,
    so no gradient flows back through the sample."""
    if logits.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=logits.device)
    return torch.multinomial(torch.softmax(logits.float(), dim=-1), 1).squeeze(1)


def replace_masked(input_ids: torch.Tensor, labels: torch.Tensor,
                   sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's input and targets: the original text (B, T) with its masked positions
    (labels != IGNORE_INDEX, row-major) set to `sampled` (N,), and which positions now differ
    from the original (B, T) — a sample equal to the original token counts as original."""
    masked = labels != IGNORE_INDEX
    original = torch.where(masked, labels, input_ids)
    corrupted = original.masked_scatter(masked, sampled.to(original.dtype))
    return corrupted, corrupted != original


class ReplacedTokenDetection(_Model):
    """ELECTRA (Clark et al. 2020). A small MLM generator (`generator_layers` layers of the same
    width, sharing the embeddings) predicts the masked tokens; each masked position is filled with
    a token sampled from its prediction; the discriminator — this model's embeddings and body —
    tells at every position whether the token is the original. It learns from all positions, not
    only the masked ones. Fine-tuning (`init=`) keeps the discriminator's embeddings and body."""

    task = "electra"

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, causal=False)
        self.generator = build_body(replace_config(cfg, n_layers=cfg.generator_layers), causal=False)
        self.generator_head = MaskedLMHead(cfg, self.embeddings.token)
        self.detector = DetectionHead(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Without labels: detection logits (B, T) for `input_ids` as given. With labels (an MLM
        batch): loss = generator MLM loss + detection_weight · detection loss over real tokens;
        logits (B, T) are the detector's on the corrupted text; `parts` holds mlm_loss,
        detection_loss, generator_logits (N_masked, V), corrupted (B, T) and replaced (B, T)."""
        if labels is None:
            body = self.encode(input_ids, attention_mask, token_type_ids, output_attentions)
            return ModelOutput(logits=self.detector(body.hidden), hidden=body.hidden,
                               attentions=body.attentions, gates=body.gates)
        check_inputs(self.cfg, input_ids, attention_mask)
        gen = self.generator(self.embeddings(input_ids, token_type_ids), _padding_mask(attention_mask))
        gen_logits, mlm_loss = self.generator_head(gen.hidden, labels)  # (N_masked, V)
        sampled = sample_tokens(gen_logits)  # (N_masked,)
        corrupted, replaced = replace_masked(input_ids, labels, sampled)
        body = self.encode(corrupted, attention_mask, token_type_ids, output_attentions)
        logits = self.detector(body.hidden)  # (B, T)
        real = torch.ones_like(replaced) if attention_mask is None else attention_mask.bool()
        detection_loss = F.binary_cross_entropy_with_logits(logits[real].float(), replaced[real].float())
        loss = mlm_loss + self.cfg.detection_weight * detection_loss
        return ModelOutput(loss=loss, logits=logits, hidden=body.hidden, attentions=body.attentions,
                           gates=body.gates, parts={"mlm_loss": mlm_loss.detach(),
                                                    "detection_loss": detection_loss.detach(),
                                                    "generator_logits": gen_logits.detach(),
                                                    "corrupted": corrupted, "replaced": replaced})


class SequenceClassifier(_Model):
    """Encoder or decoder body + classifier/regression head (num_labels == 1 → regression)."""

    task = "classification"

    def __init__(self, cfg: ModelConfig, num_labels: int = 2):
        causal = cfg.arch == "decoder"
        super().__init__(cfg, causal=causal)
        self.num_labels = num_labels
        pooling = cfg.pooling or ("last" if causal else self.body.pooling)
        self.head = ClassifierHead(cfg, num_labels, pooling)
        if num_labels == 1:
            self.task = "regression"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Logits (B, num_labels) and, with labels, cross-entropy or MSE loss."""
        body = self.encode(input_ids, attention_mask, token_type_ids, output_attentions)
        logits, loss = self.head(body.hidden, _padding_mask(attention_mask), labels)
        return ModelOutput(loss=loss, logits=logits, hidden=body.hidden, attentions=body.attentions,
                           gates=body.gates)


class Seq2SeqLM(nn.Module):
    """Encoder-decoder (§3.1): the decoder attends to its past and, by cross-attention, to the
    encoder's output. Embeddings and the output projection are shared."""

    task = "seq2seq"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = build_body(cfg, causal=False)
        self.decoder = build_body(cfg, causal=True, cross_attention=True)
        self.head = LMHead(cfg, self.embeddings.token)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               output_attentions: bool = False):
        """Source ids (B, S) → encoder BodyOutput with hidden (B, S, d)."""
        check_inputs(self.cfg, input_ids, attention_mask)
        return self.encoder(self.embeddings(input_ids), _padding_mask(attention_mask),
                            output_attentions=output_attentions)

    def decode(self, decoder_input_ids: torch.Tensor, memory: torch.Tensor,
               memory_mask: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
               output_attentions: bool = False, cache: KVCache | None = None):
        """Target ids (B, T) + encoder output (B, S, d) → decoder BodyOutput (B, T, d)."""
        offset = len(cache) if cache is not None else 0
        check_inputs(self.cfg, decoder_input_ids, decoder_attention_mask if cache is None else None,
                     name="decoder_input_ids", offset=offset)
        x = self.embeddings(decoder_input_ids, offset=offset)
        return self.decoder(x, _padding_mask(decoder_attention_mask), memory=memory,
                            memory_mask=_padding_mask(memory_mask), output_attentions=output_attentions,
                            cache=cache, position_offset=offset)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_attentions: bool = False, cache: KVCache | None = None) -> ModelOutput:
        """Logits (B, T, V); loss compares position t with labels[t] (targets already shifted)."""
        if decoder_input_ids is None:
            raise ValueError("Seq2SeqLM needs decoder_input_ids (the shifted targets)")
        enc = self.encode(input_ids, attention_mask, output_attentions)
        dec = self.decode(decoder_input_ids, enc.hidden, attention_mask, decoder_attention_mask,
                          output_attentions, cache)
        logits, loss = self.head(dec.hidden, labels, shift=False)
        return ModelOutput(loss=loss, logits=logits, hidden=dec.hidden, attentions=dec.attentions,
                           cross_attentions=dec.cross_attentions, encoder_attentions=enc.attentions,
                           cache=cache)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of (unique) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def build_model(cfg: ModelConfig, task: str = "mlm", num_labels: int | None = None,
                init_std: float | None = 0.02) -> nn.Module:
    """The model for `task` (mlm | clm | seq2seq | classification | regression) from `cfg`,
    initialised N(0, init_std) GPT-2/BERT-style (None keeps PyTorch's per-layer defaults)."""
    model = _construct(cfg, task, num_labels)
    if init_std is not None:
        from nlpattn.init import init_weights

        init_weights(model, init_std)
    return model


def _construct(cfg: ModelConfig, task: str, num_labels: int | None) -> nn.Module:
    if task not in TASKS:
        raise ConfigError(f"task '{task}' is not one of {', '.join(TASKS)}")
    if task == "mlm":
        return MaskedLM(cfg)
    if task == "clm":
        return CausalLM(cfg)
    if task == "electra":
        return ReplacedTokenDetection(cfg)
    if task == "seq2seq":
        if cfg.arch != "encoder-decoder":
            raise ConfigError(f"model.arch: task seq2seq needs arch encoder-decoder, got '{cfg.arch}'")
        return Seq2SeqLM(cfg)
    if task == "regression":
        return SequenceClassifier(cfg, num_labels=1)
    return SequenceClassifier(cfg, num_labels=num_labels or 2)


def model_meta(model: nn.Module) -> dict:
    """What model.json holds: the task, the number of labels and the ModelConfig."""
    model = _unwrap(model)
    return {"task": model.task, "num_labels": getattr(model, "num_labels", None), "config": to_dict(model.cfg)}


def save_model(model: nn.Module, directory: str | os.PathLike) -> None:
    """Write model.safetensors + model.json (config, task, num_labels) atomically into `directory`."""
    from safetensors.torch import save_model as st_save_model

    from nlpattn.fileio import atomic_path, atomic_write_json

    directory = Path(directory)
    with atomic_path(directory / "model.safetensors") as tmp:
        st_save_model(_unwrap(model), str(tmp))
    atomic_write_json(directory / "model.json", model_meta(model))


def load_model(path: str | os.PathLike, map_location: str = "cpu") -> nn.Module:
    """Load a model from a run directory or one of its checkpoints (`RUN/checkpoints/step-N`),
    safetensors only; any problem is a CheckpointError naming the file."""
    from safetensors.torch import load_model as st_load_model

    meta_path, weights = model_files(Path(path))
    meta = _read_model_json(meta_path)
    try:
        cfg = model_config_from_dict(meta["config"], source=str(meta_path))
        model = build_model(cfg, meta["task"], meta.get("num_labels"), init_std=None)  # weights follow
    except ConfigError as e:
        raise CheckpointError(f"{meta_path}: {e}" if str(meta_path) not in str(e) else str(e)) from None
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{meta_path}: not a model description ({e})") from None
    try:
        st_load_model(model, str(weights), strict=True, device=map_location)
    except Exception as e:  # noqa: BLE001 - safetensors and torch raise several types
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{weights}: does not hold the weights {meta_path.name} describes ({detail})") from None
    return model


def model_files(directory: Path) -> tuple[Path, Path]:
    """(model.json, model.safetensors) of a run directory, or of a checkpoint (which may rely on
    the run's model.json); CheckpointError when there are none."""
    meta_path, weights = directory / "model.json", directory / "model.safetensors"
    if not meta_path.is_file() and directory.parent.name == "checkpoints":
        meta_path = directory.parent.parent / "model.json"
    missing = [p.name for p in (meta_path, weights) if not p.is_file()]
    if missing:
        raise CheckpointError(f"{directory}: no {' + '.join(missing)} (not a run directory or checkpoint with a model)")
    return meta_path, weights


def _read_model_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or not isinstance(meta.get("task"), str):
        raise CheckpointError(f"{path}: needs a JSON object with 'task' and 'config'")
    return meta


def _unwrap(model: nn.Module) -> nn.Module:
    """The underlying module of a DDP/compiled wrapper."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def replace_config(cfg: ModelConfig, **changes) -> ModelConfig:
    """A copy of `cfg` with some fields changed."""
    return dataclasses.replace(cfg, **changes)

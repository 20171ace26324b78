"""Collators: a list of 1-D token blocks → a dict of batch tensors for one objective.

- `MLMCollator` — BERT masking (Devlin et al. 2019, §3.1): choose `mlm_probability` of the
  non-special tokens (or of the words, with whole-word masking); of those, 80% → [MASK],
  10% → a random non-special token, 10% unchanged. `labels` = original id there, -100 elsewhere.
  With `cls_sep` each window is first framed as fine-tuning will present text, `[CLS] … [SEP]`
  with [SEP] for the stream's [EOS] between documents, so the classifier's tokens are not unseen.
- `CLMCollator` — causal LM: `labels` = `input_ids` (the model shifts), -100 on padding.
- `SpanCorruptionCollator` — T5 (Raffel et al. 2020, §3.1.4): `noise_density` of the tokens in
  spans of mean length `mean_span_length`; each span becomes one sentinel in the input, and
  the target lists sentinel + span for each span, then [EOS].
- `ClassificationCollator` — right-pads variable-length GLUE examples.

Every collator accepts a `torch.Generator` (at construction or per call) so batches are
reproducible under a seed. `attention_mask` is None when a batch has no padding.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from nlpattn.errors import ConfigError

IGNORE_INDEX = -100


def as_long_tensor(example) -> torch.Tensor:
    """A 1-D LongTensor from a tensor, numpy array or list of ids."""
    if isinstance(example, torch.Tensor):
        return example.long()
    return torch.as_tensor(np.asarray(example, dtype=np.int64))


def bucket_width(n: int) -> int:
    """The smallest bucket width >= n: every width up to 16, then 8 widths per doubling
    (18, 20, ..., 32, 36, ..., 64, 72, ..., 128, 144, ...), so padding adds less than 1/8."""
    step = max(1, (1 << (max(n, 1).bit_length() - 1)) // 8)
    return -(-n // step) * step


def pad_batch(examples: Sequence, pad_id: int, pad_to_multiple_of: int | None = None, bucket: bool = False,
              max_width: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-pad 1-D id sequences to (B, T); the attention mask is None when nothing was padded.

    `bucket` pads to `bucket_width` of the longest, so a run meets a few dozen widths instead of
    one per length: under bf16 on CPU each new matrix shape costs kernel set-up and memory.
    A bucket never goes past `max_width` (the longest example still fits: inputs are truncated to it)."""
    seqs = [as_long_tensor(e) for e in examples]
    lengths = [len(s) for s in seqs]
    width = max(lengths) if lengths else 0
    if bucket:
        bucketed = bucket_width(width)
        width = bucketed if max_width is None else max(width, min(bucketed, max_width))
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    if all(n == width for n in lengths):
        return torch.stack(seqs), None
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


class _Collator:
    """Shared setup: special-id table and the default generator."""

    def __init__(self, tokenizer, generator: torch.Generator | None = None) -> None:
        self.tokenizer, self.generator = tokenizer, generator
        self.pad_id = tokenizer.pad_id
        self.is_special = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
        self.is_special[sorted(tokenizer.special_ids)] = True

    def _gen(self, generator: torch.Generator | None) -> torch.Generator | None:
        return generator if generator is not None else self.generator


class MLMCollator(_Collator):
    """Masked-LM batches: `input_ids`, `attention_mask`, `labels` (-100 where not predicted)."""

    def __init__(self, tokenizer, mlm_probability: float = 0.15, whole_word_mask: bool = False,
                 mask_fraction: float = 0.8, random_fraction: float = 0.1,
                 generator: torch.Generator | None = None, cls_sep: bool = False) -> None:
        super().__init__(tokenizer, generator)
        if cls_sep and None in (tokenizer.cls_id, tokenizer.sep_id):
            raise ConfigError("data.cls_sep needs a tokenizer with [CLS] and [SEP] tokens")
        self.cls_sep = cls_sep
        if not 0.0 < mlm_probability < 1.0:
            raise ConfigError(f"data.mlm_probability must be in (0, 1), got {mlm_probability}")
        if tokenizer.mask_id is None:
            raise ConfigError("MLM needs a tokenizer with a [MASK] token")
        self.p, self.whole_word_mask = mlm_probability, whole_word_mask
        self.mask_fraction, self.random_fraction = mask_fraction, random_fraction
        self.replacements = torch.nonzero(~self.is_special).flatten()  # random tokens: non-special
        starts, ends = tokenizer.word_tables() if whole_word_mask else (np.ones(1, bool), np.ones(1, bool))
        self.word_starts, self.word_ends = torch.from_numpy(starts), torch.from_numpy(ends)

    def __call__(self, examples: Sequence, generator: torch.Generator | None = None) -> dict:
        """Mask a batch of blocks."""
        gen = self._gen(generator)
        ids, attention_mask = pad_batch(examples, self.pad_id)
        if self.cls_sep:
            ids = frame_cls_sep(ids, attention_mask, self.tokenizer)
        candidates = ~self.is_special[ids]
        draw = torch.rand(ids.shape, generator=gen)
        if self.whole_word_mask:  # one draw per word: every token of a chosen word is masked
            draw = draw.gather(1, self.word_index(ids))
        masked = (draw < self.p) & candidates
        labels = torch.where(masked, ids, IGNORE_INDEX)
        how = torch.rand(ids.shape, generator=gen)
        to_mask = masked & (how < self.mask_fraction)
        to_random = masked & (how >= self.mask_fraction) & (how < self.mask_fraction + self.random_fraction)
        pick = torch.randint(len(self.replacements), ids.shape, generator=gen)
        input_ids = torch.where(to_mask, self.tokenizer.mask_id, ids)
        input_ids = torch.where(to_random, self.replacements[pick], input_ids)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def word_index(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) index of the word each token belongs to (0-based within its row)."""
        first = self.word_starts[ids]
        first[:, 1:] |= self.word_ends[ids[:, :-1]]
        first[:, 0] = True
        return first.long().cumsum(1) - 1


def frame_cls_sep(ids: torch.Tensor, attention_mask: torch.Tensor | None, tokenizer) -> torch.Tensor:
    """(B, T) windows as BERT inputs: [CLS] over the first token, [SEP] over the last real one
    and in place of every [EOS] (a document boundary reads as a segment boundary)."""
    ids = ids.clone()
    if tokenizer.eos_id is not None and tokenizer.eos_id != tokenizer.sep_id:
        ids[ids == tokenizer.eos_id] = tokenizer.sep_id
    last = ids.shape[1] - 1 if attention_mask is None else attention_mask.sum(1) - 1  # (B,) or scalar
    ids[torch.arange(ids.shape[0]), last] = tokenizer.sep_id
    ids[:, 0] = tokenizer.cls_id
    return ids


class CLMCollator(_Collator):
    """Causal-LM batches: `input_ids`, `attention_mask`, `labels` (= input_ids, -100 on padding)."""

    def __call__(self, examples: Sequence, generator: torch.Generator | None = None) -> dict:
        """Stack (or right-pad) the blocks; the model shifts labels internally."""
        ids, attention_mask = pad_batch(examples, self.pad_id)
        labels = ids.clone()
        if attention_mask is not None:
            labels[attention_mask == 0] = IGNORE_INDEX
        return {"input_ids": ids, "attention_mask": attention_mask, "labels": labels}


def random_partition(n: int, k: int, gen: torch.Generator | None) -> torch.Tensor:
    """Split n items into k non-empty segments uniformly at random; returns the k lengths."""
    cuts = torch.randperm(n - 1, generator=gen)[: k - 1].sort().values + 1
    edges = torch.cat([torch.zeros(1, dtype=torch.long), cuts, torch.tensor([n])])
    return edges.diff()


def span_noise_mask(length: int, noise_density: float, mean_span_length: float,
                    gen: torch.Generator | None = None) -> torch.Tensor:
    """T5's random-span mask: bool (length,), starts with non-noise, spans alternate."""
    n_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    n_spans = max(1, int(round(n_noise / mean_span_length)))
    noise = random_partition(n_noise, n_spans, gen)
    keep = random_partition(length - n_noise, n_spans, gen)
    lengths = torch.stack([keep, noise], dim=1).flatten()  # keep, noise, keep, noise, ...
    flags = torch.arange(2 * n_spans) % 2 == 1
    return flags.repeat_interleave(lengths)


def spans_needed(length: int, density: float, mean_span: float) -> int:
    """Number of noise spans (= sentinels) T5 span corruption makes in `length` tokens."""
    n_noise = min(max(int(round(length * density)), 1), length - 1)
    return max(1, int(round(n_noise / mean_span)))


class SpanCorruptionCollator(_Collator):
    """T5 span corruption: `input_ids`, `attention_mask`, `decoder_input_ids`, `labels`.

    `decoder_input_ids` = [BOS] + labels[:-1] (teacher forcing); padding in labels is -100.
    """

    def __init__(self, tokenizer, noise_density: float = 0.15, mean_span_length: float = 3.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(tokenizer, generator)
        if not 0.0 < noise_density < 1.0 or mean_span_length < 1.0:
            raise ConfigError(f"span corruption needs 0 < data.noise_density < 1 and "
                              f"data.mean_span_length >= 1; got {noise_density}, {mean_span_length}")
        self.density, self.mean_span = noise_density, mean_span_length
        self.sentinels = torch.tensor(tokenizer.sentinel_ids, dtype=torch.long)
        self.eos = torch.tensor([tokenizer.eos_id])

    def spans_needed(self, length: int) -> int:
        """Number of noise spans (= sentinels) a block of `length` tokens gets."""
        return spans_needed(length, self.density, self.mean_span)

    def _replace_spans(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each run of True in `mask` becomes one sentinel (numbered in order)."""
        starts = mask.clone()
        starts[1:] &= ~mask[:-1]
        span = starts.long().cumsum(0) - 1
        out = torch.where(starts, self.sentinels[span.clamp(min=0)], ids)
        return torch.cat([out[~mask | starts], self.eos])

    def __call__(self, examples: Sequence, generator: torch.Generator | None = None) -> dict:
        """Corrupt each block; inputs and targets padded to the batch maximum."""
        gen, inputs, targets = self._gen(generator), [], []
        for example in examples:
            ids = as_long_tensor(example)
            if self.spans_needed(len(ids)) > len(self.sentinels):
                raise ConfigError(f"span corruption of {len(ids)} tokens needs {self.spans_needed(len(ids))} "
                                  f"sentinels; the tokenizer has {len(self.sentinels)} "
                                  f"(train it with tokenizer.n_sentinels >= {self.spans_needed(len(ids))})")
            noise = span_noise_mask(len(ids), self.density, self.mean_span, gen)
            inputs.append(self._replace_spans(ids, noise))
            targets.append(self._replace_spans(ids, ~noise))
        input_ids, attention_mask = pad_batch(inputs, self.pad_id)
        labels, target_mask = pad_batch(targets, self.pad_id)
        if target_mask is not None:
            labels[target_mask == 0] = IGNORE_INDEX
        start = torch.full((len(labels), 1), self.tokenizer.bos_id, dtype=torch.long)
        decoder_input_ids = torch.cat([start, labels[:, :-1]], dim=1)
        decoder_input_ids[decoder_input_ids == IGNORE_INDEX] = self.pad_id
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "decoder_input_ids": decoder_input_ids, "labels": labels}


class ClassificationCollator:
    """GLUE batches from `encode_glue` dicts: padded ids, attention mask, token types, labels."""

    def __init__(self, pad_id: int, is_regression: bool = False, pad_to_multiple_of: int | None = None,
                 padding: str = "longest", max_length: int | None = None) -> None:
        self.pad_id, self.is_regression, self.multiple = pad_id, is_regression, pad_to_multiple_of
        self.bucket = padding == "bucket"  # else "longest": the batch's longest example
        self.max_length = max_length  # the encoder's truncation length: no bucket is wider

    def __call__(self, examples: Sequence[dict], generator: torch.Generator | None = None) -> dict:
        """Right-pad with pad_id; labels float for regression, long otherwise (omitted if absent)."""
        widths = dict(pad_to_multiple_of=self.multiple, bucket=self.bucket, max_width=self.max_length)
        ids, mask = pad_batch([e["input_ids"] for e in examples], self.pad_id, **widths)
        if mask is None:
            mask = torch.ones_like(ids)
        batch = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in examples[0]:
            types, _ = pad_batch([e["token_type_ids"] for e in examples], 0, **widths)
            batch["token_type_ids"] = types
        labels = [e.get("label") for e in examples]
        if all(label is not None for label in labels):
            dtype = torch.float32 if self.is_regression else torch.long
            batch["labels"] = torch.tensor(labels, dtype=dtype)
        return batch

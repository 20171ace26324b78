"""Collators: masking statistics within 4 standard errors of spec, exact span-corruption bookkeeping, padding."""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest
import torch

from nlpattn.config import TokenizerConfig
from nlpattn.data.blocks import BlockLoader, RandomBlocks
from nlpattn.data.collate import (IGNORE_INDEX, ClassificationCollator, CLMCollator, MLMCollator,
                                  SpanCorruptionCollator, span_noise_mask)
from nlpattn.data.corpus import build_token_cache
from nlpattn.errors import ConfigError
from nlpattn.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO / "data" / "wikitext-2" / "valid.txt.gz"


@pytest.fixture(scope="module")
def tok():
    lines = gzip.decompress(WIKI.read_bytes()).decode("utf-8").splitlines(keepends=True)[:1500]
    return train_tokenizer(TokenizerConfig(kind="wordpiece", vocab_size=1500, n_sentinels=40), texts=lines)


@pytest.fixture(scope="module")
def blocks(tok, tmp_path_factory):
    cache = build_token_cache([WIKI], tok, tmp_path_factory.mktemp("cache") / "c")
    return RandomBlocks(cache, 128, seed=0)


def batches(blocks, collate, n: int, batch_size: int = 8):
    loader = BlockLoader(blocks, batch_size, collate, seed=1)
    return [next(loader) for _ in range(n)]


def mlm_counts(tok, batch_list):
    special = torch.tensor(sorted(tok.special_ids))
    total = masked = as_mask = unchanged = 0
    for b in batch_list:
        chosen = b["labels"] != IGNORE_INDEX
        total += int((~torch.isin(torch.where(chosen, b["labels"], b["input_ids"]), special)).sum())
        masked += int(chosen.sum())
        as_mask += int((b["input_ids"][chosen] == tok.mask_id).sum())
        unchanged += int((b["input_ids"][chosen] == b["labels"][chosen]).sum())
    return total, masked, as_mask, unchanged


def sum_squared_word_sizes(tok, collate, batch_list) -> int:
    """Σ (maskable tokens per word)²: the variance of the masked count is p(1-p) times this."""
    special = torch.tensor(sorted(tok.special_ids))
    total = 0
    for b in batch_list:
        ids = torch.where(b["labels"] != IGNORE_INDEX, b["labels"], b["input_ids"])
        word, keep = collate.word_index(ids), ~torch.isin(ids, special)
        for row in range(ids.shape[0]):
            total += int((torch.bincount(word[row][keep[row]]) ** 2).sum())
    return total


def within_sigmas(count: int, n: int, p: float, var_n: float | None = None, k: float = 4.0) -> bool:
    """|count/n - p| within k standard errors of a binomial (variance p(1-p)·var_n / n²)."""
    sigma = math.sqrt(p * (1 - p) * (var_n if var_n is not None else n)) / n
    print(f"rate {count / n:.4f} vs {p} (n={n}, sigma {sigma:.2g}, {abs(count / n - p) / sigma:.1f} sigma)")
    return abs(count / n - p) < k * sigma


@pytest.mark.parametrize("whole_word", [False, True])
def test_mlm_rates_within_four_standard_errors(tok, blocks, whole_word):
    collate = MLMCollator(tok, mlm_probability=0.15, whole_word_mask=whole_word)
    got = batches(blocks, collate, 200)
    total, masked, as_mask, unchanged = mlm_counts(tok, got)
    randomised = masked - as_mask - unchanged
    # one draw per token, or per word: a word of k tokens adds k² to the variance's sum
    var_n = sum_squared_word_sizes(tok, collate, got) if whole_word else total
    assert var_n > (1.2 * total if whole_word else 0)  # words of several pieces do occur
    assert within_sigmas(masked, total, 0.15, var_n)
    assert within_sigmas(as_mask, masked, 0.8)  # then one draw per masked token
    assert within_sigmas(randomised, masked, 0.1)
    assert within_sigmas(unchanged, masked, 0.1)
    for b in got:
        assert b["attention_mask"] is None
        chosen = b["labels"] != IGNORE_INDEX
        assert not any(int(i) in tok.special_ids for i in b["labels"][chosen])  # specials never masked
        random_tokens = b["input_ids"][chosen & (b["input_ids"] != b["labels"]) & (b["input_ids"] != tok.mask_id)]
        assert not any(int(i) in tok.special_ids for i in random_tokens)


def test_other_mlm_probability(tok, blocks):
    total, masked, _, _ = mlm_counts(tok, batches(blocks, MLMCollator(tok, mlm_probability=0.3), 100))
    assert abs(masked / total - 0.3) < 0.01


def test_whole_word_masking_masks_whole_words(tok, blocks):
    collate = MLMCollator(tok, whole_word_mask=True)
    partial_words = 0
    for b in batches(blocks, collate, 30):
        words = collate.word_index(torch.where(b["labels"] != IGNORE_INDEX, b["labels"], b["input_ids"]))
        chosen = b["labels"] != IGNORE_INDEX
        for row in range(len(words)):
            for w in words[row][chosen[row]].unique():
                in_word = words[row] == w
                partial_words += int(not bool(chosen[row][in_word].all()))
    assert partial_words == 0
    ids = torch.tensor([tok.encode(" the lobsters found shelter")])
    word_of = collate.word_index(ids)[0].tolist()
    assert word_of == tok.word_ids(" the lobsters found shelter")[1]
    assert len(set(word_of)) == 4 and len(word_of) > 4  # some word was split into pieces


def test_mlm_is_deterministic_under_a_generator(tok, blocks):
    samples = [blocks[i] for i in range(4)]
    collate = MLMCollator(tok)
    a = collate(samples, generator=torch.Generator().manual_seed(5))
    b = collate(samples, generator=torch.Generator().manual_seed(5))
    c = collate(samples, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["labels"], c["labels"])


def test_padding_is_never_masked_and_has_attention_mask(tok):
    examples = [tok.encode("the cat sat on the mat", add_special_tokens=True), tok.encode("a b", add_special_tokens=True)]
    collate = MLMCollator(tok, mlm_probability=0.9, generator=torch.Generator().manual_seed(0))
    out = collate(examples)
    assert out["attention_mask"].tolist()[1] == [1] * len(examples[1]) + [0] * (len(examples[0]) - len(examples[1]))
    pads = out["attention_mask"] == 0
    assert (out["labels"][pads] == IGNORE_INDEX).all() and (out["input_ids"][pads] == tok.pad_id).all()
    assert (out["labels"][:, 0] == IGNORE_INDEX).all()  # [CLS] is special


def test_cls_sep_frames_windows_as_bert_inputs(tok, blocks):
    samples = [blocks[i] for i in range(64)]
    assert any(int(tok.eos_id) in s.tolist()[1:-1] for s in samples)  # some window crosses a document boundary
    framed = MLMCollator(tok, cls_sep=True)(samples, generator=torch.Generator().manual_seed(3))
    plain = MLMCollator(tok)(samples, generator=torch.Generator().manual_seed(3))
    ids = torch.where(framed["labels"] != IGNORE_INDEX, framed["labels"], framed["input_ids"])
    assert (ids[:, 0] == tok.cls_id).all() and (ids[:, -1] == tok.sep_id).all()
    assert not (ids == tok.eos_id).any()
    for row, s in enumerate(samples):
        inner = s[1:-1]
        want = torch.where(inner == tok.eos_id, tok.sep_id, inner)
        assert torch.equal(ids[row, 1:-1], want)  # nothing else moves
    special = torch.isin(ids, torch.tensor(sorted(tok.special_ids)))
    assert (framed["labels"][special] == IGNORE_INDEX).all()  # the frame is never masked
    # the same masking draws: positions the frame leaves alone are masked as without it
    inner = ~special & ~torch.isin(torch.stack(samples).long(), torch.tensor(sorted(tok.special_ids)))
    assert torch.equal(framed["labels"][inner], plain["labels"][inner])


def test_cls_sep_puts_sep_after_the_last_real_token_of_a_padded_row(tok):
    examples = [torch.tensor(tok.encode("the cat sat on the mat")), torch.tensor(tok.encode("a dog ran"))]
    out = MLMCollator(tok, mlm_probability=0.01, cls_sep=True, generator=torch.Generator().manual_seed(0))(examples)
    n = len(examples[1])
    assert out["input_ids"][1, n - 1] == tok.sep_id and (out["input_ids"][1, n:] == tok.pad_id).all()
    assert out["input_ids"][0, -1] == tok.sep_id and (out["input_ids"][:, 0] == tok.cls_id).all()


def test_clm_labels_equal_inputs_and_ignore_padding(tok, blocks):
    samples = [blocks[i] for i in range(3)]
    out = CLMCollator(tok)(samples)
    assert out["attention_mask"] is None
    assert torch.equal(out["labels"], out["input_ids"]) and torch.equal(out["input_ids"][1], samples[1])
    out = CLMCollator(tok)([samples[0], samples[1][:50]])
    assert out["attention_mask"][1].sum() == 50
    assert (out["labels"][1, 50:] == IGNORE_INDEX).all() and torch.equal(out["labels"][1, :50], samples[1][:50])


def reconstruct(inputs: list[int], targets: list[int], sentinels: list[int], eos: int) -> list[int]:
    """Put the target spans back where their sentinels are in the input."""
    spans, current = {}, None
    for t in targets[:-1]:
        if t in sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs[:-1]:
        out.extend(spans[t] if t in sentinels else [t])
    assert inputs[-1] == eos and targets[-1] == eos
    return out


def test_span_corruption_matches_t5_spec(tok, blocks):
    collate = SpanCorruptionCollator(tok, noise_density=0.15, mean_span_length=3.0)
    big = RandomBlocks(blocks.cache, 512, seed=2)
    loader = BlockLoader(big, 4, collate, seed=0)
    noise_tokens = spans = total = expected_noise = expected_spans = 0
    for _ in range(10):
        b = next(loader)
        assert b["attention_mask"] is None
        assert torch.equal(b["decoder_input_ids"][:, 0], torch.full((4,), tok.bos_id))
        assert torch.equal(b["decoder_input_ids"][:, 1:], b["labels"][:, :-1])
        for j in range(4):
            inputs, targets = b["input_ids"][j].tolist(), b["labels"][j].tolist()
            original = big[(loader.batches - 1) * 4 + j].tolist()
            assert reconstruct(inputs, targets, tok.sentinel_ids, tok.eos_id) == original
            assert inputs[0] not in tok.sentinel_ids and targets[0] == tok.sentinel_ids[0]
            n_spans = sum(t in tok.sentinel_ids for t in inputs)
            noise_tokens += len(targets) - 1 - n_spans
            spans += n_spans
            total += len(original)
            expected_noise += round(0.15 * len(original))  # T5: a fixed count per sequence, not a draw
            expected_spans += round(round(0.15 * len(original)) / 3.0)
    assert noise_tokens == expected_noise and spans == expected_spans
    assert abs(noise_tokens / total - 0.15) <= 0.5 / 512 and abs(noise_tokens / spans - 3.0) < 0.05


def test_span_mask_statistics_and_sentinel_shortage(tok):
    gen = torch.Generator().manual_seed(0)
    run_lengths = []
    for _ in range(200):
        mask = span_noise_mask(128, 0.15, 3.0, gen)
        assert int(mask.sum()) == 19 and not mask[0] and mask[-1]  # round(0.15 * 128) noise tokens
        edges = [0, *(torch.nonzero(mask[1:] != mask[:-1]).flatten() + 1).tolist(), len(mask)]
        runs = [(bool(mask[a]), b - a) for a, b in zip(edges, edges[1:])]
        assert len(runs) == 12 and [r[0] for r in runs] == [False, True] * 6  # 6 spans, alternating
        run_lengths += [n for noisy, n in runs if noisy]
    assert min(run_lengths) >= 1 and max(run_lengths) > 6  # random lengths, not fixed 3s
    assert abs(sum(run_lengths) / len(run_lengths) - 3.0) < 0.2
    with pytest.raises(ConfigError, match="n_sentinels"):
        SpanCorruptionCollator(tok, noise_density=0.5, mean_span_length=1.0)([torch.arange(11, 211)])


def test_classification_collator_pads_and_types_labels(tok):
    from nlpattn.data.glue import GlueExample, encode_glue

    examples = [GlueExample("a", "the cat sat", "on the mat", 1.5), GlueExample("b", "dogs", "run", 4.0)]
    enc = encode_glue(examples, tok, max_length=32)
    batch = ClassificationCollator(tok.pad_id, is_regression=True, pad_to_multiple_of=8)(enc)
    assert batch["input_ids"].shape == (2, 16) and batch["labels"].dtype == torch.float32
    assert batch["attention_mask"][1].sum() == len(enc[1]["input_ids"])
    assert batch["token_type_ids"][0].tolist()[: len(enc[0]["input_ids"])] == enc[0]["token_type_ids"]
    classes = ClassificationCollator(tok.pad_id)([dict(e, label=1) for e in enc])
    assert classes["labels"].dtype == torch.long
    unlabeled = ClassificationCollator(tok.pad_id)([dict(e, label=None) for e in enc])
    assert "labels" not in unlabeled


def test_bucket_widths_are_few_and_waste_less_than_an_eighth():
    from nlpattn.data.collate import bucket_width

    widths = [bucket_width(n) for n in range(1, 513)]
    assert all(n <= w < n * 9 / 8 for n, w in zip(range(1, 513), widths))
    assert len(set(widths)) == 56  # 1..16, then 8 widths per doubling up to 512
    assert [bucket_width(n) for n in (1, 9, 17, 33, 64, 65, 100, 129, 250, 257)] == \
        [1, 9, 18, 36, 64, 72, 104, 144, 256, 288]


def test_bucket_padding_caps_at_max_length_and_keeps_the_masks():
    short = [{"input_ids": [5] * n, "token_type_ids": [0] * n, "label": 1} for n in (37, 20)]
    longest = ClassificationCollator(0)(short)
    bucket = ClassificationCollator(0, padding="bucket")(short)
    assert longest["input_ids"].shape == (2, 37) and bucket["input_ids"].shape == (2, 40)
    assert bucket["attention_mask"].sum(1).tolist() == [37, 20]
    assert torch.equal(bucket["input_ids"][:, :37], longest["input_ids"])
    assert bucket["token_type_ids"].shape == (2, 40)
    capped = ClassificationCollator(0, padding="bucket", max_length=38)(short)
    assert capped["input_ids"].shape == (2, 38)  # the bucket (40) would pass the model's inputs' limit


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_pretraining_passes_cls_sep_to_its_masking(tok, objective):
    from nlpattn.config import load_config
    from nlpattn.train.pretrain import make_collator

    cfg = load_config(None, [f"objective={objective}", "data.cls_sep=true"])
    assert make_collator(cfg, tok).cls_sep and not make_collator(load_config(None, [f"objective={objective}"]), tok).cls_sep

"""Generation users expect: left-padded batches equal one-by-one, greedy and repetition penalty
equal transformers' GPT-2 `generate`, top-k / top-p against hand-computed cases and
transformers' warpers, stop strings, seeds, beam search against brute force, bad settings."""
import itertools
import math

import pytest
import torch
import transformers

from nlpattn.config import ModelConfig
from nlpattn.errors import ConfigError
from nlpattn.generate import (SamplingConfig, apply_repetition_penalty, beam_search, filter_logits, generate,
                              generate_text, left_pad)
from nlpattn.models import build_model
from test_train_utils import sharpen

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only cost
VOCAB = 30  # letters a..z = ids 0..25, then [PAD] [BOS] [EOS] and one spare
PAD, BOS, EOS = 26, 27, 28


class Letters:
    """A tokenizer stand-in: id i ↔ chr(97 + i); the special ids decode to nothing."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def encode(self, text):
        return [ord(c) - 97 for c in text]

    def decode(self, ids):
        return "".join(chr(97 + i) for i in ids if i < 26)


def sharpened(model, seed=0):
    """`sharpen` (peaked distributions, no near-ties) in eval mode."""
    return sharpen(model, seed).eval()


def decoder(body="transformer", **kw):
    cfg = dict(body=body, arch="decoder", vocab_size=VOCAB, d_model=32, n_heads=4, d_ff=64, n_layers=2,
               max_len=48, dropout=0.0)
    if body != "transformer":
        cfg["position"] = "none"
    cfg.update(kw)
    torch.manual_seed(0)
    return sharpened(build_model(ModelConfig(**cfg), "clm"))


PROMPTS = [[3, 7, 1], [5, 2, 9, 9, 4, 11, 0], [20, 6, 6, 13, 2]]
MODELS = {"learned": dict(), "sinusoidal": dict(position="sinusoidal"), "rope": dict(position="rope"),
          "cnn-se-spatial": dict(body="cnn", se=True, spatial=True), "gru": dict(body="gru")}


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_left_padded_batch_equals_one_by_one(name, use_cache):
    model = decoder(**MODELS[name])
    ids, mask = left_pad(PROMPTS, PAD)
    assert ids.shape == (3, 7) and mask.sum(1).tolist() == [3, 7, 5] and ids[0, :4].eq(PAD).all()
    for penalty in (1.0, 1.5):  # the penalty must not count the padding
        cfg = SamplingConfig(max_new_tokens=12, temperature=0, use_cache=use_cache, repetition_penalty=penalty)
        batched = generate(model, ids, cfg, attention_mask=mask)
        assert batched.shape == (3, 7 + 12) and torch.equal(batched[:, :7], ids)
        for row, prompt in enumerate(PROMPTS):
            alone = generate(model, torch.tensor([prompt]), cfg)
            assert batched[row, 7:].tolist() == alone[0, len(prompt):].tolist(), (row, penalty)
    assert len(set(map(tuple, batched[:, 7:].tolist()))) == 3  # three different continuations


def small_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=40,
                                  bos_token_id=None, eos_token_id=None, attn_implementation="eager")
    return sharpened(transformers.GPT2LMHeadModel(cfg))


@pytest.mark.parametrize("penalty", [1.0, 1.6])
def test_greedy_and_repetition_penalty_equal_transformers_gpt2_generate(penalty):
    from nlpattn.interop.hf import from_transformers

    hf = small_gpt2()
    ours = from_transformers(hf).eval()
    ids = torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False,
                             repetition_penalty=penalty, pad_token_id=0)
    for use_cache in (True, False):
        cfg = SamplingConfig(max_new_tokens=20, temperature=0, repetition_penalty=penalty, use_cache=use_cache)
        assert generate(ours, ids, cfg).tolist() == theirs.tolist()
    unpenalised = generate(ours, ids, SamplingConfig(max_new_tokens=20, temperature=0))
    assert (penalty == 1.0) == torch.equal(unpenalised, theirs)  # the penalty changes the output


def test_left_padded_greedy_equals_transformers_left_padded():
    from nlpattn.interop.hf import from_transformers

    hf = small_gpt2()
    ours = from_transformers(hf).eval()
    ids, mask = left_pad([[5, 60, 7], [1, 2, 3, 4, 80, 9], [33, 44]], 0)
    with torch.no_grad():
        theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=False, pad_token_id=0)
    cfg = SamplingConfig(max_new_tokens=15, temperature=0, pad_id=0)
    assert generate(ours, ids, cfg, attention_mask=mask).tolist() == theirs.tolist()


def test_top_k_and_top_p_keep_the_hand_computed_tokens():
    logits = torch.tensor([[0.15, 0.5, 0.1, 0.25]]).log()  # ranks: 1 (0.5), 3 (0.25), 0 (0.15), 2 (0.1)

    def kept(top_k=None, top_p=None):
        return torch.isfinite(filter_logits(logits, top_k, top_p))[0].nonzero().flatten().tolist()

    assert kept(top_k=1) == [1] and kept(top_k=2) == [1, 3] and kept(top_k=3) == [0, 1, 3]
    assert kept(top_k=4) == kept(top_k=10) == [0, 1, 2, 3]
    assert kept(top_p=0.3) == [1]  # 0.5 alone reaches 0.3
    assert kept(top_p=0.6) == [1, 3]  # 0.5 < 0.6 ≤ 0.75
    assert kept(top_p=0.8) == [0, 1, 3]  # 0.75 < 0.8 ≤ 0.9
    assert kept(top_p=0.95) == [0, 1, 2, 3] and kept(top_p=1.0) == [0, 1, 2, 3]
    assert kept(top_k=3, top_p=0.6) == [1, 3]
    ties = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    assert torch.isfinite(filter_logits(ties, 1, None))[0].tolist() == [False, True, True, False]
    kept_values = filter_logits(logits, 2, None)[0]
    assert kept_values[1] == logits[0, 1] and kept_values[3] == logits[0, 3]  # kept logits unchanged


def test_filters_equal_transformers_warpers():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 50, generator=g) * 3
    for k in (1, 2, 5, 17, 50):
        theirs = TopKLogitsWarper(k)(None, logits.clone())
        assert torch.equal(filter_logits(logits, k, None), theirs), k
    for p in (0.05, 0.3, 0.5, 0.9, 0.99):
        theirs = TopPLogitsWarper(p)(None, logits.clone())
        assert torch.equal(torch.isinf(filter_logits(logits, None, p)), torch.isinf(theirs)), p


def test_repetition_penalty_hand_computed_and_equal_transformers():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    padded = apply_repetition_penalty(logits, torch.tensor([[3, 0]]), 2.0, mask=torch.tensor([[0, 1]]))
    assert padded.tolist() == [[1.0, -1.0, 0.5, 3.0]]  # the padded 3 does not count
    g = torch.Generator().manual_seed(1)
    logits, ids = torch.randn(4, 40, generator=g), torch.randint(0, 40, (4, 12), generator=g)
    for penalty in (0.7, 1.3, 2.0):
        theirs = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
        assert torch.equal(apply_repetition_penalty(logits, ids, penalty), theirs)


def test_stop_strings_end_rows_and_cut_the_text():
    model, tok = decoder(), Letters()
    ids, mask = left_pad([tok.encode("abc"), tok.encode("zyxwv")], PAD)
    free = generate(model, ids, SamplingConfig(max_new_tokens=16, temperature=0), attention_mask=mask)
    new = [row[5:] for row in free.tolist()]
    texts = [tok.decode(row) for row in new]
    assert all(t < 26 for t in new[0][:3])  # letters, no eos before the stop string
    stop = tok.decode(new[0][1:3])  # new tokens 2-3 of the first row
    end = next(k for k in range(1, 17) if stop in tok.decode(new[0][:k]))  # tokens until it is complete
    assert 2 <= end <= 3
    cfg = SamplingConfig(max_new_tokens=16, temperature=0, stop=[stop], pad_id=PAD)
    out = generate(model, ids, cfg, attention_mask=mask, decode=tok.decode)
    assert out[0, 5:5 + end].tolist() == new[0][:end]
    assert out[0, 5 + end:].eq(PAD).all()  # the stopped row is filled
    if stop not in texts[1]:  # the other row runs on to max_new_tokens
        assert out.shape[1] == 5 + 16 and out[1, 5:].tolist() == new[1]
    else:
        assert out.shape[1] < 5 + 16  # both rows stopped early
    results = generate_text(model, tok, ["abc", "zyxwv"], cfg)
    assert results[0].text == texts[0][:texts[0].index(stop)] and results[0].finish == "stop"
    assert results[0].prompt == "abc" and stop not in results[0].text
    with pytest.raises(ConfigError, match="'stop' needs a tokenizer"):
        generate(model, ids, cfg, attention_mask=mask)


def test_eos_ends_a_row_and_max_new_tokens_is_exact():
    model, tok = decoder(), Letters()
    prompt = torch.tensor([tok.encode("hello")])
    free = generate(model, prompt, SamplingConfig(max_new_tokens=9, temperature=0))
    assert free.shape == (1, 5 + 9)
    eos = int(free[0, 8])  # pretend the 4th new token is eos
    out = generate(model, prompt, SamplingConfig(max_new_tokens=9, temperature=0, eos_id=eos))
    assert out[0, :9].tolist() == free[0, :9].tolist() and out.shape[1] <= 14
    assert generate(model, prompt, SamplingConfig(max_new_tokens=1, temperature=0)).shape == (1, 6)


def test_same_seed_same_sample():
    model = decoder()
    ids, mask = left_pad(PROMPTS, PAD)

    def sample(seed, **kw):
        cfg = SamplingConfig(max_new_tokens=20, temperature=1.0, top_k=20, top_p=0.95, seed=seed, **kw)
        return generate(model, ids, cfg, attention_mask=mask)

    first = sample(7)
    assert torch.equal(first, sample(7)) and torch.equal(first, sample(7, use_cache=False))
    assert not torch.equal(first, sample(8))
    greedy = generate(model, ids, SamplingConfig(max_new_tokens=20, temperature=0), attention_mask=mask)
    assert not torch.equal(first, greedy)  # it does sample


@pytest.mark.parametrize("key,value", [("max_new_tokens", 0), ("max_new_tokens", -3), ("temperature", -0.5),
                                       ("temperature", math.inf), ("top_k", 0), ("top_p", 0.0), ("top_p", 1.5),
                                       ("repetition_penalty", 0.0), ("repetition_penalty", -1.0), ("stop", [""])])
def test_bad_settings_are_refused_naming_the_key(key, value):
    model = decoder()
    with pytest.raises(ConfigError, match=f"key '{key}'") as e:
        generate(model, torch.tensor([[1, 2]]), SamplingConfig(**{key: value}))
    assert "\n" not in str(e.value)


def test_bad_prompts_are_refused():
    model, tok = decoder(), Letters()
    with pytest.raises(ConfigError, match="at least one token"):
        left_pad([[1, 2], []], PAD)
    with pytest.raises(ConfigError, match="key 'prompt' is 48 tokens; the model's max_len is 48"):
        generate_text(model, tok, ["a" * 48])


def brute_force_best(model, src, bos, eos, vocab, max_new, length_penalty):
    """(score, tokens) of every target sequence up to max_new tokens: ending in eos, or max_new long."""
    others = [t for t in range(vocab) if t != eos]
    candidates = [list(p) + [eos] for n in range(max_new) for p in itertools.product(others, repeat=n)]
    candidates += [list(p) for p in itertools.product(others, repeat=max_new)]
    scored = []
    with torch.no_grad():
        memory = model.encode(src).hidden
        for seq in candidates:
            dec = torch.tensor([[bos] + seq[:-1]])
            logp = torch.log_softmax(model.head(model.decode(dec, memory).hidden)[0][0], dim=-1)  # (T, V)
            total = sum(logp[i, t].item() for i, t in enumerate(seq))
            scored.append((total / len(seq) ** length_penalty, seq))
    return sorted(scored, reverse=True)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("seed", [9, 10])
def test_beam_search_finds_the_brute_force_best(seed, length_penalty):
    # Seed 9: the best is [eos] at penalty 0, an unfinished [2, 2, 2] at 1 and 2; seed 10: [eos]
    # at 0 and 1, [0, 1, eos] at 2 — which a single beam misses.
    cfg = ModelConfig(arch="encoder-decoder", vocab_size=4, d_model=16, n_heads=2, d_ff=32, n_layers=1,
                      max_len=16, dropout=0.0)
    torch.manual_seed(0)
    model = sharpened(build_model(cfg, "seq2seq"), seed=seed)
    src = torch.tensor([[1, 2, 2, 1, 3]])
    ranked = brute_force_best(model, src, bos=0, eos=3, vocab=4, max_new=3, length_penalty=length_penalty)
    assert len(ranked) == 1 + 3 + 9 + 27 and ranked[0][0] - ranked[1][0] > 1e-3  # a clear winner
    out = beam_search(model, src, bos_id=0, eos_id=3, num_beams=27, max_new_tokens=3,
                      length_penalty=length_penalty)
    assert out[0, 0] == 0 and out[0, 1:].tolist() == ranked[0][1]
    one = beam_search(model, src, bos_id=0, eos_id=3, num_beams=1, max_new_tokens=3,
                      length_penalty=length_penalty)[0, 1:].tolist()
    assert one in [seq for _, seq in ranked]  # one beam: still a valid hypothesis
    if (seed, length_penalty) == (10, 2.0):
        assert ranked[0][1] == [0, 1, 3] and one != ranked[0][1]
    with pytest.raises(ConfigError, match="num_beams"):
        beam_search(model, src, bos_id=0, eos_id=3, num_beams=0)


def test_generate_cache_benchmark_smoke(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generate_cache.py"
    spec = importlib.util.spec_from_file_location("generate_cache", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gc.json"
    assert bench.main(["--new-tokens", "6", "--d-model", "16", "--layers", "1", "--heads", "2", "--vocab", "40",
                       "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["same_tokens"] and set(report["results"]) == {"cache", "no cache"}
    assert report["speedup"] == pytest.approx(report["results"]["cache"]["tokens_per_s"]
                                              / report["results"]["no cache"]["tokens_per_s"])
    assert "| cache |" in capsys.readouterr().out

"""Model behaviour: generation with the KV cache, RoPE, bad input, save/load, seq2seq."""
import pytest
import torch

from nlpattn.attention import KVCache
from nlpattn.config import ModelConfig
from nlpattn.generate import SamplingConfig, beam_search, generate
from nlpattn.models import build_model, load_model, save_model


def tiny(**kw):
    base = dict(vocab_size=50, d_model=32, n_heads=4, d_ff=64, n_layers=2, max_len=48, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope"])
def test_kv_cached_generation_equals_full_recomputation(position):
    torch.manual_seed(0)
    model = build_model(tiny(arch="decoder", position=position), "clm").eval()
    prompt = torch.randint(0, 50, (2, 5))
    cached = generate(model, prompt, SamplingConfig(max_new_tokens=20, temperature=0, use_cache=True))
    full = generate(model, prompt, SamplingConfig(max_new_tokens=20, temperature=0, use_cache=False))
    assert torch.equal(cached, full)
    sampled_a = generate(model, prompt, SamplingConfig(max_new_tokens=10, top_p=0.9, top_k=20, seed=3))
    sampled_b = generate(model, prompt, SamplingConfig(max_new_tokens=10, top_p=0.9, top_k=20, seed=3,
                                                       use_cache=False))
    assert torch.equal(sampled_a, sampled_b)


def test_cached_logits_equal_full_logits():
    torch.manual_seed(0)
    model = build_model(tiny(arch="decoder", position="rope"), "clm").eval()
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache()
        first = model(ids[:, :4], cache=cache).logits
        rest = [model(ids[:, t:t + 1], cache=cache).logits for t in range(4, 9)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-5, rtol=1e-5)


def test_rope_is_relative():
    # Shifting every position by the same amount leaves q·k scores unchanged.
    from nlpattn.attention import RotaryEmbedding

    rope = RotaryEmbedding(8, 64)
    q, k = torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8)
    s0 = rope(q, 0) @ rope(k, 0).transpose(-1, -2)
    s7 = rope(q, 7) @ rope(k, 7).transpose(-1, -2)
    torch.testing.assert_close(s0, s7, atol=1e-5, rtol=1e-5)


def test_seq2seq_beam_search_and_cache():
    torch.manual_seed(0)
    model = build_model(tiny(arch="encoder-decoder"), "seq2seq").eval()
    src = torch.randint(3, 50, (1, 8))
    out = beam_search(model, src, bos_id=1, eos_id=2, num_beams=3, max_new_tokens=6)
    assert out.shape[0] == 1 and out[0, 0] == 1 and 2 <= out.shape[1] <= 8
    # decoding step by step with the cache equals teacher-forced decoding
    tgt = torch.randint(3, 50, (1, 6))
    with torch.no_grad():
        full = model(src, decoder_input_ids=tgt).logits
        memory = model.encode(src).hidden
        cache = KVCache()
        steps = [model.head(model.decode(tgt[:, t:t + 1], memory, cache=cache).hidden)[0] for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_token_outputs():
    torch.manual_seed(0)
    model = build_model(tiny(), "mlm").eval()
    ids = torch.randint(1, 50, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        torch.testing.assert_close(model(padded, mask).logits[:, :6], model(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("call,match", [
    (lambda m: m(torch.tensor([[1, 2, 50]])), "token id 50.*vocab_size=50"),
    (lambda m: m(torch.tensor([[1, -1]])), "token id -1"),
    (lambda m: m(torch.ones(1, 49, dtype=torch.long)), "length 49 > max_len=48"),
    (lambda m: m(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4)), "attention_mask shape"),
    (lambda m: m(torch.ones(5, dtype=torch.long)), "must be 2-D"),
])
def test_bad_input_gives_clear_value_error(call, match):
    model = build_model(tiny(), "mlm")
    with pytest.raises(ValueError, match=match):
        call(model)


@pytest.mark.parametrize("task,arch", [("mlm", "encoder"), ("clm", "decoder"), ("seq2seq", "encoder-decoder"),
                                       ("classification", "encoder"), ("regression", "decoder")])
def test_save_and_load_round_trip(tmp_path, task, arch):
    torch.manual_seed(0)
    model = build_model(tiny(arch=arch), task).eval()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path).eval()
    ids = torch.randint(0, 50, (2, 7))
    kwargs = {"decoder_input_ids": ids[:, :4]} if task == "seq2seq" else {}
    with torch.no_grad():
        torch.testing.assert_close(model(ids, **kwargs).logits, loaded(ids, **kwargs).logits)
    assert not list(tmp_path.glob(".*tmp"))


def test_load_model_missing_files(tmp_path):
    from nlpattn.errors import CheckpointError

    with pytest.raises(CheckpointError, match=str(tmp_path)):
        load_model(tmp_path)


def test_output_attentions_shapes():
    model = build_model(tiny(arch="encoder-decoder", n_decoder_layers=3), "seq2seq").eval()
    out = model(torch.randint(0, 50, (2, 7)), decoder_input_ids=torch.randint(0, 50, (2, 4)),
                output_attentions=True)
    assert [a.shape for a in out.encoder_attentions] == [(2, 4, 7, 7)] * 2
    assert [a.shape for a in out.attentions] == [(2, 4, 4, 4)] * 3
    assert [a.shape for a in out.cross_attentions] == [(2, 4, 4, 7)] * 3


@pytest.mark.parametrize("body", ["lstm", "gru", "cnn"])
def test_generation_works_for_bodies_without_cache(body):
    torch.manual_seed(0)
    model = build_model(tiny(arch="decoder", body=body, position="none"), "clm").eval()
    prompt = torch.randint(0, 50, (1, 4))
    out = generate(model, prompt, SamplingConfig(max_new_tokens=5, temperature=0))
    assert out.shape == (1, 9) and torch.equal(out[:, :4], prompt)
    with torch.no_grad():  # greedy: each new token is the argmax after the prefix
        for t in range(4, 9):
            assert out[0, t] == model(out[:, :t]).logits[0, -1].argmax()


def test_build_model_starts_near_uniform_prediction():
    import math

    torch.manual_seed(0)
    model = build_model(tiny(arch="decoder", vocab_size=1000), "clm")
    ids = torch.randint(0, 1000, (4, 32))
    assert abs(model(ids, labels=ids).loss.item() - math.log(1000)) < 0.5


def test_saved_files_are_readable_by_others(tmp_path):
    import os
    import stat

    save_model(build_model(tiny(), "mlm"), tmp_path / "run")
    for name in ("model.safetensors", "model.json"):
        assert os.stat(tmp_path / "run" / name).st_mode & stat.S_IROTH

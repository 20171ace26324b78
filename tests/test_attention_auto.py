"""model.attention=auto: the math path exactly where it was measured faster, SDPA elsewhere."""
import torch

import nlpattn.attention as attention
from nlpattn.config import ModelConfig
from nlpattn.models import build_model


def test_auto_picks_math_for_training_in_the_precision_auto_picks(monkeypatch):
    x32, x16 = torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bfloat16)
    monkeypatch.setattr(attention, "_cpu_has_native_bf16", lambda: True)
    assert attention.math_is_faster(x16) and not attention.math_is_faster(x32)  # explicit fp32 there: SDPA
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention.math_is_faster(x32)
    with torch.no_grad():
        assert not attention.math_is_faster(x16)  # inference keeps SDPA
    monkeypatch.setattr(attention, "_cpu_has_native_bf16", lambda: False)
    q = torch.zeros(2, 4, attention.FP32_MATH_MAX_LEN, 8)  # (B, H, T, hd)
    assert attention.math_is_faster(q)  # fp32 training where auto picks fp32, short windows
    assert not attention.math_is_faster(q, dropout=0.1)  # measured no faster with attention dropout
    assert not attention.math_is_faster(torch.zeros(2, 4, attention.FP32_MATH_MAX_LEN + 1, 8))  # slower at 512
    assert not attention.math_is_faster(q, key_len=attention.FP32_MATH_MAX_LEN + 1)  # long memory (cross-attention)
    assert not attention.math_is_faster(x16)  # software bf16: not measured, so SDPA
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not attention.math_is_faster(q)
    with torch.no_grad():
        assert not attention.math_is_faster(q)
    assert not attention.math_is_faster(q.double())


def test_native_bf16_means_amx_or_avx512_bf16(monkeypatch):
    import nlpattn.train.runtime as runtime

    for flags, native in (({"avx2", "amx_bf16"}, True), ({"avx512f", "avx512_bf16"}, True), ({"avx2"}, False)):
        monkeypatch.setattr(runtime, "cpu_flags", lambda flags=flags: flags)
        attention._cpu_has_native_bf16.cache_clear()
        assert attention._cpu_has_native_bf16() is native
    attention._cpu_has_native_bf16.cache_clear()


def test_auto_computes_what_sdpa_computes_in_bf16_training(monkeypatch):
    monkeypatch.setattr(attention, "_cpu_has_native_bf16", lambda: True)
    calls = []
    real = attention.MultiHeadAttention._math_attention
    monkeypatch.setattr(attention.MultiHeadAttention, "_math_attention",
                        lambda self, *a: calls.append(1) or real(self, *a))
    ids = torch.randint(5, 50, (2, 12))
    outs = {}
    for mode in ("sdpa", "auto"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=16,
                                        dropout=0.0, attention=mode), "clm")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        outs[mode] = (out.loss.detach(), model.embeddings.token.weight.grad.clone())
    assert len(calls) == 2  # auto went through the math path in both layers; sdpa never
    torch.testing.assert_close(outs["auto"][0], outs["sdpa"][0], atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(outs["auto"][1], outs["sdpa"][1], atol=2e-3, rtol=5e-2)

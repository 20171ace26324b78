"""MultiHeadAttention against PyTorch's references: SDPA, nn.MultiheadAttention, masks."""
import pytest
import torch
import torch.nn.functional as F

from nlpattn.attention import KVCache, MultiHeadAttention, build_attention_mask


def _mha(cross=False, **kw):
    torch.manual_seed(0)
    return MultiHeadAttention(32, 4, cross=cross, **kw).eval()


def _padding(B=3, T=7):
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 2:] = False
    return mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_path_equals_math_path(causal, padded):
    attn = _mha()
    x = torch.randn(3, 7, 32)
    pad = _padding() if padded else None
    fast, _ = attn(x, key_padding_mask=pad, causal=causal)
    slow, w = attn(x, key_padding_mask=pad, causal=causal, output_attentions=True)
    assert w.shape == (3, 4, 7, 7)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)


def test_equals_functional_sdpa_with_manual_projection():
    attn = _mha()
    x = torch.randn(2, 5, 32)
    q, k, v = attn.qkv_proj(x).chunk(3, dim=-1)
    split = lambda t: t.view(2, 5, 4, 8).transpose(1, 2)
    ref = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
    ref = attn.out_proj(ref.transpose(1, 2).reshape(2, 5, 32))
    ours, _ = attn(x, causal=True, output_attentions=True)  # math path
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cross", [False, True])
def test_equals_torch_multihead_attention(cross):
    attn = _mha(cross=cross)
    ref = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        if cross:
            ref.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.kv_proj.weight]))
            ref.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.kv_proj.bias]))
        else:
            ref.in_proj_weight.copy_(attn.qkv_proj.weight)
            ref.in_proj_bias.copy_(attn.qkv_proj.bias)
        ref.out_proj.load_state_dict(attn.out_proj.state_dict())
    x = torch.randn(3, 6, 32)
    mem = torch.randn(3, 7, 32) if cross else x
    pad = _padding(3, mem.shape[1])
    ours, w = attn(x, memory=mem if cross else None, key_padding_mask=pad, output_attentions=True)
    theirs, tw = ref(x, mem, mem, key_padding_mask=~pad, average_attn_weights=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, tw, atol=1e-6, rtol=1e-5)


def test_weights_rows_sum_to_one_and_masked_keys_get_zero():
    attn = _mha()
    pad = _padding()
    _, w = attn(torch.randn(3, 7, 32), key_padding_mask=pad, causal=True, output_attentions=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 7))
    future = torch.triu(torch.ones(7, 7, dtype=torch.bool), diagonal=1)
    assert (w[:, :, future] == 0).all()
    assert (w[1, :, :, 5:] == 0).all() and (w[2, :, :, 2:] == 0).all()


def test_restricted_window_masks_far_keys():
    attn = _mha(window=2)
    _, w = attn(torch.randn(1, 9, 32), output_attentions=True)
    i, j = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    assert (w[0, :, (i - j).abs() > 2] == 0).all()
    assert (w[0, :, (i - j).abs() <= 2] > 0).all()


def test_fully_masked_rows_do_not_produce_nan():
    # Left padding under a causal mask leaves the first query rows with no allowed key.
    pad = torch.tensor([[False, False, True, True]])
    mask = build_attention_mask(4, 4, key_padding_mask=pad, causal=True)
    assert mask.any(-1).all()
    y, _ = _mha()(torch.randn(1, 4, 32), key_padding_mask=pad, causal=True)
    assert torch.isfinite(y).all()


def test_kv_cache_step_by_step_equals_full():
    attn = _mha()
    x = torch.randn(2, 6, 32)
    full, _ = attn(x, causal=True)
    cache = KVCache()
    steps = [attn(x[:, t:t + 1], causal=True, cache=cache, offset=t)[0] for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=1e-5)
    assert len(cache) == 6

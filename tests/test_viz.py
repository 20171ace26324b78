"""Attention maps: the weights drawn are the model's, and the outputs are complete files."""
import json
import re

import pytest
import torch

from nlpattn.config import ModelConfig
from nlpattn.models import build_model
from nlpattn.viz import attention_maps, page_data, render_html, save_png


@pytest.fixture
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=30, d_model=16, n_heads=2, d_ff=32, n_layers=2, max_len=16, dropout=0.0)
    return build_model(cfg, "mlm").eval()


def softmax_qk_from_weights(model, ids: torch.Tensor, causal: bool) -> list[torch.Tensor]:
    """softmax(Q Kᵀ / √d_head) per layer, from each attention module's input and its projection
    weights (written out here: no nlpattn attention code runs to produce these)."""
    inputs = []
    hooks = [layer.self_attn.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
             for layer in model.body.layers]
    with torch.no_grad():
        model(ids)  # the default (SDPA) path: it returns no weights
    for h in hooks:
        h.remove()
    maps = []
    for layer, x in zip(model.body.layers, inputs):
        attn = layer.self_attn
        H, d = attn.n_heads, attn.d_model
        w, b = attn.qkv_proj.weight, attn.qkv_proj.bias
        q = (x[0] @ w[:d].T + b[:d]).view(-1, H, d // H).transpose(0, 1)  # (H, T, hd)
        k = (x[0] @ w[d:2 * d].T + b[d:2 * d]).view(-1, H, d // H).transpose(0, 1)
        scores = q @ k.transpose(1, 2) / (d // H) ** 0.5  # (H, T, T)
        if causal:
            T = scores.shape[-1]
            scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        maps.append(scores.softmax(-1))
    return maps


@pytest.mark.parametrize("task", ["mlm", "clm"])
def test_maps_equal_softmax_qk_computed_from_the_weights(task):
    torch.manual_seed(0)
    arch = "encoder" if task == "mlm" else "decoder"
    cfg = ModelConfig(arch=arch, vocab_size=30, d_model=16, n_heads=2, d_ff=32, n_layers=2, max_len=16, dropout=0.0)
    model = build_model(cfg, task).eval()
    with torch.no_grad():  # large weights: attention far from uniform, so a wrong scale would show
        for name, p in model.named_parameters():
            if "qkv_proj.weight" in name:
                p.normal_(0, 0.5)
    ids = torch.randint(0, 30, (1, 6), generator=torch.Generator().manual_seed(1))
    maps = attention_maps(model, ids)
    expected = softmax_qk_from_weights(model, ids, causal=task == "clm")
    assert [m.shape for m in maps] == [(2, 6, 6)] * 2
    assert max(m.max().item() for m in expected) > 0.9  # far from uniform (1/6)
    for got, want in zip(maps, expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_html_embeds_every_weight_and_token(model):
    maps = attention_maps(model, torch.randint(0, 30, (1, 4)))
    page = render_html(maps, ["the", "<cat>", "sat", "."])
    inlined = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    data = json.loads(inlined)
    (sec,) = data["sections"]
    torch.testing.assert_close(torch.tensor(sec["layers"]), torch.stack(maps), atol=1e-4, rtol=0)
    assert sec["queries"] == ["the", "<cat>", "sat", "."] and sec["groups"] == {"punct": "punctuation"}
    assert "<cat>" not in page  # inlined as \u003ccat>: no tag a browser would parse


def test_png_is_written(model, tmp_path):
    maps = attention_maps(model, torch.randint(0, 30, (1, 5)))
    path = save_png(page_data(maps, list("abcde"))["sections"], tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]

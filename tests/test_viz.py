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


def test_maps_are_the_models_attention(model):
    ids = torch.randint(0, 30, (1, 6))
    maps = attention_maps(model, ids)
    assert [m.shape for m in maps] == [(2, 6, 6)] * 2
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 6))
    with torch.no_grad():
        direct = model(ids, output_attentions=True).attentions[1][0]
    torch.testing.assert_close(maps[1], direct)


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

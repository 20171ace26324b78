"""Recurrent and convolutional bodies: causality, padding, configs, receptive fields."""
import pytest
import torch

from nlpattn.bodies.cnn import dilation_schedule, receptive_field
from nlpattn.config import ModelConfig, load_config
from nlpattn.errors import ConfigError
from nlpattn.models import build_model

VOCAB = 61


def tiny(body: str, **kw) -> ModelConfig:
    base = dict(body=body, vocab_size=VOCAB, d_model=32, n_heads=4, d_ff=64, n_layers=3, max_len=40,
                dropout=0.0, kernel_size=3, dilation=2)
    base.update(kw)
    return ModelConfig(**base)


CAUSAL_BODIES = {
    "transformer": dict(),
    "lstm": dict(position="none"),
    "gru": dict(),
    "cnn-glu": dict(position="none"),
    "cnn-gelu-se": dict(conv_activation="gelu", se=True),
    "cnn-contiguous-post-ln": dict(dilation=1, norm="post"),
}
ALL_BODIES = {**CAUSAL_BODIES, "cnn-se": dict(se=True)}


def body_cfg(name: str, **kw) -> ModelConfig:
    return tiny(name.split("-")[0], **CAUSAL_BODIES.get(name, ALL_BODIES.get(name, {})), **kw)


@pytest.mark.parametrize("name", sorted(CAUSAL_BODIES))
def test_causal_bodies_leak_no_future(name):
    torch.manual_seed(0)
    model = build_model(body_cfg(name, arch="decoder"), "clm").eval()
    ids = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        base = model(ids).logits
        for t in (0, 5, 14):
            changed = ids.clone()
            changed[:, t + 1] = (changed[:, t + 1] + 7) % VOCAB
            out = model(changed).logits
            torch.testing.assert_close(out[:, :t + 1], base[:, :t + 1], atol=1e-6, rtol=0)
            assert (out[:, t + 1] - base[:, t + 1]).abs().max() > 1e-3  # the change is seen at t+1


def padded_batch(T: int = 12) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(1)
    lengths = [T, T - 4, 3]
    ids = torch.randint(1, VOCAB, (3, T), generator=g)
    mask = torch.zeros(3, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = 0
    return ids, mask, lengths


@pytest.mark.parametrize("name,arch", [(n, "encoder") for n in sorted(ALL_BODIES)]
                         + [(n, "decoder") for n in sorted(CAUSAL_BODIES)])
def test_padded_equals_unpadded_for_real_tokens(name, arch):
    torch.manual_seed(0)
    model = build_model(body_cfg(name, arch=arch), "mlm" if arch == "encoder" else "clm").eval()
    ids, mask, lengths = padded_batch()
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).hidden
        for b, n in enumerate(lengths):
            alone = model(ids[b:b + 1, :n]).hidden
            torch.testing.assert_close(batched[b:b + 1, :n], alone, atol=1e-5, rtol=1e-5)
        if arch == "encoder":  # without the mask, padding would change what real tokens see
            unmasked = model(ids).hidden
            assert (unmasked[2, :3] - batched[2, :3]).abs().max() > 1e-4


@pytest.mark.parametrize("body", ["lstm", "gru", "cnn"])
def test_classification_pools_real_tokens_only(body):
    torch.manual_seed(0)
    model = build_model(tiny(body, se=True), "classification", num_labels=3).eval()
    ids, mask, lengths = padded_batch()
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        alone = torch.cat([model(ids[b:b + 1, :n]).logits for b, n in enumerate(lengths)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_causal_cnn_receptive_field_follows_dilation_schedule():
    torch.manual_seed(0)
    cfg = tiny("cnn", arch="decoder", n_layers=3, dilation=2, position="none")
    model = build_model(cfg, "clm").double()
    rf = receptive_field(3, dilation_schedule(3, 2))  # 1 + 2·(1+2+4) = 15
    assert rf == 15
    x = model.embeddings(torch.randint(0, VOCAB, (1, 24))).detach().requires_grad_(True)
    t = 20
    probe = torch.randn(32, dtype=torch.float64)  # not .sum(): the final LayerNorm output sums to 0
    (model.body(x).hidden[0, t] @ probe).backward()
    seen = (x.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert seen == list(range(t - rf + 1, t + 1))


def test_bidirectional_rnn_uses_half_width_per_direction():
    model = build_model(tiny("lstm", d_model=32), "mlm")
    rnn = model.body.layers[0].rnn
    assert rnn.bidirectional and rnn.hidden_size == 16
    assert not build_model(tiny("lstm", arch="decoder"), "clm").body.layers[0].rnn.bidirectional


def test_body_config_errors():
    with pytest.raises(ConfigError, match="bidirectional"):
        build_model(tiny("gru", arch="decoder", bidirectional=True), "clm")
    with pytest.raises(ConfigError, match="even"):
        build_model(tiny("lstm", d_model=33, n_heads=3), "mlm")
    model = build_model(tiny("cnn", arch="decoder"), "clm")
    from nlpattn.attention import KVCache
    with pytest.raises(ConfigError, match="KV cache"):
        model(torch.ones(1, 4, dtype=torch.long), cache=KVCache())
    left_padded = torch.tensor([[0, 1, 1, 1]])
    with pytest.raises(ValueError, match="right padding"):
        build_model(tiny("lstm"), "mlm")(torch.ones(1, 4, dtype=torch.long), attention_mask=left_padded)


@pytest.mark.parametrize("body", ["transformer", "lstm", "gru", "cnn"])
@pytest.mark.parametrize("task", ["mlm", "clm", "classification"])
def test_small_configs_build_and_train_a_step(body, task):
    arch = "decoder" if task == "clm" else "encoder"
    cfg = load_config(f"configs/model/{body}-small.yaml",
                      [f"model.arch={arch}", "model.vocab_size=97", "model.n_layers=1"]).model
    model = build_model(cfg, task)
    ids, mask, _ = padded_batch(T=10)
    labels = torch.tensor([0, 1, 1]) if task == "classification" else ids.masked_fill(mask == 0, -100)
    out = model(ids % 97, attention_mask=mask, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for p in model.body.parameters())


def test_small_causal_configs_have_about_equal_body_parameters():
    counts = {}
    for body in ("transformer", "lstm", "gru", "cnn"):
        cfg = load_config(f"configs/model/{body}-small.yaml", ["model.arch=decoder"]).model
        counts[body] = sum(p.numel() for p in build_model(cfg, "clm").body.parameters())
    assert max(counts.values()) / min(counts.values()) < 1.02, counts

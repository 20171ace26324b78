"""Channel (squeeze-and-excitation) and spatial (CBAM) attention in the CNN body: shapes, gate
ranges, identity when forced open, no look-ahead, padding, gate maps, configs, fine-tuning."""
import json
from pathlib import Path

import pytest
import torch

from nlpattn.bodies.cnn import SpatialGate
from nlpattn.config import ModelConfig, load_config
from nlpattn.errors import ConfigError
from nlpattn.models import build_model

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only cost
VOCAB = 53
GATES = {"spatial": dict(spatial=True), "se+spatial": dict(se=True, spatial=True)}


def cnn(arch="encoder", **kw) -> ModelConfig:
    base = dict(body="cnn", arch=arch, vocab_size=VOCAB, d_model=24, n_layers=3, max_len=40, dropout=0.0,
                kernel_size=3, dilation=2, spatial_kernel=5)
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("causal", [True, False])
def test_spatial_gate_shapes_and_range(causal):
    torch.manual_seed(0)
    gate = SpatialGate(7, causal)
    x = torch.randn(3, 11, 16)
    w = gate.weights(x)
    assert w.shape == (3, 11) and gate(x).shape == (3, 11, 16)
    assert bool((w > 0).all() and (w < 1).all())
    torch.testing.assert_close(gate(x), x * w[..., None], rtol=0, atol=0)
    # the gate reads only the channel max and mean: permuting channels changes nothing
    torch.testing.assert_close(gate.weights(x[..., torch.randperm(16)]), w)


def test_causal_spatial_gate_sees_only_the_past_and_the_centred_one_both_sides():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 8)
    changed = x.clone()
    changed[:, 6] += 3.0
    for causal in (True, False):
        gate = SpatialGate(5, causal)
        before, after = gate.weights(x), gate.weights(changed)
        moved = (before - after).abs().amax(dim=0) > 1e-6  # (T,)
        expected = [6, 7, 8, 9, 10] if causal else [4, 5, 6, 7, 8]
        assert moved.nonzero().flatten().tolist() == expected, causal


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
@pytest.mark.parametrize("name", sorted(GATES))
def test_body_returns_gate_maps_per_layer(arch, name):
    torch.manual_seed(0)
    model = build_model(cnn(arch, **GATES[name]), "mlm" if arch == "encoder" else "clm").eval()
    ids = torch.randint(1, VOCAB, (2, 9))
    assert model.body.returns_gates
    out = model(ids, output_attentions=True)
    assert len(out.gates) == 3 and out.attentions == []
    for g in out.gates:
        assert g.spatial.shape == (2, 9) and bool((g.spatial > 0).all() and (g.spatial < 1).all())
        if "se" in name:
            assert g.channel.shape == (2, 9, 24) and bool((g.channel > 0).all() and (g.channel < 1).all())
            if arch == "encoder":  # one channel gate per sequence, from the whole-sequence mean
                torch.testing.assert_close(g.channel, g.channel[:, :1].expand_as(g.channel))
        else:
            assert g.channel is None
    assert model(ids).gates == []  # only when asked for
    torch.testing.assert_close(model(ids).logits, out.logits)


def test_bodies_without_gates_say_so():
    for cfg in (cnn(), ModelConfig(vocab_size=VOCAB, d_model=16, n_heads=2, d_ff=32, n_layers=1)):
        model = build_model(cfg, "mlm")
        assert not model.body.returns_gates
        assert model(torch.randint(1, VOCAB, (1, 5)), output_attentions=True).gates == []


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
@pytest.mark.parametrize("se", [False, True])
def test_spatial_gate_forced_open_changes_nothing(arch, se):
    torch.manual_seed(0)
    task = "mlm" if arch == "encoder" else "clm"
    gated = build_model(cnn(arch, se=se, spatial=True), task).eval()
    plain = build_model(cnn(arch, se=se), task).eval()
    missing, unexpected = plain.load_state_dict(gated.state_dict(), strict=False)
    assert missing == [] and unexpected and all(".spatial." in k for k in unexpected)
    ids = torch.randint(1, VOCAB, (2, 10))
    with torch.no_grad():
        assert (gated(ids).logits - plain(ids).logits).abs().max() > 1e-4  # a real gate does something
        for layer in gated.body.layers:
            layer.spatial.conv.weight.zero_()
            layer.spatial.conv.bias.fill_(100.0)  # sigmoid(100) == 1.0 in float32
        assert torch.equal(gated(ids).logits, plain(ids).logits)


@pytest.mark.parametrize("name", sorted(GATES))
def test_causal_body_with_gates_never_looks_ahead(name):
    torch.manual_seed(0)
    model = build_model(cnn("decoder", **GATES[name]), "clm").eval()
    ids = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        base = model(ids, output_attentions=True)
        for t in (0, 6, 14):
            changed = ids.clone()
            changed[:, t + 1] = (changed[:, t + 1] + 5) % VOCAB
            out = model(changed, output_attentions=True)
            torch.testing.assert_close(out.logits[:, :t + 1], base.logits[:, :t + 1], atol=1e-6, rtol=0)
            assert (out.logits[:, t + 1] - base.logits[:, t + 1]).abs().max() > 1e-3
            for a, b in zip(out.gates, base.gates):
                torch.testing.assert_close(a.spatial[:, :t + 1], b.spatial[:, :t + 1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_padding_does_not_reach_real_tokens_through_the_gates(arch):
    torch.manual_seed(0)
    model = build_model(cnn(arch, se=True, spatial=True), "mlm" if arch == "encoder" else "clm").eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, VOCAB, (2, 10), generator=g)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0  # right padding (encoder batches)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).hidden
        alone = model(ids[1:, :6]).hidden
        torch.testing.assert_close(batched[1:, :6], alone, atol=1e-5, rtol=1e-5)
        if arch == "decoder":  # left padding (batched generation), positions given per row
            left = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids[1:, :6]], dim=1)
            left_mask = (left != 0).long() | torch.tensor([[0] * 4 + [1] * 6])
            positions = (left_mask.cumsum(1) - 1).clamp(min=0)
            out = model(left, attention_mask=left_mask, position_ids=positions).hidden
            torch.testing.assert_close(out[:, 4:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task", ["mlm", "clm", "classification"])
def test_gates_train_in_every_model(task):
    torch.manual_seed(0)
    arch = "decoder" if task == "clm" else "encoder"
    model = build_model(cnn(arch, se=True, spatial=True), task, num_labels=3)
    ids = torch.randint(1, VOCAB, (4, 12))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    labels = torch.tensor([0, 1, 2, 1]) if task == "classification" else ids.masked_fill(mask == 0, -100)
    out = model(ids, attention_mask=mask, labels=labels, output_attentions=True)
    assert torch.isfinite(out.loss) and len(out.gates) == 3
    out.loss.backward()
    for layer in model.body.layers:
        assert layer.spatial.conv.weight.grad.abs().sum() > 0
        assert layer.se.squeeze.weight.grad.abs().sum() > 0


def test_spatial_config_keys_are_validated():
    cfg = load_config(None, ["model.body=cnn", "model.spatial=true", "model.spatial_kernel=3"])
    assert cfg.model.spatial and cfg.model.spatial_kernel == 3 and not cfg.model.se
    with pytest.raises(ConfigError, match="model.spatial.*needs model.body = cnn"):
        load_config(None, ["model.spatial=true"])
    with pytest.raises(ConfigError, match="model.spatial_kernel.*odd"):
        load_config(None, ["model.body=cnn", "model.spatial=true", "model.spatial_kernel=4"])
    with pytest.raises(ConfigError, match="model.spatial_kernel.*odd and >= 1"):
        load_config(None, ["model.body=cnn", "model.spatial_kernel=0"])
    with pytest.raises(ConfigError, match="model.spatial"):
        load_config(None, ["model.body=cnn", "model.spatial=maybe"])
    with pytest.raises(ConfigError, match="did you mean 'model.spatial'"):
        load_config(None, ["model.spatal=true"])


def test_glue_finetuning_a_cnn_with_se_and_spatial_gates(tmp_path):
    from nlpattn.models import load_model
    from nlpattn.train.finetune import run_finetune

    run = tmp_path / "run"
    cfg = load_config(REPO / "configs/finetune/glue.yaml", [
        "task=wnli", f"output_dir={run}", "model.body=cnn", "model.se=true", "model.spatial=true",
        "model.spatial_kernel=3", "model.position=none", "model.d_model=16", "model.n_layers=2",
        "tokenizer.kind=char", "train.progress=false", "train.batch_size=16", "train.epochs=0.2", "glue.max_length=64",
        "train.precision=fp32",
        f"glue.data_dir={REPO / 'data/glue'}", f"data.train_files=[{REPO / 'data/tinyshakespeare/input.txt.gz'}]"])
    report = run_finetune(cfg)
    assert 0.0 <= report["metrics"]["wnli"]["accuracy"] <= 1.0
    losses = [e["loss"] for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if e.get("split") == "train" and "loss" in e]
    assert losses and all(map(torch.isfinite, torch.tensor(losses)))
    model = load_model(run)
    assert model.task == "classification" and model.cfg.se and model.cfg.spatial and model.cfg.spatial_kernel == 3
    assert all(layer.se is not None and layer.spatial is not None for layer in model.body.layers)
    out = model(torch.randint(5, 20, (1, 7)), output_attentions=True)
    assert out.logits.shape == (1, 2) and [g.spatial.shape for g in out.gates] == [(1, 7)] * 2

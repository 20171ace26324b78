"""The fused vocabulary projection + cross-entropy against F.linear + F.cross_entropy."""
import pytest
import torch
import torch.nn.functional as F

from nlpattn.config import ModelConfig
from nlpattn.linear_cross_entropy import linear_cross_entropy
from nlpattn.models import build_model


def _loss_and_grads(fn, hidden, weight, targets, bf16=False):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = fn(h, w, targets)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def plain(h, w, targets):
    return F.cross_entropy(F.linear(h, w).float(), targets, ignore_index=-100)


@pytest.mark.parametrize("chunk_rows", [None, 7, 1000])
def test_loss_and_gradients_equal_the_plain_head_in_float32(chunk_rows):
    torch.manual_seed(0)
    hidden, weight = torch.randn(61, 24), 0.3 * torch.randn(50, 24)
    targets = torch.randint(0, 50, (61,))
    targets[::5] = -100  # ignored positions: padding, the last position of a shifted row
    ref = _loss_and_grads(plain, hidden, weight, targets)
    mine = _loss_and_grads(lambda h, w, t: linear_cross_entropy(h, w, t, chunk_rows), hidden, weight, targets)
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert mine[1][targets == -100].abs().max() == 0 < mine[1][targets != -100].abs().max()


def test_large_logits_stay_finite_and_match_the_plain_head():
    torch.manual_seed(0)
    hidden, weight = 40 * torch.randn(16, 8), 40 * torch.randn(30, 8)  # logits in the thousands: exp overflows
    targets = torch.randint(0, 30, (16,))
    ref = _loss_and_grads(plain, hidden, weight, targets)
    mine = _loss_and_grads(lambda h, w, t: linear_cross_entropy(h, w, t, 5), hidden, weight, targets)
    assert all(torch.isfinite(x).all() for x in mine)
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_tracks_the_plain_head_within_bf16_rounding():
    torch.manual_seed(0)
    hidden, weight = torch.randn(64, 32), 0.3 * torch.randn(40, 32)
    targets = torch.randint(0, 40, (64,))
    ref = _loss_and_grads(plain, hidden, weight, targets, bf16=True)
    mine = _loss_and_grads(lambda h, w, t: linear_cross_entropy(h, w, t, 16), hidden, weight, targets, bf16=True)
    torch.testing.assert_close(mine[0], ref[0], rtol=1e-3, atol=0)
    for a, b in zip(mine[1:], ref[1:]):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).abs().max() <= 0.02 * b.abs().max()  # bf16 has 8 bits of mantissa


def tiny_clm():
    """A one-layer causal LM without dropout and a (3, 12) batch of ids."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="decoder", vocab_size=64, d_model=16, n_heads=2, d_ff=32, n_layers=1, max_len=32,
                      dropout=0.0)
    return build_model(cfg, "clm"), torch.randint(5, 64, (3, 12))


def test_causal_lm_training_uses_it_and_evaluation_still_gets_logits():
    model, ids = tiny_clm()
    trained = model(ids, labels=ids)
    assert trained.logits is None  # never materialised while training
    trained.loss.backward()
    fused_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with torch.no_grad():
        evaluated = model(ids, labels=ids)
    assert evaluated.logits.shape == (3, 12, 64)
    torch.testing.assert_close(evaluated.loss, trained.loss.detach())
    logits = model(ids).logits  # the plain path, with autograd, for reference gradients
    F.cross_entropy(logits[:, :-1].reshape(-1, 64), ids[:, 1:].reshape(-1)).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(fused_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_compiled_causal_lm_trains_with_the_fused_loss():
    model, ids = tiny_clm()
    eager = model(ids, labels=ids).loss
    compiled = torch.compile(model)(ids, labels=ids).loss  # train.compile=true
    torch.testing.assert_close(compiled, eager.detach(), rtol=1e-5, atol=1e-6)
    compiled.backward()
    assert all(p.grad is not None for p in model.parameters())

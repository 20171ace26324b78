"""The chunked cross-entropy (causal LM eval, the masked-LM head; bf16 logits through a fused
softmax-and-gradient pass) equals the whole-array loss and gradient within float32 rounding."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nlpattn import heads
from nlpattn.config import ModelConfig
from nlpattn.heads import IGNORE_INDEX, chunked_cross_entropy


def reference(logits, targets):
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_loss_and_gradient_equal_the_plain_cross_entropy(dtype, chunk_rows):
    torch.manual_seed(0)
    n, v = 301, 97  # chunks of 7 and 64 do not divide 301
    base = (torch.randn(n, v) * 4).to(dtype)
    targets = torch.randint(0, v, (n,))
    targets[::5] = IGNORE_INDEX
    a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
    ours, ref = chunked_cross_entropy(a, targets, chunk_rows), reference(b, targets)
    assert ours.dtype == ref.dtype == torch.float32
    step = float(np.spacing(np.float32(ref.item())))
    assert abs(ours.item() - ref.item()) <= 4 * step, (ours.item(), ref.item(), step)
    ours.backward()
    ref.backward()
    assert a.grad.dtype == dtype
    torch.testing.assert_close(a.grad.float(), b.grad.float(), rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-7)
    assert not torch.equal(a.grad, torch.zeros_like(a.grad))


def test_all_ignored_is_nan_like_the_plain_loss():
    logits, targets = torch.randn(50, 11), torch.full((50,), IGNORE_INDEX)
    assert torch.isnan(chunked_cross_entropy(logits, targets, 8)) and torch.isnan(reference(logits, targets))


def test_a_wrong_chunk_sum_would_fail():
    """The test's tolerance sees a dropped chunk (the loss of a 1/43 share of rows)."""
    torch.manual_seed(1)
    logits, targets = torch.randn(301, 97) * 4, torch.randint(0, 97, (301,))
    dropped = sum(F.cross_entropy(p, t, reduction="sum") for p, t in zip(logits.split(7)[1:], targets.split(7)[1:])) / 301
    step = float(np.spacing(np.float32(reference(logits, targets).item())))
    assert abs(dropped.item() - reference(logits, targets).item()) > 100 * step


@pytest.mark.parametrize("bf16", [False, True])
def test_masked_lm_head_loss_is_chunked_and_equals_the_whole_array_loss(monkeypatch, bf16):
    """The MLM head's loss runs in row chunks (spied: F.cross_entropy per chunk in float32, the
    low-precision function's chunk size under bf16 autocast), with the whole-array value and gradient."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, d_model=16, n_heads=2, d_ff=32, n_layers=1)
    head = heads.MaskedLMHead(cfg, torch.nn.Embedding(97, 16))
    hidden = torch.randn(4, 50, 16, requires_grad=True)
    labels = torch.where(torch.rand(4, 50) < 0.3, torch.randint(0, 97, (4, 50)), IGNORE_INDEX)
    monkeypatch.setattr(heads, "CE_ONE_CALL_BYTES", 4 * 97 * 16)  # above 16 rows: chunks
    monkeypatch.setattr(heads, "CE_CHUNK_BYTES", 4 * 97 * 16)  # of 16 rows
    calls, chunk_sizes = [], []
    real, real_low = F.cross_entropy, heads._LowPrecisionCrossEntropy.apply
    monkeypatch.setattr(heads.F, "cross_entropy", lambda x, *a, **k: calls.append(x.shape[0]) or real(x, *a, **k))
    monkeypatch.setattr(heads._LowPrecisionCrossEntropy, "apply",
                        lambda x, t, rows: chunk_sizes.append((x.shape[0], rows)) or real_low(x, t, rows))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with autocast:
        logits, loss = head(hidden, labels)
    assert logits.dtype == (torch.bfloat16 if bf16 else torch.float32)
    if bf16:
        assert calls == [] and len(chunk_sizes) == 1 and chunk_sizes[0][0] > 2 * 16 and chunk_sizes[0][1] == 16
    else:
        assert chunk_sizes == [] and max(calls) == 16 and len(calls) > 2
    (grad_ours,) = torch.autograd.grad(loss, hidden)
    with autocast:
        logits_ref, _ = head(hidden, labels)
    targets = labels.reshape(-1)[labels.reshape(-1) != IGNORE_INDEX]
    ref = real(logits_ref.float(), targets)
    (grad_ref,) = torch.autograd.grad(ref, hidden)
    assert abs(loss.item() - ref.item()) <= 4 * float(np.spacing(np.float32(ref.item())))
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-2 if bf16 else 1e-5, atol=1e-6)


def test_low_precision_gradient_is_rounded_once_like_the_plain_path():
    """bf16 logits: the gradient is the float32 (softmax − one-hot) ÷ count rounded once to bf16,
    as autograd's upcast path gives it; backward scales it by the incoming gradient."""
    torch.manual_seed(2)
    base = (torch.randn(300, 64) * 4).bfloat16()
    targets = torch.randint(0, 64, (300,))
    targets[::9] = IGNORE_INDEX
    a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
    (2.0 * chunked_cross_entropy(a, targets, 32)).backward()
    (2.0 * reference(b, targets)).backward()
    ulp = 2.0 ** (torch.floor(torch.log2(b.grad.float().abs().clamp(min=1e-30))) - 7)  # one bf16 step
    differ = (a.grad != b.grad).float().mean().item()
    # rounded twice (to bf16, then scaled by 2/count in bf16), 30 % of the elements differ by a step
    assert ((a.grad.float() - b.grad.float()).abs() <= ulp).all() and differ < 0.01, differ

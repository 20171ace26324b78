"""The masked-only MLM head pads its rows to a bucket: same loss, gradients and logits as unpadded."""
import torch
import torch.nn.functional as F

import nlpattn.heads as heads
from nlpattn.config import ModelConfig
from nlpattn.models import build_model


def test_padded_rows_change_neither_loss_nor_gradients(monkeypatch):
    cfg = ModelConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=16, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(cfg, "mlm")
    ids = torch.randint(5, 50, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[1, 5], labels[2, 11] = 7, 9, 11  # 3 masked rows

    def run(bucket: int):
        monkeypatch.setattr(heads, "MLM_ROW_BUCKET", bucket)
        model.zero_grad()
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, plain_grads = run(1)
    padded, padded_grads = run(64)
    assert padded.logits.shape == plain.logits.shape == (3, 50)
    torch.testing.assert_close(padded.loss, plain.loss)
    torch.testing.assert_close(padded.logits, plain.logits)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(padded_grads[name], grad, msg=name)
    hidden = model.encode(ids).hidden[labels != -100]
    expected = F.cross_entropy(model.head.logits(hidden), labels[labels != -100])
    torch.testing.assert_close(padded.loss, expected)


def test_no_masked_position_gives_a_zero_loss_with_a_graph():
    cfg = ModelConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=16, dropout=0.0)
    model = build_model(cfg, "mlm")
    ids = torch.randint(5, 50, (2, 8))
    out = model(input_ids=ids, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0 and out.logits.shape == (0, 50)
    out.loss.backward()

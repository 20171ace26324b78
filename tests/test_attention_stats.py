"""Attention statistics on small matrices whose answers are worked out by hand."""
import math

import pytest
import torch

from nlpattn.attention_stats import (entropy, head_stats, is_punctuation, mean_distance, rollout,
                                     share)

# Rows: query 0 looks only at itself, query 1 splits evenly over keys 0 and 2,
# query 2 spreads evenly over all three keys.
W = torch.tensor([[1.0, 0.0, 0.0],
                  [0.5, 0.0, 0.5],
                  [1 / 3, 1 / 3, 1 / 3]])


def test_entropy_by_hand():
    # rows: 0, ln 2, ln 3 → mean (ln 2 + ln 3) / 3
    assert float(entropy(W)) == pytest.approx((math.log(2) + math.log(3)) / 3)
    assert float(entropy(torch.full((4, 4), 0.25))) == pytest.approx(math.log(4))


def test_entropy_keeps_leading_axes():
    w = torch.stack([W, torch.eye(3)])  # (H=2, 3, 3)
    out = entropy(w)
    assert out.shape == (2,)
    assert float(out[1]) == pytest.approx(0.0)


def test_mean_distance_by_hand():
    # row 0: 0; row 1: 0.5·1 + 0.5·1 = 1; row 2: (2 + 1 + 0) / 3 = 1 → mean 2/3
    assert float(mean_distance(W)) == pytest.approx(2 / 3)
    prev = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0]])  # "previous token" head
    assert float(mean_distance(prev)) == pytest.approx(2 / 3)
    assert float(mean_distance(torch.eye(5))) == 0.0


def test_mean_distance_needs_self_attention():
    with pytest.raises(ValueError, match="square"):
        mean_distance(torch.full((2, 3), 1 / 3))


def test_share_by_hand():
    cls = [True, False, False]
    # key 0 gets 1, 0.5, 1/3 → mean (1 + 0.5 + 1/3) / 3
    assert float(share(W, cls)) == pytest.approx((1 + 0.5 + 1 / 3) / 3)
    assert float(share(W, [False, True, True])) == pytest.approx((0 + 0.5 + 2 / 3) / 3)
    assert float(share(W, [True, True, True])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="key mask"):
        share(W, [True, False])


def test_rollout_one_layer_is_half_attention_half_identity():
    out = rollout([W[None]])  # one layer, one head
    torch.testing.assert_close(out, 0.5 * W + 0.5 * torch.eye(3))


def test_rollout_by_hand_two_layers_two_heads():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # everyone looks at token 0
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # everyone looks at token 1
    layer1 = torch.stack([a, a])  # mean a → (a + I)/2 = [[1, 0], [.5, .5]]
    layer2 = torch.stack([a, b])  # mean [[.5,.5],[.5,.5]] → + I, /2 = [[.75,.25],[.25,.75]]
    expected = torch.tensor([[0.75, 0.25], [0.25, 0.75]]) @ torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    torch.testing.assert_close(rollout([layer1, layer2]), expected)
    torch.testing.assert_close(expected, torch.tensor([[0.875, 0.125], [0.625, 0.375]]))


def test_rollout_rows_stay_distributions():
    torch.manual_seed(0)
    layers = [torch.softmax(torch.randn(3, 5, 5), -1) for _ in range(4)]
    out = rollout(layers)
    torch.testing.assert_close(out.sum(-1), torch.ones(5))
    assert not torch.allclose(out, rollout(layers[:2]))
    torch.testing.assert_close(rollout(layers, residual=False),
                               layers[3].mean(0) @ layers[2].mean(0) @ layers[1].mean(0) @ layers[0].mean(0))


def test_punctuation():
    assert is_punctuation(".") and is_punctuation("##,") and is_punctuation("Ġ?!") and is_punctuation("▁.")
    assert not is_punctuation("cat") and not is_punctuation("[CLS]") and not is_punctuation(" ")
    assert not is_punctuation("a.")


def test_head_stats_rows():
    w = torch.stack([W, torch.eye(3)])  # (H=2, T=3, S=3)
    rows = head_stats([w, w.flip(0)], {"cls": [True, False, False]})
    assert [(r["layer"], r["head"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert rows[0]["entropy"] == pytest.approx((math.log(2) + math.log(3)) / 3)
    assert rows[1]["distance"] == 0.0 and rows[1]["cls"] == pytest.approx(1 / 3)
    assert rows[2]["cls"] == pytest.approx(1 / 3) and rows[3]["distance"] == pytest.approx(2 / 3)
    cross = head_stats([torch.full((2, 2, 3), 1 / 3)], {}, self_attention=False)
    assert "distance" not in cross[0] and cross[0]["entropy"] == pytest.approx(math.log(3))

"""Our models with converted weights equal transformers' BERT / GPT-2 and torch.nn.Transformer.

Every model here is "sharpened": weights with std 0.3, LayerNorm gains 1 ± 0.5, random biases.
At the default std 0.02 attention is near-uniform and logits are ~0.5, so a softmax scale 20%
off changes the logits by less than 1e-5 and would pass; sharpened, it changes them by ~0.3–0.8.
Differences are compared with REL × the largest logit (float32 rounding is relative).
"""
import math

import pytest
import torch
import transformers

from nlpattn.config import ModelConfig
from nlpattn.interop.hf import from_torch_transformer, from_transformers, to_transformers
from nlpattn.models import build_model
from test_train_utils import sharpen


# Measured: 4e-7 to 2e-6 of the largest logit (CPU, float32); a softmax scale 20% too large:
# 0.08 to 0.5 of it. 1e-5 leaves room for other BLAS kernels and is 4 orders below a real error.
REL = 1e-5


def small_bert(**kw):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=40, initializer_range=0.3,
                                  attn_implementation="eager", **kw)
    return sharpen(transformers.BertForMaskedLM(cfg).eval())


def small_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=40,
                                  bos_token_id=None, eos_token_id=None, initializer_range=0.3,
                                  attn_implementation="eager")
    return sharpen(transformers.GPT2LMHeadModel(cfg).eval())


def assert_logits_close(mine, theirs, mask=None):
    """Max |difference| over real tokens within REL × the largest |logit|."""
    if mask is not None:
        mine, theirs = mine[mask.bool()], theirs[mask.bool()]
    diff, scale = (mine - theirs).abs().max().item(), theirs.abs().max().item()
    assert scale > 0.5, f"logits too small ({scale:.3g}) for the comparison to mean anything"
    assert diff <= REL * scale, f"max difference {diff:.3g} > {REL} x {scale:.3g}"


def padded_batch(B=3, T=12, vocab=97):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for b, length in enumerate([T, T - 4, 5][:B]):
        mask[b, length:] = 0
        ids[b, length:] = 0
    return ids, mask


def max_diff_real_tokens(a, b, mask):
    keep = mask.bool()
    return (a[keep] - b[keep]).abs().max().item()


@pytest.mark.parametrize("make", [small_bert, small_gpt2])
def test_reference_attention_is_far_from_uniform(make):
    """The premise of these tests: some attention rows put > 0.9 on one key."""
    ids, mask = padded_batch()
    with torch.no_grad():
        att = make()(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    assert max(a.max().item() for a in att) > 0.9
    rows = torch.cat([a[0, :, 1:].flatten(0, 1) for a in att])  # full-length row, T > 1 keys
    entropy = -(rows * rows.clamp_min(1e-12).log()).sum(-1).mean().item()
    assert entropy < 0.7 * math.log(ids.shape[1])  # uniform: log T


def test_bert_mlm_logits_equal_transformers():
    hf = small_bert()
    ours = from_transformers(hf).eval()
    ids, mask = padded_batch()
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        mine = ours(ids, attention_mask=mask, token_type_ids=types).logits
    assert_logits_close(mine, theirs, mask)


def test_bert_mlm_loss_only_on_masked_positions_equals_transformers():
    hf = small_bert()
    ours = from_transformers(hf).eval()
    ids, mask = padded_batch()
    labels = torch.full_like(ids, -100)
    labels[0, [1, 4, 9]] = ids[0, [1, 4, 9]]
    labels[2, 3] = ids[2, 3]
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, labels=labels)
        mine = ours(ids, attention_mask=mask, labels=labels)
    assert mine.logits.shape == (4, 97)  # masked positions only
    assert_logits_close(mine.logits, theirs.logits[labels != -100])
    torch.testing.assert_close(mine.loss, theirs.loss, atol=0, rtol=REL)


def test_gpt2_logits_equal_transformers():
    hf = small_gpt2()
    ours = from_transformers(hf).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits
        mine = ours(ids, attention_mask=mask).logits
    assert_logits_close(mine, theirs, mask)
    with torch.no_grad():
        loss_theirs = hf(input_ids=ids[:1], labels=ids[:1]).loss
        loss_mine = ours(ids[:1], labels=ids[:1]).loss
    torch.testing.assert_close(loss_mine, loss_theirs, atol=0, rtol=REL)


def test_bert_classifier_equals_transformers():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=40, num_labels=3)
    hf = sharpen(transformers.BertForSequenceClassification(cfg).eval())
    ours = from_transformers(hf).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        assert_logits_close(ours(ids, mask).logits, hf(input_ids=ids, attention_mask=mask).logits)


@pytest.mark.parametrize("make", [small_bert, small_gpt2])
def test_round_trip_reproduces_logits(make):
    hf = make()
    back = to_transformers(from_transformers(hf))
    ids, mask = padded_batch()
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask).logits
        b = back(input_ids=ids, attention_mask=mask).logits
    assert_logits_close(b, a, mask)


def test_to_transformers_from_our_own_random_model():
    cfg = ModelConfig(arch="encoder", norm="post", vocab_size=61, d_model=32, n_heads=4, d_ff=48,
                      n_layers=2, max_len=32, dropout=0.0, type_vocab_size=2)
    torch.manual_seed(3)
    ours = sharpen(build_model(cfg, "mlm").eval(), seed=3)
    hf = to_transformers(ours)
    ids, mask = padded_batch(vocab=61)
    with torch.no_grad():
        assert_logits_close(ours(ids, mask).logits, hf(input_ids=ids, attention_mask=mask).logits, mask)


def test_to_transformers_rejects_incompatible_model():
    from nlpattn.errors import ConfigError

    cfg = ModelConfig(arch="encoder", norm="pre", vocab_size=61, d_model=32, n_heads=4, d_ff=48)
    with pytest.raises(ConfigError, match="norm=post"):
        to_transformers(build_model(cfg, "mlm"))


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_decoder_equals_torch_transformer(norm_first):
    torch.manual_seed(0)
    ref = torch.nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=3,
                               dim_feedforward=64, dropout=0.0, batch_first=True,
                               norm_first=norm_first).eval()
    sharpen(ref)
    ours = from_torch_transformer(ref, vocab_size=50).eval()
    src, tgt = torch.randn(2, 9, 32), torch.randn(2, 6, 32)
    src_pad = torch.ones(2, 9, dtype=torch.bool)
    src_pad[1, 6:] = False
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6)
    with torch.no_grad():
        theirs = ref(src, tgt, tgt_mask=causal, src_key_padding_mask=~src_pad,
                     memory_key_padding_mask=~src_pad, tgt_is_causal=True)
        memory = ours.encoder(src, src_pad).hidden
        mine = ours.decoder(tgt, None, memory=memory, memory_mask=src_pad).hidden
    assert_logits_close(mine, theirs)


def test_export_hf_directory_loads_in_transformers(tmp_path):
    from nlpattn.interop.hf import export_run
    from nlpattn.models import save_model

    cfg = ModelConfig(arch="encoder", norm="post", vocab_size=61, d_model=32, n_heads=4, d_ff=48,
                      n_layers=2, max_len=32, dropout=0.0)
    torch.manual_seed(0)
    ours = sharpen(build_model(cfg, "mlm").eval())
    save_model(ours, tmp_path / "run")
    export_run(tmp_path / "run", tmp_path / "hf")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    ids, mask = padded_batch(vocab=61)
    with torch.no_grad():
        assert_logits_close(ours(ids, mask).logits, hf(input_ids=ids, attention_mask=mask).logits, mask)


@pytest.mark.parametrize("per_row", [False, True])
def test_rope_equals_llama_rotary(per_row):
    # Our rotation against transformers' Llama (the same rotate_half pairing), at an offset or at
    # per-row positions (left-padded generation), with its own cos/sin tables.
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    from nlpattn.attention import RotaryEmbedding

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=64)
    q, k = torch.randn(2, 4, 10, 16), torch.randn(2, 4, 10, 16)
    positions = torch.stack([torch.arange(3, 13), torch.arange(10).clamp(max=6)]) if per_row else None
    position_ids = positions if per_row else torch.arange(3, 13).expand(2, -1)
    cos, sin = LlamaRotaryEmbedding(cfg)(q, position_ids)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    rope = RotaryEmbedding(16, 64)
    torch.testing.assert_close(rope(q, 3, positions), q_ref)
    torch.testing.assert_close(rope(k, 3, positions), k_ref)


def test_rope_backward_equals_autograd_of_the_textbook_form():
    # The hand-written backward (the inverse rotation) against autograd through Llama's formula.
    from transformers.models.llama.modeling_llama import rotate_half

    from nlpattn.attention import RotaryEmbedding

    torch.manual_seed(0)
    rope = RotaryEmbedding(8, 32).double()
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    (ours,) = torch.autograd.grad(rope(x, 5), x, upstream)
    cos, sin = rope.cos[5:12], rope.sin[5:12]
    (ref,) = torch.autograd.grad(x * cos + rotate_half(x) * sin, x, upstream)
    torch.testing.assert_close(ours, ref)
    assert torch.autograd.gradcheck(lambda t: rope(t, 5), (x,))

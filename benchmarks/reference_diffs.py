"""Max |difference| of our models against their references (transformers BERT/GPT-2, nn.Transformer, SDPA).

    python benchmarks/reference_diffs.py
"""
import torch, transformers, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests"))
from test_reference import small_bert, small_gpt2, padded_batch
from nlpattn.interop.hf import from_transformers, to_transformers, from_torch_transformer
ids, mask = padded_batch(); keep = mask.bool()
for name, make in [("BertForMaskedLM", small_bert), ("GPT2LMHeadModel", small_gpt2)]:
    hf = make(); ours = from_transformers(hf).eval()
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask).logits; b = ours(ids, attention_mask=mask).logits
        c = to_transformers(ours)(input_ids=ids, attention_mask=mask).logits
    print(f"{name}: max|ours-theirs| = {(a[keep]-b[keep]).abs().max():.2e}; round trip {(a[keep]-c[keep]).abs().max():.2e}")
for nf in (False, True):
    torch.manual_seed(0)
    ref = torch.nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=64, dropout=0.0, batch_first=True, norm_first=nf).eval()
    ours = from_torch_transformer(ref, vocab_size=50).eval()
    src, tgt = torch.randn(2, 9, 32), torch.randn(2, 6, 32); pad = torch.ones(2, 9, dtype=torch.bool); pad[1, 6:] = False
    with torch.no_grad():
        t = ref(src, tgt, tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(6), src_key_padding_mask=~pad, memory_key_padding_mask=~pad, tgt_is_causal=True)
        m = ours.decoder(tgt, None, memory=ours.encoder(src, pad).hidden, memory_mask=pad).hidden
    print(f"nn.Transformer(norm_first={nf}): max diff {(m-t).abs().max():.2e}")
from nlpattn.attention import MultiHeadAttention
torch.manual_seed(0); at = MultiHeadAttention(32, 4).eval(); x = torch.randn(3, 7, 32); p = torch.ones(3, 7, dtype=torch.bool); p[1, 5:] = False
f, _ = at(x, key_padding_mask=p, causal=True); s, _ = at(x, key_padding_mask=p, causal=True, output_attentions=True)
print(f"SDPA vs math path: max diff {(f-s).abs().max():.2e}")

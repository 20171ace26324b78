"""Training-step speed of our models against transformers' BERT / GPT-2, same config, same run.

Each step is forward + backward + fused AdamW on one batch; we report the median step time of
both and the ratio (theirs / ours: > 1 means we are faster). Absolute times on a shared
machine are noise; the ratio measured in one run is the figure to quote.

    python benchmarks/model_speed.py [--batch 32 --seq 128 --steps 10 --d 256 --layers 4]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

from nlpattn.interop.hf import from_transformers


def step_times(model, make_batch, steps: int, warmup: int = 2) -> list[float]:
    """Median-able list of wall times of `steps` training steps after `warmup` steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # transformers' default optimizer, and ours
    model.train()
    times = []
    for i in range(warmup + steps):
        batch = make_batch()
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def mlm_batch(vocab: int, batch: int, seq: int):
    """Random ids with 15% of positions labelled (the MLM training shape)."""
    def make():
        ids = torch.randint(5, vocab, (batch, seq))
        labels = torch.where(torch.rand(batch, seq) < 0.15, ids, torch.full_like(ids, -100))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return make


def clm_batch(vocab: int, batch: int, seq: int):
    """Random ids, labels = inputs (the CLM training shape)."""
    def make():
        ids = torch.randint(0, vocab, (batch, seq))
        return {"input_ids": ids, "labels": ids}
    return make


def compare(name: str, hf_model, make_batch, steps: int) -> dict:
    """Time transformers' model and our converted copy, interleaved, on the same batches."""
    ours = from_transformers(hf_model)
    theirs_t, ours_t = [], []
    for _ in range(2):  # interleave rounds so machine noise hits both alike
        theirs_t += step_times(hf_model, make_batch, steps // 2)
        ours_t += step_times(ours, make_batch, steps // 2)
    t, o = statistics.median(theirs_t), statistics.median(ours_t)
    print(f"{name:6s} transformers {t * 1e3:8.1f} ms/step   nlpattn {o * 1e3:8.1f} ms/step   "
          f"speed-up ×{t / o:.2f}")
    return {"model": name, "transformers_ms": t * 1e3, "nlpattn_ms": o * 1e3, "speedup": t / o}


def main() -> None:
    """Parse flags, run the MLM and CLM comparisons."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    a = p.parse_args()
    torch.manual_seed(0)
    bert = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=a.vocab, hidden_size=a.d, num_hidden_layers=a.layers, num_attention_heads=a.d // 64,
        intermediate_size=4 * a.d, max_position_embeddings=512))
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=a.vocab, n_embd=a.d, n_layer=a.layers, n_head=a.d // 64, n_positions=512,
        bos_token_id=None, eos_token_id=None))
    print(f"batch {a.batch} × seq {a.seq}, d={a.d}, layers={a.layers}, vocab={a.vocab}, "
          f"torch threads={torch.get_num_threads()}")
    compare("MLM", bert, mlm_batch(a.vocab, a.batch, a.seq), a.steps)
    compare("CLM", gpt2, clm_batch(a.vocab, a.batch, a.seq), a.steps)


if __name__ == "__main__":
    main()

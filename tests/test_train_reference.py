"""Same init, same batches: the Trainer's loss curve over 20 AdamW steps equals a plain PyTorch
loop training transformers' BertForMaskedLM / GPT2LMHeadModel within a few float32 rounding steps.

The plain loop is written out here, independently of nlpattn: its weight-decay groups, its
warm-up + cosine schedule and its optimizer are not taken from `nlpattn.train.schedule`.
"""
import copy
import math

import pytest
import torch
import transformers

import nlpattn.train.loop
from nlpattn.config import TrainConfig
from nlpattn.interop.hf import from_transformers
from nlpattn.train.loop import Trainer
from test_train_utils import ListBatches, events, float32_step, tiny_clm

STEPS, VOCAB = 20, 97
LR, MIN_LR, WARMUP, DECAY, BETAS, EPS, CLIP = 2e-3, 2e-4, 4, 0.05, (0.9, 0.98), 1e-8, 0.5
CFG = dict(max_steps=STEPS, lr=LR, min_lr=MIN_LR, warmup_steps=WARMUP, schedule="cosine", weight_decay=DECAY,
           beta1=BETAS[0], beta2=BETAS[1], adam_eps=EPS, clip_grad=CLIP, log_every=1, eval_every=1000,
           save_every=1000, progress=False, resume="never", precision="fp32")
# Measured on CPU: 1 float32 step at the loss's size (4.8e-7 at loss ~4.6) for BERT and GPT-2,
# 3 steps for the SGD accumulation test (7.2e-7 at loss ~3.9); a missing 1/grad_accum: 0.14.
ROUNDING_STEPS = 4

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_curves_equal(mine: list[float], theirs: list[float]) -> float:
    """Equal lengths, every loss within ROUNDING_STEPS float32 steps of the reference's."""
    assert len(mine) == len(theirs) == STEPS
    diffs = [abs(a - b) / float32_step(b) for a, b in zip(mine, theirs)]
    worst = max(abs(a - b) for a, b in zip(mine, theirs))
    print(f"max |loss diff| over {STEPS} steps: {worst:.3g} = {max(diffs):.1f} float32 steps "
          f"(loss {theirs[0]:.3f} → {theirs[-1]:.3f})")
    assert max(diffs) <= ROUNDING_STEPS, f"{worst:.3g} = {max(diffs):.1f} float32 rounding steps"
    return worst


def decay_groups(hf: torch.nn.Module) -> list[dict]:
    """AdamW groups by parameter name: weight matrices decay; biases, LayerNorms, embeddings
    (position / token type / the word embedding tied to the output) do not."""
    decay, no_decay = [], []
    for name, p in hf.named_parameters():  # a tied parameter is listed once
        embedding = any(s in name for s in ("embeddings.", "transformer.wte.", "transformer.wpe."))
        norm = "LayerNorm" in name or ".ln_" in name
        (no_decay if name.endswith("bias") or norm or embedding else decay).append(p)
    assert decay and no_decay and all(p.ndim == 2 for p in decay)
    return [{"params": decay, "weight_decay": DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int) -> float:
    """Linear warm-up to LR over WARMUP steps, then half a cosine from LR down to MIN_LR at STEPS."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = min(1.0, (step - WARMUP) / (STEPS - WARMUP))
    return MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress))


def reference_losses(hf: torch.nn.Module, batches: list[dict]) -> list[float]:
    """A plain loop: fused AdamW (torch's, as the Trainer), clipping, the schedule set by hand."""
    opt = torch.optim.AdamW(decay_groups(hf), lr=LR, betas=BETAS, eps=EPS, fused=True)
    hf.train()
    losses = []
    for step, batch in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = hf(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), CLIP)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def our_losses(model, micro_batches: list[dict], run_dir, grad_accum: int = 1, **overrides) -> list[float]:
    cfg = TrainConfig(**{**CFG, **overrides}, grad_accum=grad_accum,
                      batch_size=micro_batches[0]["input_ids"].shape[0])
    Trainer(model, cfg, ListBatches(micro_batches), run_dir).fit()
    return [e["loss"] for e in events(run_dir)]


def mlm_batches(g: torch.Generator, B: int = 4, T: int = 16) -> list[dict]:
    out = []
    for _ in range(4):  # 4 distinct batches, seen 5 times each: the loss must go down
        ids = torch.randint(5, VOCAB, (B, T), generator=g)
        mask = torch.ones(B, T, dtype=torch.long)
        mask[1, T - 5:] = 0  # a padded row
        ids[mask == 0] = 0
        chosen = (torch.rand(B, T, generator=g) < 0.25) & (mask == 1)
        chosen[0, 3] = True
        labels = torch.where(chosen, ids, -100)
        out.append({"input_ids": torch.where(chosen, 4, ids), "attention_mask": mask, "labels": labels})
    return out * (STEPS // 4)


def test_mlm_training_equals_bert_for_masked_lm(tmp_path):
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    ours = from_transformers(hf)
    batches = mlm_batches(torch.Generator().manual_seed(1))
    mine = our_losses(ours, batches, tmp_path)
    theirs = reference_losses(hf, batches)
    assert theirs[-1] < theirs[3] - 0.1  # it learns
    assert_curves_equal(mine, theirs)


def test_clm_training_with_grad_accumulation_equals_gpt2(tmp_path):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=40, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=None, eos_token_id=None))
    ours = from_transformers(hf)
    g = torch.Generator().manual_seed(2)
    full = [torch.randint(0, VOCAB, (4, 16), generator=g) for _ in range(4)] * (STEPS // 4)
    halves = [{"input_ids": ids[h], "labels": ids[h]} for ids in full for h in (slice(0, 2), slice(2, 4))]
    mine = our_losses(ours, halves, tmp_path, grad_accum=2)  # 2 micro-batches of 2 == one batch of 4
    theirs = reference_losses(hf, [{"input_ids": ids, "labels": ids} for ids in full])
    assert theirs[-1] < theirs[3] - 0.1
    assert_curves_equal(mine, theirs)


def test_grad_accumulation_averages_like_one_big_batch(tmp_path, monkeypatch):
    """Plain SGD, no clipping, constant lr: the update is linear in the gradient, so a missing
    (or doubled) 1/grad_accum changes the curve; AdamW and clipping would normalise it away."""
    model, batches = tiny_clm(0)
    reference = copy.deepcopy(model)
    monkeypatch.setattr(nlpattn.train.loop, "build_optimizer",
                        lambda m, cfg: torch.optim.SGD(m.parameters(), lr=cfg.lr))
    full = batches[:4] * (STEPS // 4)
    halves = [{k: v[h] if torch.is_tensor(v) else v for k, v in b.items()}
              for b in full for h in (slice(0, 2), slice(2, 4))]
    mine = our_losses(model, halves, tmp_path, grad_accum=2, lr=0.5, clip_grad=None, schedule="constant",
                      warmup_steps=0, weight_decay=0.0)
    opt, theirs = torch.optim.SGD(reference.parameters(), lr=0.5), []
    for batch in full:
        loss = reference(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        theirs.append(loss.item())
    assert theirs[-1] < theirs[0] - 0.1
    assert_curves_equal(mine, theirs)

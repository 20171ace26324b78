"""Same init, same batches: the Trainer's loss curve over 20 AdamW steps equals a plain PyTorch
loop training transformers' BertForMaskedLM / GPT2LMHeadModel, within 1e-4."""
import pytest
import torch
import transformers

from nlpattn.config import TrainConfig
from nlpattn.interop.hf import from_transformers
from nlpattn.train.loop import Trainer
from nlpattn.train.schedule import lr_multiplier, param_groups
from test_train_utils import ListBatches, events

STEPS, VOCAB = 20, 97
CFG = dict(max_steps=STEPS, lr=2e-3, min_lr=2e-4, warmup_steps=4, schedule="cosine", weight_decay=0.05,
           beta1=0.9, beta2=0.98, adam_eps=1e-8, clip_grad=0.5, log_every=1, eval_every=1000,
           save_every=1000, progress=False, resume="never")


pytestmark = pytest.mark.usefixtures("one_thread")


def reference_losses(hf: torch.nn.Module, batches: list[dict]) -> list[float]:
    """A plain loop with the same optimizer, groups, schedule and clipping as the Trainer."""
    c = TrainConfig(**CFG)
    opt = torch.optim.AdamW(param_groups(hf, c.weight_decay), lr=c.lr, betas=(c.beta1, c.beta2), eps=c.adam_eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(c.schedule, c.warmup_steps, STEPS, c.min_lr / c.lr))
    hf.train()
    losses = []
    for batch in batches:
        loss = hf(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), c.clip_grad)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def our_losses(model, micro_batches: list[dict], run_dir, grad_accum: int = 1) -> list[float]:
    cfg = TrainConfig(**CFG, grad_accum=grad_accum, batch_size=micro_batches[0]["input_ids"].shape[0])
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
    assert len(mine) == STEPS and theirs[-1] < theirs[3] - 0.1  # it learns
    diff = max(abs(a - b) for a, b in zip(mine, theirs))
    print(f"max |loss diff| over {STEPS} steps: {diff:.3g} (loss {theirs[0]:.3f} → {theirs[-1]:.3f})")
    assert diff <= 1e-4


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
    assert len(mine) == STEPS and theirs[-1] < theirs[3] - 0.1
    diff = max(abs(a - b) for a, b in zip(mine, theirs))
    print(f"max |loss diff| over {STEPS} steps: {diff:.3g} (loss {theirs[0]:.3f} → {theirs[-1]:.3f})")
    assert diff <= 1e-4

"""Masked-LM pretraining at equal wall-clock: `nlpattn pretrain` against transformers' recipe.

Ours is `nlpattn pretrain --config CONFIG` run in-process (its recipe: masking rate, layout,
schedule, precision as the config says). The peer is a randomly initialised BertForMaskedLM of
the same shape (d_model, layers, heads, d_ff, vocabulary, max length, dropout) trained the way
transformers' `run_mlm_no_trainer.py` does: DataCollatorForLanguageModeling (15 % masking,
80/10/10) over the *same* tokenizer, token cache and training windows (framed [CLS] ... [SEP] as
ours are when the run sets `data.cls_sep`), the Trainer's default
optimizer (fused AdamW) with our lr, betas, eps and decay groups, `get_scheduler` with our
schedule, warm-up, step count and gradient accumulation, under the same autocast. The peer trains
for the wall-clock ours took (its evaluations and checkpoints included), then both are scored on
the same fixed masked validation batches (15 % masking, seeded): masked-token loss and accuracy.
The peer is saved as a transformers directory, so `nlpattn finetune init=OUT/peer` fine-tunes it
exactly as it fine-tunes ours (`init=OUT/ours`).

`--ours RUN` takes an existing `nlpattn pretrain` run as ours instead of training it again: the
peer trains for that run's wall-clock (summary.json's wall_s) with that run's config, tokenizer and
token cache. The two then did not share the machine's state (a shared host's speed drifts), which
the report says.

    python benchmarks/mlm_peer.py [--config configs/pretrain/mlm-corpus.yaml] [--out runs/bench-mlm-peer]
                                  [--eval-batches 20] [k=v ...]
    python benchmarks/mlm_peer.py --ours runs/mlm-corpus --out runs/bench-mlm-peer-60
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import transformers
from tqdm import tqdm

from nlpattn.config import load_config
from nlpattn.data.blocks import RandomBlocks, SequentialBlocks
from nlpattn.data.collate import MLMCollator, frame_cls_sep
from nlpattn.fileio import atomic_write_json, atomic_write_text
from nlpattn.train.schedule import budget_clock, lr_multiplier, param_groups

EVAL_MASK_RATE, EVAL_SEED = 0.15, 1234


def peer_model(cfg, vocab_size: int) -> transformers.BertForMaskedLM:
    """A randomly initialised BertForMaskedLM of our model's shape."""
    m = cfg.model
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=m.d_model, num_hidden_layers=m.n_layers,
                                     num_attention_heads=m.n_heads, intermediate_size=m.d_ff,
                                     max_position_embeddings=m.max_len, hidden_dropout_prob=m.dropout,
                                     attention_probs_dropout_prob=m.dropout, type_vocab_size=2, pad_token_id=0)
    return transformers.BertForMaskedLM._from_config(config, attn_implementation="sdpa")


def peer_optimizer(model: torch.nn.Module, t) -> torch.optim.Optimizer:
    """transformers' Trainer default optimizer with our lr / betas / eps and decay groups."""
    args = transformers.TrainingArguments(output_dir="/tmp/unused", report_to=[], learning_rate=t.lr,
                                          weight_decay=t.weight_decay, adam_beta1=t.beta1, adam_beta2=t.beta2,
                                          adam_epsilon=t.adam_eps)
    cls, kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(args)
    return cls(param_groups(model, t.weight_decay), **kwargs)


def fixed_eval_batches(valid_cache, block_size: int, tok, batch_size: int, n: int) -> list[dict]:
    """The first `n` validation batches, masked once with a fixed seed: the same for both models."""
    blocks = SequentialBlocks(valid_cache, block_size)
    collate = MLMCollator(tok, EVAL_MASK_RATE)
    gen = torch.Generator().manual_seed(EVAL_SEED)
    count = min(n, math.ceil(len(blocks) / batch_size))
    return [collate([blocks[i] for i in range(b * batch_size, min(len(blocks), (b + 1) * batch_size))], gen)
            for b in range(count)]


@torch.no_grad()
def masked_scores(model: torch.nn.Module, batches: list[dict], ours: bool) -> dict:
    """Token-weighted masked-LM loss and accuracy over `batches`."""
    model.eval()
    loss_sum, correct, total = 0.0, 0, 0
    for batch in batches:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        keep = batch["labels"] != -100
        logits = out.logits if ours else out.logits[keep]  # ours: masked positions only, row-major
        n = int(keep.sum())
        loss_sum += float(out.loss) * n
        correct += int((logits.argmax(-1) == batch["labels"][keep]).sum())
        total += n
    return {"loss": loss_sum / total, "accuracy": correct / total, "tokens": total}


def peer_scheduler(opt, t):
    """transformers' get_scheduler for a schedule over steps; over minutes (`train.decay_over`),
    which transformers has no scheduler for, the same LambdaLR as ours with a BudgetClock."""
    warmup = int(t.warmup_ratio * t.max_steps) if t.warmup_ratio is not None else t.warmup_steps
    clock = budget_clock(t)
    if clock is None:
        kind = t.schedule if t.schedule != "constant" else "constant_with_warmup"
        return transformers.get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=t.max_steps), None
    f = lr_multiplier(t.schedule, warmup, t.max_steps, t.min_lr / t.lr, clock)
    return torch.optim.lr_scheduler.LambdaLR(opt, f), clock


def peer_windows(blocks, start: int, n: int, d, tok) -> torch.Tensor:
    """(n, block_size) training windows `start`..`start+n`, framed [CLS] ... [SEP] as ours are when
    `data.cls_sep` is set (ours' MLMCollator frames them; transformers' collator does not)."""
    ids = torch.stack([torch.as_tensor(blocks[start + i]) for i in range(n)])
    return frame_cls_sep(ids, None, tok) if d.cls_sep else ids


def train_peer(cfg, summary: dict, ours_dir: Path, tok, train_cache,
               out: Path) -> tuple[transformers.BertForMaskedLM, dict]:
    """Train the peer on ours' windows for ours' wall-clock; returns the model and its stats."""
    t, d = cfg.train, cfg.data
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(ours_dir)
    collate = transformers.DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15)
    torch.manual_seed(t.seed)
    model = peer_model(cfg, tok.vocab_size).train()
    opt = peer_optimizer(model, t)
    budget = summary["wall_s"]
    sched, clock = peer_scheduler(opt, t)
    blocks = RandomBlocks(train_cache, d.block_size, seed=t.seed)
    bf16 = summary.get("precision") == "bf16"
    start, step, sample = time.perf_counter(), 0, 0
    bar = tqdm(total=round(budget), unit="s", desc="peer", disable=not t.progress)
    while step < t.max_steps and time.perf_counter() - start < budget:
        for _ in range(t.grad_accum):
            batch = collate([{"input_ids": ids.tolist()} for ids in peer_windows(blocks, sample, t.batch_size, d, tok)])
            sample += t.batch_size
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss / t.grad_accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad)
        opt.step()
        if clock is not None:  # train.decay_over=minutes: the decay ends with the peer's budget
            clock.fraction = (time.perf_counter() - start) / budget
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 20 == 0:
            bar.update(round(time.perf_counter() - start) - bar.n)
            bar.set_postfix(step=step, loss=f"{loss.item() * t.grad_accum:.3f}", refresh=False)
    bar.close()
    partial = out / "peer.partial"  # renamed when complete: never a half-written model at out/peer
    model.save_pretrained(partial)
    hf_tok.save_pretrained(partial)
    partial.rename(out / "peer")
    return model, {"steps": step, "wall_s": round(time.perf_counter() - start, 1), "precision": "bf16" if bf16 else "fp32"}


def markdown(result: dict) -> str:
    """The comparison as a markdown table."""
    rows = ["| model | steps | wall s | masked val loss | masked val accuracy |", "|---|---:|---:|---:|---:|"]
    for name in ("ours", "peer"):
        r = result[name]
        rows.append(f"| {name} | {r['steps']} | {r['wall_s']} | {r['eval']['loss']:.4f} | {r['eval']['accuracy']:.4f} |")
    return "\n".join([f"`{result['command']}`", "", *rows,
                      f"\nSame {result['eval_tokens']} masked validation tokens for both "
                      f"({EVAL_MASK_RATE:.0%} masking, seed {EVAL_SEED}).", ""])


def usage_error(message: str) -> None:
    """Print one line naming what is wrong and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def ours_run(args) -> tuple[Path, dict]:
    """Ours' run directory and summary: `--ours RUN` as it is, or a fresh `nlpattn pretrain` run."""
    from nlpattn.train.pretrain import run_pretrain

    if args.ours is None:
        out = Path(args.out) / "ours"
        return out, run_pretrain(load_config(args.config, [*args.overrides, f"output_dir={out}"]))
    if args.overrides:
        usage_error(f"--ours {args.ours}: key=value overrides apply only when ours is trained here")
    summary = args.ours / "summary.json"
    if not summary.is_file():
        usage_error(f"{summary}: no such file; --ours takes a finished `nlpattn pretrain` run")
    return args.ours, json.loads(summary.read_text())


def main(argv: list[str] | None = None) -> int:
    """Pretrain ours (or take --ours), then the peer for the same wall-clock; score both; write JSON and markdown."""
    from nlpattn.data.corpus import build_corpus
    from nlpattn.models import load_model
    from nlpattn.tokenizer import load_tokenizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/pretrain/mlm-corpus.yaml")
    p.add_argument("--out", default="runs/bench-mlm-peer")
    p.add_argument("--eval-batches", type=int, default=20)
    p.add_argument("--ours", type=Path, help="an existing pretraining run to use as ours (not trained again)")
    p.add_argument("overrides", nargs="*", help="key=value overrides for both sides")
    args = p.parse_args(argv)
    out = Path(args.out)
    if (out / "peer").exists():
        usage_error(f"{out / 'peer'} exists; choose another --out")
    ours_dir, summary = ours_run(args)
    cfg = load_config(ours_dir / "config.yaml")
    tok = load_tokenizer(ours_dir)
    train_cache, valid_cache = build_corpus(cfg, tok)  # the cache ours built, reused
    peer, peer_stats = train_peer(cfg, summary, ours_dir, tok, train_cache, out)
    batches = fixed_eval_batches(valid_cache, cfg.data.block_size, tok, cfg.train.eval_batch_size or 32,
                                 args.eval_batches)
    ours = load_model(ours_dir)
    source = [f"--ours {args.ours}"] if args.ours else [f"--config {args.config}", *args.overrides]
    result = {"command": "python benchmarks/mlm_peer.py " + " ".join([*source, f"--out {args.out}"]),
              "ours_run": str(ours_dir),
              "ours": {"steps": summary["steps"], "wall_s": summary["wall_s"], "precision": summary.get("precision"),
                       "eval": masked_scores(ours, batches, ours=True)},
              "peer": {**peer_stats, "eval": masked_scores(peer, batches, ours=False)}}
    result["eval_tokens"] = result["ours"]["eval"]["tokens"]
    atomic_write_json(out / "mlm_peer.json", result)
    atomic_write_text(out / "mlm_peer.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

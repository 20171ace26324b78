"""SST-2 from scratch: `nlpattn finetune` against transformers' BertForSequenceClassification,
same tokenizer, same batches, same seeds, in one run.

Ours is `nlpattn finetune --config configs/finetune/sst2.yaml train.seed=N` run in-process.
The peer is a randomly initialised BertForSequenceClassification of the same size (d 256,
4 layers, 4 heads, d_ff 1024) on the tokenizer ours trained and the same length-grouped
batches, trained with transformers' own recipe pieces: AdamW lr 2e-4 (TrainingArguments'
default weight decay 0), `get_linear_schedule_with_warmup` with 6 % warm-up, grad-norm clip
1.0, one epoch, batch 32, max length 64. Per seed it prints dev accuracy and training time
(the optimisation steps only) of both, then the means and the time ratio peer / ours
(> 1: we are faster). Absolute times on a shared machine are noise; quote the ratio.

    python benchmarks/sst2_peer.py [--seeds 0 1 2] [--out runs/bench-sst2-peer] [--epochs 0.05]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
import transformers

from nlpattn.config import load_config
from nlpattn.data.collate import ClassificationCollator
from nlpattn.data.epochs import EpochBatches
from nlpattn.data.glue import encode_glue, read_glue_split
from nlpattn.tokenizer import load_tokenizer
from nlpattn.train.finetune import run_finetune

CONFIG = "configs/finetune/sst2.yaml"


def run_ours(seed: int, out: str, overrides: list[str]) -> dict:
    """`nlpattn finetune` on SST-2 with `seed`; dev accuracy, training seconds, run dir."""
    run_dir = f"{out}/ours-s{seed}"
    cfg = load_config(CONFIG, [f"output_dir={run_dir}", f"train.seed={seed}", "train.progress=false", *overrides])
    report = run_finetune(cfg)
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    return {"accuracy": report["metrics"]["sst2"]["accuracy"], "train_s": summary["train_s"], "run_dir": run_dir}


def peer_model(cfg, vocab_size: int, pad_id: int) -> transformers.BertForSequenceClassification:
    """BertForSequenceClassification with our config's sizes, randomly initialised."""
    m = cfg.model
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=m.d_model, num_hidden_layers=m.n_layers,
        num_attention_heads=m.n_heads, intermediate_size=m.d_ff, max_position_embeddings=m.max_len,
        num_labels=2, pad_token_id=pad_id))


def dev_accuracy(model, examples: list[dict], collate, batch_size: int = 64) -> float:
    """Fraction of dev examples whose argmax logit is the gold label."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i:i + batch_size])
            labels = batch.pop("labels")
            correct += int((model(**batch).logits.argmax(-1) == labels).sum())
    return correct / len(examples)


def run_peer(seed: int, tokenizer_dir: str, overrides: list[str]) -> dict:
    """The peer on ours' tokenizer and batches for `seed`; dev accuracy and training seconds."""
    cfg = load_config(CONFIG, [f"train.seed={seed}", *overrides])
    t = cfg.train
    tok = load_tokenizer(tokenizer_dir)
    collate = ClassificationCollator(tok.pad_id)
    train = encode_glue(read_glue_split("sst2", "train", cfg.glue.data_dir), tok, cfg.glue.max_length)
    dev = encode_glue(read_glue_split("sst2", "dev", cfg.glue.data_dir), tok, cfg.glue.max_length)
    transformers.set_seed(seed)
    model = peer_model(cfg, tok.vocab_size, tok.pad_id)
    batches = EpochBatches(train, t.batch_size, collate, seed=seed)
    steps = math.ceil(t.epochs * batches.batches_per_epoch)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=0.0)
    sched = transformers.get_linear_schedule_with_warmup(opt, math.ceil(t.warmup_ratio * steps), steps)
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        model(**next(batches)).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - t0
    return {"accuracy": dev_accuracy(model, dev, collate), "train_s": train_s}


def main() -> None:
    """Alternate ours and the peer seed by seed (so machine noise hits both) and print a table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/bench-sst2-peer")
    p.add_argument("--epochs", type=float, help="fewer epochs for a quick check (default: the config's 1)")
    args = p.parse_args()
    overrides = [f"train.epochs={args.epochs}"] if args.epochs else []
    rows = []
    print("seed | nlpattn acc | nlpattn train s | peer acc | peer train s", flush=True)
    for seed in args.seeds:
        ours = run_ours(seed, args.out, overrides)
        peer = run_peer(seed, ours["run_dir"], overrides)
        rows.append((ours, peer))
        print(f"{seed} | {100 * ours['accuracy']:.1f} | {ours['train_s']:.0f} | "
              f"{100 * peer['accuracy']:.1f} | {peer['train_s']:.0f}", flush=True)
    ours_mean, peer_mean = ({key: statistics.mean(r[who][key] for r in rows) for key in ("accuracy", "train_s")}
                            for who in (0, 1))
    print(f"mean | {100 * ours_mean['accuracy']:.1f} | {ours_mean['train_s']:.0f} | "
          f"{100 * peer_mean['accuracy']:.1f} | {peer_mean['train_s']:.0f}")
    print(f"training time ratio peer / nlpattn: {peer_mean['train_s'] / ours_mean['train_s']:.2f}")


if __name__ == "__main__":
    main()

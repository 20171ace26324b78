"""SST-2 from scratch: `nlpattn finetune` against transformers' BertForSequenceClassification,
same tokenizer, same batches, same seeds, in one run.

Ours is `nlpattn finetune --config configs/finetune/sst2.yaml train.seed=N` run in-process.
The peer is a randomly initialised BertForSequenceClassification of the same size (d 256,
4 layers, 4 heads, d_ff 1024) on the tokenizer ours trained and the same length-grouped
batches. The peer's optimizer is the one transformers' Trainer builds by default
(`Trainer.get_optimizer_cls_and_kwargs(TrainingArguments())`: torch AdamW, fused), with our lr,
betas, eps, weight decay and no-decay groups (biases, norms, embeddings); the schedule is
`get_linear_schedule_with_warmup` with our warm-up ratio, grad-norm clip as ours, one epoch,
batch 32, max length 64. Ours runs twice per seed: the default (pre-LN) and BERT's layout
(`model.norm=post model.type_vocab_size=2`). `describe()` gives both sides' settings; the script
prints them and tests/test_benchmarks.py checks they match. Per seed it prints dev accuracy and
training time (the optimisation steps only), then the means and the time ratios peer / ours
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
from nlpattn.train.schedule import build_optimizer, param_groups

CONFIG = "configs/finetune/sst2.yaml"
BERT_LAYOUT = ["model.norm=post", "model.type_vocab_size=2"]
FAIR = ["train.precision=fp32"]  # the peer runs in float32 (no autocast): so does ours


def peer_optimizer(model: torch.nn.Module, t) -> torch.optim.Optimizer:
    """transformers' Trainer default optimizer class and kwargs, with our lr / betas / eps and our
    weight-decay groups."""
    args = transformers.TrainingArguments(output_dir="/tmp/unused", report_to=[], learning_rate=t.lr,
                                          weight_decay=t.weight_decay, adam_beta1=t.beta1, adam_beta2=t.beta2,
                                          adam_epsilon=t.adam_eps, max_grad_norm=t.clip_grad)
    cls, kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(args)
    return cls(param_groups(model, t.weight_decay), **kwargs)


def optimizer_facts(opt: torch.optim.Optimizer) -> dict:
    """What an optimizer does: kind, fused, lr, betas, eps, weight decay and how many weights
    (elements: BERT's separate q/k/v hold as many as our fused qkv) are decayed or not."""
    g = opt.param_groups[0]
    numel = {}
    for group in opt.param_groups:
        numel[group["weight_decay"]] = numel.get(group["weight_decay"], 0) + sum(p.numel() for p in group["params"])
    return {"optimizer": type(opt).__name__, "fused": bool(opt.defaults.get("fused")), "lr": opt.defaults["lr"],
            "betas": tuple(g["betas"]), "eps": g["eps"], "elements_by_decay": dict(sorted(numel.items()))}


def describe(overrides: list[str] | None = None) -> dict:
    """Both sides' training settings (built, not run): {"ours": {...}, "peer": {...}}."""
    overrides = [*FAIR, *(overrides or [])]
    cfg = load_config(CONFIG, ["tokenizer.kind=char", *overrides])
    t = cfg.train
    torch.manual_seed(0)
    from nlpattn.models import build_model

    ours_model = build_model(load_config(CONFIG, ["tokenizer.kind=char", *overrides, *BERT_LAYOUT]).model,
                             "classification", num_labels=2)
    peer = peer_model(cfg, ours_model.cfg.vocab_size, 0)
    common = {"batch": t.batch_size, "epochs": t.epochs, "max_length": cfg.glue.max_length,
              "padding": cfg.glue.padding, "clip": t.clip_grad,
              "schedule": (t.schedule, t.warmup_ratio, t.min_lr), "eval": "whole dev set, once, after training"}
    return {"ours": {**optimizer_facts(build_optimizer(ours_model, t)), **common, "precision": t.precision},
            "peer": {**optimizer_facts(peer_optimizer(peer, t)), **common, "precision": "fp32",
                     "schedule": ("linear", t.warmup_ratio, 0.0)}}


def run_ours(seed: int, out: str, overrides: list[str], name: str = "ours") -> dict:
    """`nlpattn finetune` on SST-2 with `seed`; dev accuracy, training seconds, run dir."""
    run_dir = f"{out}/{name}-s{seed}"
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
    collate = ClassificationCollator(tok.pad_id, padding=cfg.glue.padding, max_length=cfg.glue.max_length)
    train = encode_glue(read_glue_split("sst2", "train", cfg.glue.data_dir), tok, cfg.glue.max_length)
    dev = encode_glue(read_glue_split("sst2", "dev", cfg.glue.data_dir), tok, cfg.glue.max_length)
    transformers.set_seed(seed)
    model = peer_model(cfg, tok.vocab_size, tok.pad_id)
    batches = EpochBatches(train, t.batch_size, collate, seed=seed)
    steps = math.ceil(t.epochs * batches.batches_per_epoch)
    opt = peer_optimizer(model, t)
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
    overrides = FAIR + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    for side, facts in describe(overrides).items():
        print(f"{side}: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    rows = []
    print("seed | nlpattn acc | train s | nlpattn BERT-layout acc | train s | peer acc | peer train s", flush=True)
    for seed in args.seeds:
        ours = run_ours(seed, args.out, overrides)
        bert = run_ours(seed, args.out, [*overrides, *BERT_LAYOUT], name="ours-bert-layout")
        peer = run_peer(seed, ours["run_dir"], overrides)
        rows.append((ours, bert, peer))
        print(" | ".join([str(seed)] + [f"{100 * r['accuracy']:.1f} | {r['train_s']:.0f}" for r in rows[-1]]),
              flush=True)
    means = [{key: statistics.mean(r[who][key] for r in rows) for key in ("accuracy", "train_s")}
             for who in range(3)]
    print(" | ".join(["mean"] + [f"{100 * m['accuracy']:.1f} | {m['train_s']:.0f}" for m in means]))
    print(f"training time ratio peer / nlpattn: {means[2]['train_s'] / means[0]['train_s']:.2f} (default), "
          f"{means[2]['train_s'] / means[1]['train_s']:.2f} (BERT layout)")


if __name__ == "__main__":
    main()

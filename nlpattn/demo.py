"""`make demo`: the main job end to end on the bundled real data, showing each stage.

Stages (each prints what it did and where its output is):
  1. models    — build each configs/model/*.yaml model, print parameters and forward FLOPs
  2. pretrain  — WordPiece tokenizer + MLM-small on WikiText-2 for a few minutes
  3. fine-tune — SST-2 from that run; dev accuracy
  4. cost      — Table 1 measured (quick sweep) and an equal-budget transformer/LSTM/GRU/CNN race
Everything reads the bundled data under data/ and writes under runs/.
"""
from __future__ import annotations

import sys
from pathlib import Path

from nlpattn.config import load_config


def describe_model(config_path: str | Path, overrides: list[str] | None = None,
                   seq_len: int = 128) -> dict:
    """Build the model a config describes; return its parameter count and one-forward FLOPs."""
    from nlpattn.cost.measure import model_forward_flops
    from nlpattn.models import build_model

    from nlpattn.train.memory import check_model_fits

    cfg = load_config(config_path, overrides)
    check_model_fits(cfg)
    task = {"encoder": "mlm", "decoder": "clm", "encoder-decoder": "seq2seq"}[cfg.model.arch]
    model = build_model(cfg.model, task).eval()
    seq_len = min(seq_len, cfg.model.max_len)
    return {"config": str(config_path), "task": task, "params": model.num_parameters(),
            "seq_len": seq_len, "forward_flops": model_forward_flops(model, 1, seq_len)}


def print_model_table(rows: list[dict]) -> None:
    """Print a small table of models, their size and cost."""
    print(f"{'config':45s} {'task':8s} {'params':>12s} {'GFLOPs/fwd':>11s}  (batch 1 × seq_len)")
    for r in rows:
        print(f"{r['config']:45s} {r['task']:8s} {r['params']:12,d} {r['forward_flops'] / 1e9:11.3f}"
              f"  (1 × {r['seq_len']})")


def stage_models() -> None:
    """Stage 1: every shipped model config, its parameter count and forward FLOPs."""
    print("== 1. models: parameters and FLOPs of one forward pass (FlopCounterMode) ==")
    rows = [describe_model(p) for p in sorted(Path("configs/model").glob("*.yaml"))]
    print_model_table(rows)


def cli_info(args) -> int:
    """`nlpattn info --config X [k=v]`: build the model, print its parameters and FLOPs."""
    from nlpattn.errors import ConfigError

    if not args.config:
        raise ConfigError("info needs --config CONFIG.yaml")
    print_model_table([describe_model(args.config, args.overrides)])
    return 0


def main() -> int:
    """Run every demo stage in order."""
    from nlpattn.allocator import apply_from_environment

    apply_from_environment()  # as the nlpattn command does
    stage_models()
    stage_pretrain()
    stage_finetune()
    stage_cost()
    return 0


def stage_pretrain(run_dir: str = "runs/mlm-small", minutes: float = 3.0) -> dict:
    """Stage 2: WordPiece tokenizer on WikiText-2, then MLM-small pretraining for a few minutes."""
    from nlpattn.train.pretrain import run_pretrain

    print(f"\n== 2. pretrain: WordPiece tokenizer + MLM-small on WikiText-2, {minutes:g} minutes ==")
    overrides = [f"output_dir={run_dir}", f"train.max_minutes={minutes}", "train.max_steps=200",
                 "train.warmup_steps=30", "train.log_every=10", "train.eval_every=50",
                 "train.save_every=50", "train.resume=never"]
    summary = run_pretrain(load_config("configs/pretrain/mlm-small.yaml", overrides))
    print(f"{summary['steps']} steps, {summary['tokens']:,} tokens in {summary['wall_s']:.0f}s "
          f"({summary['tokens_per_s']:,.0f} tokens/s); val loss {summary['final_val_loss']:.3f}, "
          f"perplexity {summary['final_ppl']:.1f}, masked-token accuracy {summary['final_val_accuracy']:.3f}")
    print(f"run directory: {run_dir}  (config.yaml, tokenizer.json, model.safetensors, metrics.jsonl, "
          f"tb/, checkpoints/, summary.json; `tensorboard --logdir {run_dir}/tb`)")
    return summary


def stage_finetune(init: str = "runs/mlm-small", run_dir: str = "runs/mlm-small-sst2",
                   epochs: float = 0.3, minutes: float = 5.0) -> dict:
    """Stage 3: fine-tune the pretrained encoder on SST-2 (part of an epoch), report dev accuracy."""
    from nlpattn.train.finetune import report_line, run_finetune

    print(f"\n== 3. fine-tune: SST-2 from {init}, {epochs:g} epoch (at most {minutes:g} minutes) ==")
    overrides = [f"init={init}", f"output_dir={run_dir}", f"train.epochs={epochs}",
                 f"train.max_minutes={minutes}", "train.log_every=25"]
    report = run_finetune(load_config("configs/finetune/sst2.yaml", overrides))
    print(report_line(report))
    print(f"SST-2 dev accuracy: {100 * report['metrics']['sst2']['accuracy']:.1f}%  "
          f"(eval/sst2.json, predictions/sst2-dev.tsv in {run_dir}; all tasks: nlpattn glue --init {init})")
    return report


def stage_cost(compare_minutes: float = 0.5) -> None:
    """Stage: Table 1 measured (the quick sweep) and a short equal-budget body comparison."""
    from nlpattn.cost.compare import run_compare
    from nlpattn.cost.report import run_cost

    quick, compare = "configs/cost/quick.yaml", "configs/cost/compare.yaml"
    print("\n== 4. cost: Table 1 of 'Attention Is All You Need', measured (quick sweep, d = 64) ==")
    paths = run_cost(load_config(quick), quick, f"nlpattn cost --config {quick}")
    text = paths[0].read_text(encoding="utf-8")
    print(text[text.index("## Side by side"):text.index("## Plots")])
    print("full sweep: nlpattn cost --config configs/cost/table1.yaml (d = 256, n up to 4096, ~5 min)")
    print(f"\n== 4b. cost: equal-budget causal LMs, {compare_minutes:g} min per body (tiny-shakespeare) ==")
    overrides = [f"cost.compare_minutes={compare_minutes}", "output_dir=runs/cost-compare-demo"]
    run_compare(load_config(compare, overrides), compare,
                f"nlpattn cost compare --config {compare} " + " ".join(overrides), overrides)


if __name__ == "__main__":
    sys.exit(main())

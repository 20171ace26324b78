"""Pipeline overhead: `nlpattn pretrain` end to end (data loading, logging, checkpoints) against
the bare training step of the same model on the same batch shape, one run.

The pipeline's cost per step comes from two `nlpattn pretrain` runs of the same config that
differ only in `train.max_steps` (N and 2N, each in its own process, same token cache): the
difference of their `summary.json` wall times (the Trainer's own clock: loop, logging,
checkpoints, final evaluation and save) divided by the N extra steps, so start-up and the
final evaluation cancel. Periodic evaluation is switched off (`train.eval_every` past the end);
logging and checkpointing keep the config's cadence unless given. The bare step is forward +
backward + clipping + the Trainer's fused AdamW step + zero_grad on a random batch of the same
shape, in the same precision and threads, timed in a third process (mean of N steps after
warm-up). Overhead = pipeline s/step ÷ bare s/step − 1.

The host's speed drifts by ±10 % between processes on a shared machine, as much as the 5 % being
measured: `--rounds R` repeats the three measurements R times, alternating which comes first,
and reports each round's overhead and their median.

    python benchmarks/pipeline.py                                   # configs/pretrain/clm-small.yaml, N = 40
    python benchmarks/pipeline.py --rounds 3                        # the median of 3 interleaved rounds
    python benchmarks/pipeline.py --steps 4 --set model.d_model=32 model.n_layers=1 data.block_size=32 train.batch_size=2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pretrain(config: str, overrides: list[str], out: Path, steps: int) -> dict:
    """`nlpattn pretrain` in its own process; its summary.json."""
    cmd = [sys.executable, "-m", "nlpattn", "pretrain", "--config", config, *overrides, f"output_dir={out}",
           f"train.max_steps={steps}", "train.max_minutes=null", "train.resume=never", "train.progress=false",
           f"train.eval_every={10 ** 9}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"pretrain failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def bare(run_dir: Path, steps: int, warmup: int) -> dict:
    """Time the bare step of the run's model in a fresh process; its measurements."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare", str(run_dir), "--steps", str(steps),
           "--warmup", str(warmup)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bare step failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bare_worker(run_dir: Path, steps: int, warmup: int) -> dict:
    """The run's model (fresh init), the Trainer's optimizer, its precision and threads: s/step."""
    import torch

    from nlpattn.config import load_config
    from nlpattn.models import load_model
    from nlpattn.train.runtime import resolve_precision, set_threads
    from nlpattn.train.schedule import build_optimizer

    cfg = load_config(run_dir / "config.yaml")
    if cfg.train.num_threads is not None:
        torch.set_num_threads(cfg.train.num_threads)
    model = load_model(run_dir).train()
    precision = resolve_precision(cfg.train.precision)[0]
    opt = build_optimizer(model, cfg.train)
    t, d = cfg.train, cfg.data
    ids = torch.randint(5, model.cfg.vocab_size, (t.batch_size, d.block_size))
    batch = {"input_ids": ids, "labels": ids}
    if cfg.objective == "mlm":
        batch["labels"] = torch.where(torch.rand(ids.shape) < d.mlm_probability, ids, -100)
    if cfg.objective == "seq2seq":
        batch = {"input_ids": ids, "decoder_input_ids": ids[:, : d.block_size // 4], "labels": ids[:, : d.block_size // 4]}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        if t.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"bare_s_per_step": sum(times) / len(times), "precision": precision, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    """Parse flags; run the two pretrain runs and the bare step; print and write the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/pretrain/clm-small.yaml")
    p.add_argument("--steps", type=int, default=40, help="N: the runs take N and 2N steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1, help="repeat short, long and bare R times; report the median")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides for both runs")
    p.add_argument("--out", default="runs/bench/pipeline", help="writes OUT.json")
    p.add_argument("--bare", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.bare:
        print(json.dumps(bare_worker(Path(a.bare), a.steps, a.warmup)), flush=True)
        return 0
    if a.rounds < 1:
        p.error("--rounds must be >= 1")
    with tempfile.TemporaryDirectory(prefix="nlpattn-pipeline-") as tmp:
        cache = [f"data.cache_dir={Path(tmp) / 'cache'}"] if not any(s.startswith("data.cache_dir=") for s in a.set) else []
        overrides = [*a.set, *cache]
        pretrain(a.config, overrides, Path(tmp) / "warm", 1)  # tokenizer, token cache, peak cache: built once
        rounds = [one_round(a, overrides, Path(tmp) / f"round-{r}", bare_first=r % 2 == 1) for r in range(a.rounds)]
    result = summarise(a, rounds)
    out = Path(a.out).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for i, r in enumerate(rounds):
        print(f"round {i + 1}: pipeline {r['pipeline_s_per_step'] * 1e3:.1f} ms/step, bare "
              f"{r['bare_s_per_step'] * 1e3:.1f} ms/step: overhead {r['overhead_pct']:+.1f}%")
    print(f"{a.config} {' '.join(a.set)}: pipeline {result['pipeline_s_per_step'] * 1e3:.1f} ms/step, bare "
          f"{result['bare_s_per_step'] * 1e3:.1f} ms/step ({result['precision']}, {result['threads']} threads): "
          f"overhead {result['overhead_pct']:+.1f}%" + (f" (median of {a.rounds} rounds)" if a.rounds > 1 else ""))
    return 0


def one_round(a: argparse.Namespace, overrides: list[str], tmp: Path, bare_first: bool) -> dict:
    """The N- and 2N-step runs and the bare step (first or last); this round's overhead."""
    tmp.mkdir()
    measured = bare(tmp.parent / "warm", a.steps, a.warmup) if bare_first else None
    short = pretrain(a.config, overrides, tmp / "short", a.steps)
    long = pretrain(a.config, overrides, tmp / "long", 2 * a.steps)
    measured = measured or bare(tmp / "long", a.steps, a.warmup)
    per_step = (long["wall_s"] - short["wall_s"]) / (long["steps"] - short["steps"])
    return {"steps": [short["steps"], long["steps"]], "pipeline_s_per_step": per_step, **measured,
            "overhead_pct": 100 * (per_step / measured["bare_s_per_step"] - 1),
            "precision_run": long["precision"], "tokens_per_s_run": long["tokens_per_s"], "mfu_run": long.get("mfu")}


def summarise(a: argparse.Namespace, rounds: list[dict]) -> dict:
    """One round's result as is; several: the median overhead (and its round's times), all rounds kept."""
    middle = sorted(rounds, key=lambda r: r["overhead_pct"])[(len(rounds) - 1) // 2]
    result = {"config": a.config, "overrides": a.set, **middle}
    if len(rounds) > 1:
        result["rounds"] = rounds
        result["overhead_pct_range"] = [min(r["overhead_pct"] for r in rounds), max(r["overhead_pct"] for r in rounds)]
    return result


if __name__ == "__main__":
    sys.exit(main())

"""Pipeline overhead: `nlpattn pretrain` end to end (data loading, logging, checkpoints) against
the bare training step of the same model on the same batch shape, one run.

`--method interleaved` (the default) measures both in one process, seconds apart: one
`nlpattn pretrain` run whose Trainer, before every `--block`-th step, runs `--block` bare steps on
its own model and optimizer (forward + backward + clipping + optimizer step + zero_grad on one
held batch, in the run's precision and threads, one process: no gradient all-reduce). Every loop
iteration of the run is timed apart from those bare blocks: the step with its data, token and
FLOP counting, logging, the stop check and any checkpoint that falls due. Overhead = the run's
mean s/iteration ÷ the bare mean − 1, with a 95 % bootstrap interval over the (pipeline block,
bare block) pairs. Periodic evaluation is switched off (`train.eval_every` past the end); logging
and checkpointing keep the config's cadence unless given. The bare steps update the run's
weights too: it is a benchmark, not a training run.

`--method runs` is the earlier measurement: two `nlpattn pretrain` runs of N and 2N steps, each in
its own process, whose `summary.json` wall-time difference ÷ N extra steps is the pipeline's cost
per step, against the bare step timed in a third process. The host's speed drifts by ±10 % between
processes on a shared machine, as much as the 5 % being measured; `--rounds R` repeats the three
measurements R times, alternating which comes first, and reports the median.

    python benchmarks/pipeline.py                                   # clm-small.yaml, 20 blocks of 10 steps
    python benchmarks/pipeline.py --method runs --rounds 3          # the median of 3 interleaved rounds of runs
    python benchmarks/pipeline.py --blocks 2 --block 2 --set model.d_model=32 model.n_layers=1 data.block_size=32 train.batch_size=2
"""
from __future__ import annotations

import argparse
import json
import random
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
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        bare_step(model, opt, batch, precision, t.clip_grad, grad_accum=1)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"bare_s_per_step": sum(times) / len(times), "precision": precision, "threads": torch.get_num_threads()}


def bare_step(model, opt, batch: dict, precision: str, clip_grad: float | None, grad_accum: int) -> None:
    """Forward + backward over `grad_accum` micro-batches (the same batch), clipping, optimizer step, zero_grad."""
    import torch

    device = next(model.parameters()).device
    for _ in range(grad_accum):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss / grad_accum
        loss.backward()
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    opt.step()
    opt.zero_grad(set_to_none=True)


class Interleaver:
    """Stands in for `Trainer._train_step`: times each loop iteration of the run and, before every
    `block`-th step after `warmup`, runs a block of bare steps on the Trainer's model and optimizer."""

    def __init__(self, block: int, blocks: int, warmup: int) -> None:
        self.block, self.blocks, self.warmup = block, blocks, warmup
        self.calls, self.prev, self.batch = 0, None, None
        self.pipeline: list[list[float]] = []  # per block: each loop iteration's seconds
        self.bare: list[list[float]] = []  # per block: each bare step's seconds

    def step(self, trainer, original):
        """Close the previous iteration's time, maybe run a bare block, then the Trainer's own step."""
        now = time.perf_counter()
        if self.prev is not None and self.calls > self.warmup:
            self.pipeline[-1].append(now - self.prev)
        due = self.calls >= self.warmup and (self.calls - self.warmup) % self.block == 0
        if due and len(self.bare) < self.blocks:
            self.bare.append(self._bare_block(trainer))
            self.pipeline.append([])
        self.calls += 1
        self.prev = time.perf_counter()  # after the bare block: it is not the pipeline's time
        return original(trainer)

    def _bare_block(self, trainer) -> list[float]:
        """`block` bare optimizer steps (grad_accum micro-batches each) on one held batch: seconds each."""
        import torch

        model, cfg = trainer._base_model(), trainer.cfg
        opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # the torch optimizer inside Accelerate's
        device = trainer.accelerator.device
        if self.batch is None:
            batch = next(trainer.batches)
            self.batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        times = []
        for _ in range(self.block):
            _sync(device)
            start = time.perf_counter()
            bare_step(model, opt, self.batch, trainer.precision, cfg.clip_grad, cfg.grad_accum)
            _sync(device)
            times.append(time.perf_counter() - start)
        return times


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(config: str, overrides: list[str], out: Path, block: int, blocks: int, warmup: int) -> dict:
    """One `nlpattn pretrain` run in this process with bare blocks interleaved; the overhead."""
    from nlpattn.config import load_config
    from nlpattn.train import loop
    from nlpattn.train.pretrain import run_pretrain

    steps = warmup + block * blocks + 1  # + 1: the last measured iteration ends when the next begins
    cfg = load_config(config, [*overrides, f"output_dir={out}", f"train.max_steps={steps}", "train.max_minutes=null",
                               "train.resume=never", "train.progress=false", f"train.eval_every={10 ** 9}"])
    timer, original = Interleaver(block, blocks, warmup), loop.Trainer._train_step
    loop.Trainer._train_step = lambda trainer: timer.step(trainer, original)
    try:
        summary = run_pretrain(cfg)
    finally:
        loop.Trainer._train_step = original
    return {**overhead_of(timer.pipeline, timer.bare), "block": block, "blocks": blocks, "warmup": warmup,
            "precision": summary["precision"], "threads": _threads(), "tokens_per_s_run": summary["tokens_per_s"],
            "mfu_run": summary.get("mfu")}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def overhead_of(pipeline: list[list[float]], bare: list[list[float]], resamples: int = 2000) -> dict:
    """Pooled means of the pipeline and bare blocks, the overhead in %, and its 95 % bootstrap
    interval over block pairs (a pair keeps a block's rare checkpoint or log with its neighbour)."""
    def pct(idx: list[int]) -> float:
        p = sum(sum(pipeline[i]) for i in idx) / sum(len(pipeline[i]) for i in idx)
        b = sum(sum(bare[i]) for i in idx) / sum(len(bare[i]) for i in idx)
        return 100 * (p / b - 1)

    n, rng = len(pipeline), random.Random(0)
    spread = sorted(pct([rng.randrange(n) for _ in range(n)]) for _ in range(resamples))
    everything = list(range(n))
    return {"pipeline_s_per_step": sum(map(sum, pipeline)) / sum(map(len, pipeline)),
            "bare_s_per_step": sum(map(sum, bare)) / sum(map(len, bare)), "overhead_pct": pct(everything),
            "overhead_pct_ci95": [spread[int(0.025 * resamples)], spread[int(0.975 * resamples) - 1]],
            "block_overhead_pct": [pct([i]) for i in everything],
            "steps_timed": {"pipeline": sum(map(len, pipeline)), "bare": sum(map(len, bare))}}


def main(argv: list[str] | None = None) -> int:
    """Parse flags; measure by the chosen method; print and write the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/pretrain/clm-small.yaml")
    p.add_argument("--method", choices=("interleaved", "runs"), default="interleaved")
    p.add_argument("--block", type=int, default=10, help="interleaved: steps per block (pipeline and bare alike)")
    p.add_argument("--blocks", type=int, default=20, help="interleaved: block pairs measured")
    p.add_argument("--steps", type=int, default=40, help="runs: N, the runs take N and 2N steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1, help="runs: repeat short, long and bare R times; report the median")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides for the run(s)")
    p.add_argument("--out", default="runs/bench/pipeline", help="writes OUT.json")
    p.add_argument("--bare", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.bare:
        print(json.dumps(bare_worker(Path(a.bare), a.steps, a.warmup)), flush=True)
        return 0
    if min(a.rounds, a.block, a.blocks) < 1:
        p.error("--rounds, --block and --blocks must be >= 1")
    with tempfile.TemporaryDirectory(prefix="nlpattn-pipeline-") as tmp:
        cache = [f"data.cache_dir={Path(tmp) / 'cache'}"] if not any(s.startswith("data.cache_dir=") for s in a.set) else []
        overrides = [*a.set, *cache]
        if a.method == "interleaved":
            result = {"config": a.config, "overrides": a.set, "method": a.method,
                      **interleaved(a.config, overrides, Path(tmp) / "run", a.block, a.blocks, a.warmup)}
        else:
            pretrain(a.config, overrides, Path(tmp) / "warm", 1)  # tokenizer, token cache, peak cache: built once
            rounds = [one_round(a, overrides, Path(tmp) / f"round-{r}", bare_first=r % 2 == 1) for r in range(a.rounds)]
            result = summarise(a, rounds)
    out = Path(a.out).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(report(a, result))
    return 0


def report(a: argparse.Namespace, result: dict) -> str:
    """The result as printed lines: each round (method runs), then the overhead."""
    lines = [f"round {i + 1}: pipeline {r['pipeline_s_per_step'] * 1e3:.1f} ms/step, bare "
             f"{r['bare_s_per_step'] * 1e3:.1f} ms/step: overhead {r['overhead_pct']:+.1f}%"
             for i, r in enumerate(result.get("rounds", []))]
    if a.method == "interleaved":
        lo, hi = result["overhead_pct_ci95"]
        how = f" (95% interval {lo:+.1f} to {hi:+.1f}% over {a.blocks} block pairs of {a.block} steps)"
    else:
        how = f" (median of {a.rounds} rounds)" if a.rounds > 1 else ""
    lines.append(f"{a.config} {' '.join(a.set)}: pipeline {result['pipeline_s_per_step'] * 1e3:.1f} ms/step, bare "
                 f"{result['bare_s_per_step'] * 1e3:.1f} ms/step ({result['precision']}, {result['threads']} threads): "
                 f"overhead {result['overhead_pct']:+.1f}%{how}")
    return "\n".join(lines)


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
    result = {"config": a.config, "overrides": a.set, "method": a.method, **middle}
    if len(rounds) > 1:
        result["rounds"] = rounds
        result["overhead_pct_range"] = [min(r["overhead_pct"] for r in rounds), max(r["overhead_pct"] for r in rounds)]
    return result


if __name__ == "__main__":
    sys.exit(main())

"""Where a training step's time goes: torch.profiler over a few forward + backward + fused AdamW
steps of one model (from train_throughput.py) in fp32 or bf16 autocast, self CPU time grouped
into matmul, attention kernel, cross-entropy, layer norm, softmax, GELU, optimizer, casts and
copies, ... The shares are meaningful even on a busy machine; the absolute times are not.
`--inference` profiles the benchmark's inference pass instead (one forward, all logits, no labels).

Each profile ends with a bound: the share of the time spent in matrix multiplies (with what they
run inside, such as addmm's bias copy and the first touch of a fresh output) and in the attention
kernel, work that a reference model of the same shape runs op for op. If everything else cost
nothing, the step could get at most 1 / that share faster, so a model that runs the same matmuls
at the same speed cannot beat a reference by more than that.

    python benchmarks/profile_step.py --models nlpattn-clm,gpt2 --dtypes fp32,bf16 [--batch 8 --steps 3]
    python benchmarks/profile_step.py --models nlpattn-mlm,bert --dtypes fp32 --inference --keep-freed-memory
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402

from nlpattn.allocator import keep_freed_memory  # noqa: E402

GROUPS = (("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn")),
          ("attention kernel (SDPA)", ("scaled_dot_product", "_flash_attention", "_efficient_attention")),
          ("cross-entropy (log_softmax, nll)", ("log_softmax", "nll_loss")),
          ("layer norm", ("layer_norm",)), ("softmax", ("_softmax",)), ("gelu", ("gelu",)),
          ("optimizer (fused AdamW)", ("adamw", "_foreach", "optimizer")),
          ("casts and copies", ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous", "aten::cat")),
          ("embedding", ("embedding",)), ("dropout", ("dropout", "bernoulli")),
          ("other element-wise (add, mul, fill, sum, ...)", ("aten::add", "aten::mul", "aten::fill_", "aten::sum",
                                                            "aten::div", "aten::zero_", "aten::where", "masked")))


# ops that a same-shape reference runs too: each one's time with its children counted once
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def is_shared_work(op: str) -> bool:
    """Whether an op is a matmul or an SDPA kernel (forward or backward)."""
    return op in MATMULS or "scaled_dot_product" in op


def group(op: str) -> str:
    """The op group of a profiler key."""
    low = op.lower()
    return next((g for g, keys in GROUPS if any(k.lower() in low for k in keys)), "other")


def shared_work_ms(events) -> float:
    """CPU ms inside the outermost matmul and attention-kernel calls (children included, once)."""

    def inside_shared(e) -> bool:
        parent = e.cpu_parent
        while parent is not None:
            if is_shared_work(parent.name):
                return True
            parent = parent.cpu_parent
        return False

    return sum(e.cpu_time_total for e in events if is_shared_work(e.name) and not inside_shared(e)) / 1e3


def profile_model(name: str, dtype: str, a: argparse.Namespace) -> tuple[float, dict, list, float]:
    """(ms per step, share per group, top ops, share in matmuls and attention) of `name`'s training
    step (or inference pass)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = tt.build(name, a)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch = tt.make_batch(tt.objective_of(name), a, torch.device("cpu"))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")

    def train_step() -> None:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer() -> None:
        with torch.inference_mode(), autocast:
            model(input_ids=batch["input_ids"])

    step = infer if a.inference else train_step
    model.train(not a.inference)

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    groups, ops = collections.Counter(), collections.Counter()
    for e in prof.key_averages():
        groups[group(e.key)] += e.self_cpu_time_total
        ops[e.key] += e.self_cpu_time_total
    total = sum(groups.values())
    return (total / a.steps / 1e3, {g: t / total for g, t in groups.most_common()},
            [(k, v / total) for k, v in ops.most_common(8)], shared_work_ms(prof.events()) * 1e3 / total)


def main(argv: list[str] | None = None) -> int:
    """Profile each model × dtype and print the shares."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("d", 256), ("layers", 4), ("heads", 4), ("ffn", 1024), ("vocab", 8192), ("seq", 128),
                          ("batch", 8), ("steps", 3), ("threads", 0)):
        p.add_argument(f"--{flag}", type=int, default=default)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--models", default="nlpattn-clm,gpt2")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--inference", action="store_true", help="profile the inference pass, not a training step")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="keep freed memory with nlpattn.allocator's defaults, as the nlpattn command does")
    a = p.parse_args(argv)
    if a.keep_freed_memory and not keep_freed_memory():
        raise SystemExit("--keep-freed-memory: this C library has no glibc mallopt")
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")
    if a.threads:
        torch.set_num_threads(a.threads)
    for name in tt.split_models(a.models):
        for dtype in a.dtypes.split(","):
            ms, shares, top, shared = profile_model(name, dtype, a)
            what = "inference pass" if a.inference else "step"
            print(f"== {name} {dtype}: {ms:.0f} ms/{what} (self CPU, profiled)")
            for g, share in shares.items():
                print(f"   {g:48s} {100 * share:5.1f}%")
            print("   top ops: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in top))
            print(f"   matmuls and attention kernel (children included): {100 * shared:.1f}%; with all else free, "
                  f"at most {1 / shared:.2f}x faster than a model running them at this speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

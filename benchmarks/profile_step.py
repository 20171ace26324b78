"""Where a training step's time goes: torch.profiler over a few forward + backward + fused AdamW
steps of one model (from train_throughput.py) in fp32 or bf16 autocast, self CPU time grouped
into matmul, attention kernel, cross-entropy, layer norm, softmax, GELU, optimizer, casts and
copies, ... The shares are meaningful even on a busy machine; the absolute times are not.
`--inference` profiles the benchmark's inference pass instead (one forward, all logits, no labels).

    python benchmarks/profile_step.py --models nlpattn-clm,gpt2 --dtypes fp32,bf16 [--batch 8 --steps 3]
    python benchmarks/profile_step.py --models nlpattn-mlm,bert --dtypes fp32 --inference
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

GROUPS = (("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn")),
          ("attention kernel (SDPA)", ("scaled_dot_product", "_flash_attention", "_efficient_attention")),
          ("cross-entropy (log_softmax, nll)", ("log_softmax", "nll_loss")),
          ("layer norm", ("layer_norm",)), ("softmax", ("_softmax",)), ("gelu", ("gelu",)),
          ("optimizer (fused AdamW)", ("adamw", "_foreach", "optimizer")),
          ("casts and copies", ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous", "aten::cat")),
          ("embedding", ("embedding",)), ("dropout", ("dropout", "bernoulli")),
          ("other element-wise (add, mul, fill, sum, ...)", ("aten::add", "aten::mul", "aten::fill_", "aten::sum",
                                                            "aten::div", "aten::zero_", "aten::where", "masked")))


def group(op: str) -> str:
    """The op group of a profiler key."""
    low = op.lower()
    return next((g for g, keys in GROUPS if any(k.lower() in low for k in keys)), "other")


def profile_model(name: str, dtype: str, a: argparse.Namespace) -> tuple[float, dict, list]:
    """(ms per step, share per group, top ops) of `name`'s training step (or inference pass)."""
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
            [(k, v / total) for k, v in ops.most_common(8)])


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
    a = p.parse_args(argv)
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")
    if a.threads:
        torch.set_num_threads(a.threads)
    for name in tt.split_models(a.models):
        for dtype in a.dtypes.split(","):
            ms, shares, top = profile_model(name, dtype, a)
            what = "inference pass" if a.inference else "step"
            print(f"== {name} {dtype}: {ms:.0f} ms/{what} (self CPU, profiled)")
            for g, share in shares.items():
                print(f"   {g:48s} {100 * share:5.1f}%")
            print("   top ops: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

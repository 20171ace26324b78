"""Generation speed with and without the KV cache: tokens/s generating --new-tokens tokens
(default 256) from a short prompt with a small causal Transformer LM, greedy.

Without the cache every step recomputes the whole prefix (O(n²) work for n new tokens);
with it each step feeds one token and attends to the stored keys/values. Both runs produce
the same tokens (checked). The ratio measured in one run is the figure to quote: absolute
tokens/s on a shared machine are noise. Prints a markdown table and writes JSON.

    python benchmarks/generate_cache.py [--new-tokens 256 --d-model 256 --layers 4 --batch 1 --repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from nlpattn.config import ModelConfig
from nlpattn.generate import SamplingConfig, generate
from nlpattn.models import build_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings (defaults: the 256-token measurement the README quotes)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each mode (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", default="runs/bench/generate_cache.json")
    return p.parse_args(argv)


def small_lm(args: argparse.Namespace) -> torch.nn.Module:
    """A randomly initialised causal Transformer LM long enough for prompt + new tokens."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="decoder", vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
                      n_heads=args.heads, d_ff=4 * args.d_model, max_len=args.prompt_len + args.new_tokens,
                      dropout=0.0)
    return build_model(cfg, "clm").eval()


def time_mode(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int, use_cache: bool,
              repeats: int) -> tuple[list[float], torch.Tensor]:
    """Wall times of `repeats` greedy generations (after one warm-up) and the tokens generated."""
    cfg = SamplingConfig(max_new_tokens=new_tokens, temperature=0, use_cache=use_cache)
    out = generate(model, prompt, cfg)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = generate(model, prompt, cfg)
        times.append(time.perf_counter() - start)
    return times, out


def measure(args: argparse.Namespace) -> dict:
    """Tokens/s with and without the cache, the speed-up, and the settings."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model = small_lm(args)
    prompt = torch.randint(0, args.vocab, (args.batch, args.prompt_len), generator=torch.Generator().manual_seed(1))
    rows, outputs = {}, {}
    for name, use_cache in (("cache", True), ("no cache", False)):
        times, outputs[name] = time_mode(model, prompt, args.new_tokens, use_cache, args.repeats)
        generated = outputs[name].shape[1] - args.prompt_len
        rows[name] = {"median_s": statistics.median(times), "times_s": times,
                      "tokens_per_s": args.batch * generated / statistics.median(times)}
    return {"settings": vars(args), "results": rows,
            "speedup": rows["cache"]["tokens_per_s"] / rows["no cache"]["tokens_per_s"],
            "same_tokens": torch.equal(outputs["cache"], outputs["no cache"]),
            "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "cpu": platform.processor() or platform.machine()}}


def markdown(report: dict) -> str:
    """The table: one row per mode, tokens/s and the ratio."""
    s = report["settings"]
    lines = [f"Greedy generation of {s['new_tokens']} new tokens after a {s['prompt_len']}-token prompt, "
             f"batch {s['batch']}, d = {s['d_model']}, {s['layers']} layers, vocab {s['vocab']} "
             f"(torch {report['environment']['torch']}, {report['environment']['threads']} threads)", "",
             "| mode | median time (s) | tokens/s | speed-up |", "|---|---|---|---|"]
    for name, row in report["results"].items():
        ratio = row["tokens_per_s"] / report["results"]["no cache"]["tokens_per_s"]
        lines.append(f"| {name} | {row['median_s']:.3f} | {row['tokens_per_s']:.1f} | ×{ratio:.2f} |")
    lines.append("")
    lines.append(f"Same tokens with and without the cache: {report['same_tokens']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the markdown table, write the JSON report; non-zero if the modes disagree."""
    args = parse_args(argv)
    report = measure(args)
    print(markdown(report))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0 if report["same_tokens"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

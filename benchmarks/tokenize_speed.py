"""Corpus → tokens: our token cache against the transformers example path, same tokenizer.

Theirs is what `run_mlm.py` / `run_clm.py` do: `datasets.load_dataset("text")`, then
`Dataset.map(tokenizer, batched=True)` with `PreTrainedTokenizerFast(tokenizer_object=...)`,
then `map(group_texts, batched=True)` into blocks. Ours is `build_token_cache` (batch
encoding on all cores, memoised per word, written to uint16 memmap shards). Both read the
same decompressed WikiText-2 valid+test files, each with a fresh cache directory, and
alternate `--repeats` times; we report medians. Then the data-loader time per training
batch (random 128-token windows from the memmap + the MLM collator, batch 32) against the
step time (forward + backward + AdamW) of the small Transformer MLM (configs/model/transformer-small.yaml).

    python benchmarks/tokenize_speed.py [--kind wordpiece|bpe|...] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import sys
from pathlib import Path

import argparse
import gzip
import itertools
import json
import statistics
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("valid", "test")


def wikitext_files(tmp: Path) -> list[str]:
    """WikiText-2 valid and test, decompressed (so both paths read the same plain files)."""
    out = []
    for split in SPLITS:
        path = tmp / f"wiki.{split}.txt"
        path.write_bytes(gzip.decompress((REPO / "data" / "wikitext-2" / f"{split}.txt.gz").read_bytes()))
        out.append(str(path))
    return out


def theirs(tok, files: list[str], cache_dir: Path, block_size: int) -> tuple[float, int]:
    """Seconds and tokens of load_dataset("text") → map(tokenize) → map(group_texts)."""
    import datasets
    from transformers import PreTrainedTokenizerFast

    datasets.disable_progress_bars()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok.backend.tok)

    def tokenize(examples):
        return hf(examples["text"])

    def group_texts(examples):
        joined = {k: list(itertools.chain(*examples[k])) for k in examples}
        total = len(joined["input_ids"]) // block_size * block_size
        return {k: [v[i:i + block_size] for i in range(0, total, block_size)] for k, v in joined.items()}

    start = time.perf_counter()
    raw = datasets.load_dataset("text", data_files={"train": files}, cache_dir=str(cache_dir), keep_linebreaks=True)
    tokenized = raw.map(tokenize, batched=True, remove_columns=["text"])
    grouped = tokenized.map(group_texts, batched=True)
    seconds = time.perf_counter() - start
    n_tokens = sum(len(x) for x in tokenized["train"]["input_ids"])
    if not 0 < len(grouped["train"]) <= n_tokens // block_size:  # each map batch drops its remainder
        raise RuntimeError("group_texts produced an unexpected number of blocks")
    return seconds, n_tokens


def ours(tok, files: list[str], cache_dir: Path, memo: bool = True):
    """Seconds and the TokenCache of build_token_cache (forced rebuild)."""
    from nlpattn.data.corpus import build_token_cache

    start = time.perf_counter()
    cache = build_token_cache(files, tok, cache_dir, rebuild=True, memo=memo)
    return time.perf_counter() - start, cache


def loader_vs_step(tok, cache, batch_size: int, block_size: int, n_batches: int = 200) -> dict:
    """Milliseconds per batch of the data path and per training step of the small MLM model."""
    import torch

    from nlpattn.config import load_config
    from nlpattn.data.blocks import BlockLoader, RandomBlocks
    from nlpattn.data.collate import MLMCollator
    from nlpattn.models import build_model, replace_config

    loader = BlockLoader(RandomBlocks(cache, block_size, seed=0), batch_size, MLMCollator(tok), seed=0)
    next(loader)
    start = time.perf_counter()
    batches = [next(loader) for _ in range(n_batches)]
    data_ms = (time.perf_counter() - start) / n_batches * 1e3
    cfg = load_config(REPO / "configs" / "model" / "transformer-small.yaml")
    model = build_model(replace_config(cfg.model, vocab_size=tok.vocab_size), task="mlm")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # transformers' default optimizer, and ours
    times = []
    for i, batch in enumerate(batches[:7]):
        t0 = time.perf_counter()
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    step_ms = statistics.median(times) * 1e3
    return {"data_ms_per_batch": data_ms, "step_ms": step_ms, "data_share": data_ms / step_ms}


def run(kind: str, vocab_size: int, repeats: int, block_size: int, batch_size: int) -> dict:
    """Train the tokenizer once, then alternate the two paths `repeats` times."""
    from nlpattn.config import TokenizerConfig
    from nlpattn.tokenizer import train_tokenizer

    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=vocab_size),
                          [str(REPO / "data" / "wikitext-2" / "valid.txt.gz")])
    tmp = Path(tempfile.mkdtemp(prefix="nlpattn-bench-"))
    files = wikitext_files(tmp)
    t_ours, t_plain, t_theirs = [], [], []
    for r in range(repeats):
        seconds, cache = ours(tok, files, tmp / "cache")
        t_ours.append(seconds)
        t_plain.append(ours(tok, files, tmp / "cache-nomemo", memo=False)[0])
        seconds, n_theirs = theirs(tok, files, tmp / f"hf-{r}", block_size)
        t_theirs.append(seconds)
    n_ours = len(cache)
    result = {
        "kind": kind, "vocab_size": tok.vocab_size, "corpus": "WikiText-2 valid+test (tokenized)",
        "tokens_ours": n_ours, "tokens_theirs": n_theirs, "repeats": repeats,
        "ours_s": statistics.median(t_ours), "ours_no_memo_s": statistics.median(t_plain),
        "theirs_s": statistics.median(t_theirs),
        "cache_bytes": cache.nbytes, "cache_dtype": str(cache.dtype),
    }
    result["ours_tok_per_s"] = n_ours / result["ours_s"]
    result["ours_no_memo_tok_per_s"] = n_ours / result["ours_no_memo_s"]
    result["theirs_tok_per_s"] = n_theirs / result["theirs_s"]
    result["speedup"] = result["ours_tok_per_s"] / result["theirs_tok_per_s"]
    result.update(loader_vs_step(tok, cache, batch_size, block_size))
    return result


def report(r: dict) -> str:
    """A few markdown lines for the README / the issue."""
    return "\n".join([
        f"### {r['kind']} (vocab {r['vocab_size']}), {r['corpus']}, median of {r['repeats']}",
        "| path | seconds | tokens | tokens/s |", "|---|---|---|---|",
        f"| ours: build_token_cache | {r['ours_s']:.2f} | {r['tokens_ours']:,} | {r['ours_tok_per_s']:,.0f} |",
        f"| ours without the word memo | {r['ours_no_memo_s']:.2f} | {r['tokens_ours']:,} | "
        f"{r['ours_no_memo_tok_per_s']:,.0f} |",
        f"| theirs: datasets.map + group_texts | {r['theirs_s']:.2f} | {r['tokens_theirs']:,} | "
        f"{r['theirs_tok_per_s']:,.0f} |",
        f"speed-up (tokens/s, ours / theirs): **{r['speedup']:.2f}×**; cache on disk: "
        f"{r['cache_bytes']:,} bytes ({r['cache_dtype']})",
        f"data loader: {r['data_ms_per_batch']:.2f} ms/batch vs training step {r['step_ms']:.0f} ms "
        f"→ {100 * r['data_share']:.2f}% of the step",
    ])


def main() -> None:
    """Parse arguments, run, print markdown (and JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", nargs="+", default=["wordpiece", "bpe"])
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    results = [run(k, args.vocab_size, args.repeats, args.block_size, args.batch_size) for k in args.kind]
    for r in results:
        print(report(r), "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

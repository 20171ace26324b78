"""The token cache of the whole pretraining corpus: seconds, tokens/s and CPU use, per source.

Reads every file of `../shared/data/corpus/` (Wikipedia, Gutenberg books, IMDB unsup; not
bundled) with the tokenizer of a finished run (default: runs/mlm-corpus, WordPiece 8k) and builds
one token cache into a fresh temporary directory, as `nlpattn pretrain` does, with the progress
bar on. Reports wall seconds, CPU seconds (user + system of this process and its threads: above
the wall time means the build used more than one core), tokens and documents per source.

    python benchmarks/corpus_cache.py [--run runs/mlm-corpus] [--corpus ../shared/data/corpus] [--out runs/bench/corpus_cache]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

SOURCES = ("wikipedia/enwiki-*.txt.gz", "books/gutenberg-*.txt.gz", "imdb/unsup.txt.gz")


def corpus_files(corpus: Path) -> list[Path]:
    """Every pretraining text file of the corpus, in a fixed order; SystemExit(2) when missing."""
    files = [f for pattern in SOURCES for f in sorted(corpus.glob(pattern))]
    if not files:
        print(f"error: {corpus}: no corpus files ({', '.join(SOURCES)}); see ../shared/data/corpus/README.md",
              file=sys.stderr)
        raise SystemExit(2)
    return files


def main(argv: list[str] | None = None) -> int:
    """Build the whole corpus's cache once; print and write the timing as JSON and markdown."""
    from nlpattn.data.corpus import build_token_cache
    from nlpattn.fileio import atomic_write_json, atomic_write_text
    from nlpattn.tokenizer import load_tokenizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/mlm-corpus", help="a run directory whose tokenizer to use")
    p.add_argument("--corpus", default="../shared/data/corpus")
    p.add_argument("--out", default="runs/bench/corpus_cache", help="writes OUT.json and OUT.md")
    a = p.parse_args(argv)
    files = corpus_files(Path(a.corpus))
    tok = load_tokenizer(a.run)
    with tempfile.TemporaryDirectory(prefix="corpus-cache-") as tmp:
        wall0, cpu0 = time.perf_counter(), os.times()
        cache = build_token_cache([str(f) for f in files], tok, Path(tmp) / "cache", progress=True)
        wall, cpu1 = time.perf_counter() - wall0, os.times()
        index = cache.index
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    per_source = [{"source": s, "tokens": e - b} for s, (b, e) in zip(index["sources"], index["source_tokens"])]
    result = {"run": a.run, "tokenizer": tok.kind, "vocab_size": tok.vocab_size, "files": len(files),
              "bytes_gz": sum(f.stat().st_size for f in files), "tokens": index["n_tokens"], "docs": index["n_docs"],
              "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cores_used": round(cpu / wall, 2),
              "tokens_per_s": round(index["n_tokens"] / wall), "per_source": per_source, "cpus": os.cpu_count()}
    lines = [f"`python benchmarks/corpus_cache.py --run {a.run} --corpus {a.corpus}`", "",
             f"{len(files)} files ({result['bytes_gz'] / 2**20:.0f} MiB gzipped), {tok.kind} {tok.vocab_size}: "
             f"**{result['tokens'] / 1e6:.1f}M tokens in {wall:.0f} s** ({result['tokens_per_s']:,} tokens/s; "
             f"CPU {cpu:.0f} s = {result['cores_used']:.2f} of {os.cpu_count()} cores).", "",
             "| source | tokens |", "|---|---:|"]
    lines += [f"| {Path(r['source']).name} | {r['tokens']:,} |" for r in per_source]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), result)
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: the quick benchmarks one after another (never concurrently: they time things).

    python benchmarks/run_all.py          # reference diffs, model speed, tokenize speed, KV-cache generation,
                                          # train throughput vs transformers/nanoGPT, pipeline overhead, allocator (minutes)
    python benchmarks/run_all.py --long   # also the shakespeare anchor (~6 min) and SST-2 vs the peer (~45 min)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = ["reference_diffs.py", "model_speed.py", "tokenize_speed.py", "generate_cache.py",
         "train_throughput.py", "pipeline.py", "allocator.py", "masked_lm_loss.py", "rope.py", "attention_path.py"]
LONG = ["shakespeare_anchor.py", "sst2_peer.py"]


def main() -> int:
    """Run each benchmark script as its own process; exit non-zero if any failed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--long", action="store_true", help="also run the long end-to-end comparisons")
    args = p.parse_args()
    failed = []
    for script in QUICK + (LONG if args.long else []):
        print(f"== benchmarks/{script}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)], cwd=HERE.parent).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

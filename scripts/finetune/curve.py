"""Downstream score against pretraining minutes (thin wrapper over `nlpattn curve`).

    python scripts/finetune/curve.py --run runs/mlm-corpus minutes=0,15,30,60 tasks=sst2,cola seeds=0,1,2
"""
import sys

from nlpattn.cli import main

if __name__ == "__main__":
    sys.exit(main(["curve", *sys.argv[1:]]))

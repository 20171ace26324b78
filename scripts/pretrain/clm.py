"""Pretrain with objective=clm (causal-LM (decoder)): a thin wrapper around nlpattn.train.pretrain.

    python scripts/pretrain/clm.py --config configs/pretrain/clm-small.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 scripts/pretrain/clm.py --config ...
"""
import sys

from nlpattn.train.pretrain import script_main

if __name__ == "__main__":
    sys.exit(script_main("clm"))

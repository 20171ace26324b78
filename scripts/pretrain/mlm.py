"""Pretrain with objective=mlm (masked-LM (encoder)): a thin wrapper around nlpattn.train.pretrain.

    python scripts/pretrain/mlm.py --config configs/pretrain/mlm-small.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 scripts/pretrain/mlm.py --config ...
"""
import sys

from nlpattn.train.pretrain import script_main

if __name__ == "__main__":
    sys.exit(script_main("mlm"))

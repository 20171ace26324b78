"""Pretrain with objective=electra (replaced-token detection (encoder)): a thin wrapper around nlpattn.train.pretrain.

    python scripts/pretrain/electra.py --config configs/pretrain/electra-corpus.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 scripts/pretrain/electra.py --config ...
"""
import sys

from nlpattn.train.pretrain import script_main

if __name__ == "__main__":
    sys.exit(script_main("electra"))

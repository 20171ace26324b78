"""Pretrain with objective=seq2seq (span-corruption seq2seq (encoder-decoder)): a thin wrapper around nlpattn.train.pretrain.

    python scripts/pretrain/seq2seq.py --config configs/pretrain/seq2seq-small.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 scripts/pretrain/seq2seq.py --config ...
"""
import sys

from nlpattn.train.pretrain import script_main

if __name__ == "__main__":
    sys.exit(script_main("seq2seq"))

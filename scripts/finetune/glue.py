"""Fine-tune on one GLUE task (thin wrapper over `nlpattn finetune`).

    python scripts/finetune/glue.py --config configs/finetune/glue.yaml task=sst2 init=runs/mlm-small
    accelerate launch scripts/finetune/glue.py --config configs/finetune/sst2.yaml init=runs/mlm-small
"""
import sys

from nlpattn.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))

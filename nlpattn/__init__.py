"""nlpattn: build, pretrain, fine-tune and measure attention models.

The top-level names are imported lazily so `import nlpattn` stays light (no accelerate,
datasets or matplotlib until a function that needs them is called).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load_config": "nlpattn.config",
    "Config": "nlpattn.config",
    "ModelConfig": "nlpattn.config",
    "build_model": "nlpattn.models",
    "load_model": "nlpattn.models",
    "save_model": "nlpattn.models",
    "Trainer": "nlpattn.train.loop",
    "train_tokenizer": "nlpattn.tokenizer",
    "load_tokenizer": "nlpattn.tokenizer",
    "NlpattnError": "nlpattn.errors",
    "ConfigError": "nlpattn.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nlpattn' has no attribute {name!r}")

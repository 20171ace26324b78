"""A coarse training-memory estimate, checked before anything is built.

weights + gradients + AdamW moments (16 bytes per parameter in fp32) + activations kept for the
backward pass (per layer and token ≈ 34·d + 5·heads·T values, Korthikanti et al. 2022, §4)
+ output logits. It errs on the high side for MLM (logits of masked positions only).
"""
from __future__ import annotations

from nlpattn.config import Config
from nlpattn.errors import TrainingError

GIB = 2**30


def parameter_count(cfg: Config) -> int:
    """Approximate number of parameters of the model a config describes (no model is built)."""
    m = cfg.model
    d, ff, v = m.d_model, m.d_ff, m.vocab_size
    per_layer = 4 * d * d + 2 * d * ff + 9 * d + ff  # attention, feed-forward, norms, biases
    layers = m.n_layers + ((m.n_decoder_layers or m.n_layers) if m.arch == "encoder-decoder" else 0)
    cross = (m.n_decoder_layers or m.n_layers) * 4 * d * d if m.arch == "encoder-decoder" else 0
    head = 0 if m.tie_embeddings else v * d
    return layers * per_layer + cross + v * d + m.max_len * d + head


def estimate_bytes(cfg: Config) -> int:
    """Bytes needed to train `cfg` on one device: states + activations of one micro-batch."""
    m, t = cfg.model, cfg.train
    act_bytes = 2 if t.precision in ("bf16", "fp16") else 4
    tokens = t.batch_size * cfg.data.block_size
    layers = m.n_layers + ((m.n_decoder_layers or m.n_layers) if m.arch == "encoder-decoder" else 0)
    heads = m.n_heads if m.body == "transformer" else 0
    per_token_layer = 34 * m.d_model + 5 * heads * cfg.data.block_size
    activations = layers * tokens * per_token_layer * act_bytes // 2
    logits = 3 * tokens * m.vocab_size * 4
    return 16 * parameter_count(cfg) + activations + logits


def available_bytes() -> tuple[int, str]:
    """(bytes, where): total memory of the first CUDA device, else the host's available memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[1], torch.cuda.get_device_name(0)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024, "host RAM (MemAvailable)"
    except (OSError, KeyError, ValueError):
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host RAM"


def check_memory(cfg: Config) -> int:
    """Raise TrainingError when the estimate exceeds the memory that exists; return the estimate."""
    need = estimate_bytes(cfg)
    have, where = available_bytes()
    if need > have:
        raise TrainingError(
            f"memory: this config needs an estimated {need / GIB:.1f} GiB "
            f"(~{parameter_count(cfg) / 1e6:.1f}M params, train.batch_size={cfg.train.batch_size} x "
            f"data.block_size={cfg.data.block_size}) but {where} has {have / GIB:.1f} GiB; "
            f"lower train.batch_size (raise train.grad_accum) or the model size")
    return need


def check_model_fits(cfg: Config) -> int:
    """Raise TrainingError when the weights alone (fp32) exceed the memory that exists."""
    params = parameter_count(cfg)
    have, where = available_bytes()
    if 4 * params > have:
        m = cfg.model
        raise TrainingError(
            f"memory: model.d_model={m.d_model}, model.n_layers={m.n_layers}, model.d_ff={m.d_ff}, "
            f"model.vocab_size={m.vocab_size} make ~{params / 1e6:,.0f}M parameters "
            f"({4 * params / GIB:,.1f} GiB in fp32) but {where} has {have / GIB:.1f} GiB")
    return params

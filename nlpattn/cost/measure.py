"""Measured cost: FLOPs counted by PyTorch's FlopCounterMode, wall time (median of repeats
after warm-up), peak memory and activation memory of one layer.

Memory on CUDA is the allocator's peak (`torch.cuda.max_memory_allocated`). On CPU PyTorch
keeps no peak statistic, so we replay the allocation events the profiler records
(`profile_memory=True`: every allocation and free through PyTorch's CPU allocator, with its
time) and take the maximum of their running sum. Activation memory is exact on both: the
bytes of the tensors autograd saves for backward (`saved_tensors_hooks`), parameters and the
input excluded, storages counted once.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch
from torch import nn


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs PyTorch's FlopCounterMode counts while running fn(*args, **kwargs) (no grad)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def model_forward_flops(model: nn.Module, batch_size: int = 1, seq_len: int = 128) -> int:
    """FLOPs of one forward pass of `model` on a (batch_size, seq_len) batch of token ids,
    counted with attention on the math path and LSTMs unfused (see `layers.countable`)."""
    from nlpattn.cost.layers import countable

    ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    with countable(model):
        if getattr(model, "task", "") == "seq2seq":
            return count_flops(model, ids, decoder_input_ids=ids)
        return count_flops(model, ids)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 2,
                   device: torch.device = torch.device("cpu")) -> float:
    """Median wall time of fn() over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_bytes(fn: Callable[[], object], device: torch.device = torch.device("cpu")) -> int:
    """Peak bytes allocated while fn() runs, above what was allocated when it started."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # else kineto prints two lines per profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    running = peak = 0
    for size in _allocation_sizes(prof):
        running += size
        peak = max(peak, running)
    return peak


def _allocation_sizes(prof) -> list[int]:
    """Signed sizes of every allocation (+) and free (−) the profiler saw, in time order."""
    from torch._C._profiler import _EventType

    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    return [size for _, size in sorted(events)]


def saved_tensor_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward in layer(x): activations, parameters and x excluded."""
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    params.add(x.untyped_storage().data_ptr())
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and storage.device.type != "meta":
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return sum(seen.values())


def forward_fn(layer: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Inference: one forward pass without autograd."""

    def run() -> object:
        with torch.no_grad():
            return layer(x)

    return run


def train_fn(layer: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """Training: forward, then the gradients of a fixed random output gradient with respect to
    the input and every weight (returned, not accumulated, so nothing outlives the call)."""
    x = x.detach().requires_grad_(True)
    inputs = [x, *(p for p in layer.parameters() if p.requires_grad)]
    grad_out = torch.randn_like(layer(x).detach())

    def run() -> object:
        return torch.autograd.grad(layer(x), inputs, grad_out)

    return run

"""Sequential operations and maximum path length, measured on what the implementation runs.

Sequential operations: every aten op a forward pass dispatches is recorded with the tensors
it reads and writes; an op's depth is one more than the deepest op that produced one of its
inputs (views and splits are free: they move no data). The deepest op is the number of
kernels that must run one after another — the critical path of the op graph.

Path length: for attention and convolution, stack fresh layers until the gradient of
output n-1 with respect to input 0 is non-zero. For an RNN one layer suffices, so we count
recurrent steps instead: run the recurrence step by step, let the gradient cross only the
last `s` state transitions (the state is detached before them), and find the smallest `s`
for which output n-1 depends on input 0.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from nlpattn.cost.analytic import RNN_GATES, LayerSpec
from nlpattn.cost.layers import build_layer, decomposed

FREE_OPS = {"split", "unsafe_split", "split_with_sizes", "unbind", "chunk", "detach", "alias", "lift_fresh"}


class _DepthMode(TorchDispatchMode):
    """Records, for every tensor produced, the length of the longest op chain behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = WeakIdKeyDictionary()
        self.max_depth = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_flatten((args, kwargs or {}))[0] if isinstance(t, torch.Tensor)]
        deepest = max((self.depth.get(t, 0) for t in inputs), default=0)
        free = func.is_view or func.overloadpacket.__name__ in FREE_OPS
        depth = deepest + (0 if free else 1)
        self.ops += 0 if free else 1
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.depth[t] = depth
        self.max_depth = max(self.max_depth, depth)
        return out


def sequential_ops(layer: torch.nn.Module, x: torch.Tensor, kind: str = "") -> tuple[int, int]:
    """(ops on the critical path, ops in total) of one forward pass layer(x), no grad."""
    mode = _DepthMode()
    with torch.no_grad(), decomposed(kind), mode:
        layer(x)
    return mode.max_depth, mode.ops


def _probe(d: int) -> torch.Tensor:
    # A fixed random direction: output · probe depends on every feature of the output.
    return torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _stack_connects(layers: list[torch.nn.Module], x: torch.Tensor, probe: torch.Tensor) -> bool:
    """Whether d out[n-1] / d in[0] != 0 through `layers` applied in order."""
    h = x
    for layer in layers:
        h = layer(h)  # (1, n, d)
    (grad,) = torch.autograd.grad(h[0, -1] @ probe, x)
    return bool(grad[0, 0].ne(0).any())


def stacked_path_length(spec: LayerSpec, n: int, max_layers: int) -> int | None:
    """Fewest stacked layers for which d out[n-1] / d in[0] != 0 (None: more than max_layers).

    Depths 1, 2, 4, … are tried until one connects, then the last gap is bisected: every layer
    kind here mixes position i into itself, so a connected depth stays connected when deeper.
    """
    torch.manual_seed(0)
    x = torch.randn(1, n, spec.d_model, dtype=torch.float64, requires_grad=True)
    if spec.kind == "dilated-conv" and not spec.spatial:  # a layer whose dilation exceeds n only adds zero padding
        max_layers = min(max_layers, 1 + math.floor(math.log(max(n - 1, 1), spec.dilation)) + 1)
    layers: list[torch.nn.Module] = []

    def connects(depth: int) -> bool:
        while len(layers) < depth:
            layers.append(build_layer(spec, len(layers)).double())
        return _stack_connects(layers[:depth], x, _probe(spec.d_model))

    lo, hi = 0, 1  # invariant: depth lo does not connect
    while not connects(hi):
        if hi >= max_layers:
            return None
        lo, hi = hi, min(2 * hi, max_layers)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if connects(mid) else (mid, hi)
    return hi


def _rnn_reaches(layer: torch.nn.Module, x: torch.Tensor, kept: int, probe: torch.Tensor) -> bool:
    """Whether out[n-1] depends on in[0] when only the last `kept` state transitions carry gradient."""
    n, state, y = x.shape[1], None, None
    with decomposed("lstm"):
        for t in range(n):
            if state is not None and t < n - kept:
                state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            y, state = layer.rnn(x[:, t:t + 1], state)  # y: (1, 1, d)
    (grad,) = torch.autograd.grad(y[0, 0] @ probe, x)
    return bool(grad[0, 0].ne(0).any())


def recurrent_path_steps(spec: LayerSpec, n: int) -> int:
    """Fewest recurrent state transitions on the gradient path from input 0 to output n-1."""
    torch.manual_seed(0)
    layer = build_layer(spec).double()
    x = torch.randn(1, n, spec.d_model, dtype=torch.float64, requires_grad=True)
    probe = _probe(spec.d_model)
    lo, hi = 0, n - 1  # the answer lies in [lo, hi]; kept = n-1 keeps every transition
    if not _rnn_reaches(layer, x, hi, probe):
        raise RuntimeError(f"{spec.kind}: output {n - 1} does not depend on input 0")
    while lo < hi:  # reaching is monotone in `kept`
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _rnn_reaches(layer, x, mid, probe) else (mid + 1, hi)
    return lo


@contextlib.contextmanager
def _one_thread():
    """Tiny tensors gain nothing from threads, and on busy cores a thread barrier can cost more
    than the op (a 1-d conv of 8 channels: 0.2 ms on one thread, 50 ms on two contended ones)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measured_path_length(spec: LayerSpec, n: int, max_layers: int = 256) -> int | None:
    """Layers (attention, convolution) or recurrent steps (LSTM, GRU) from input 0 to output n-1."""
    with _one_thread():
        if spec.kind in RNN_GATES:
            return recurrent_path_steps(spec, n)
        return stacked_path_length(spec, n, max_layers)

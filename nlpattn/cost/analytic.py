"""Analytic cost of one layer (Vaswani et al. 2017, Table 1): FLOPs, parameters, activation
memory, and the path length a signal needs from the first input to the last output.

FLOPs count one multiply-add as 2 and, like `torch.utils.flop_counter.FlopCounterMode`, only
the matrix products (linear, bmm, conv); element-wise work (softmax, gates, norms) is O(n·d)
and left out. Every formula describes what our implementation executes (e.g. causal and
window-masked attention still compute all n² scores), not an idealised kernel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

LAYER_KINDS = ("self-attention", "self-attention-math", "restricted", "restricted-banded",
               "lstm", "gru", "conv", "dilated-conv", "transformer-block")

# The paper's Table 1: complexity per layer, sequential operations, maximum path length.
PAPER = {
    "self-attention": ("O(n²·d)", "O(1)", "O(1)"),
    "restricted": ("O(r·n·d)", "O(1)", "O(n/r)"),
    "recurrent": ("O(n·d²)", "O(n)", "O(n)"),
    "conv": ("O(k·n·d²)", "O(1)", "O(n/k)"),
    "dilated-conv": ("O(k·n·d²)", "O(1)", "O(log_k(n))"),
}
PAPER_ROW = {"self-attention": "self-attention", "self-attention-math": "self-attention",
             "transformer-block": "self-attention", "restricted": "restricted",
             "restricted-banded": "restricted", "lstm": "recurrent", "gru": "recurrent",
             "conv": "conv", "dilated-conv": "dilated-conv"}
RNN_GATES = {"lstm": 4, "gru": 3}


@dataclass(frozen=True)
class LayerSpec:
    """One layer to measure: its kind and the hyper-parameters its cost depends on."""

    kind: str
    d_model: int
    n_heads: int = 4
    window: int = 16  # restricted attention: query i sees keys within distance r
    kernel_size: int = 3
    dilation: int = 3  # dilated conv: layer i of a stack uses dilation**i (the timed layer: i = 1)
    causal: bool = True
    d_ff: int | None = None  # transformer-block; None → 4·d

    @property
    def ff(self) -> int:
        """Feed-forward width of a transformer block."""
        return self.d_ff or 4 * self.d_model


def window_keys(spec: LayerSpec) -> int:
    """Keys one query of restricted attention sees: r+1 causal, 2r+1 centred."""
    return spec.window + 1 if spec.causal else 2 * spec.window + 1


def forward_flops(spec: LayerSpec, n: int, batch: int = 1) -> int:
    """Matrix-product FLOPs of one forward pass over (batch, n, d)."""
    d, k = spec.d_model, spec.kernel_size
    projections = 2 * n * d * 3 * d + 2 * n * d * d  # fused QKV + output projection
    if spec.kind in ("self-attention", "self-attention-math", "restricted"):
        per_row = projections + 4 * n * n * d  # QKᵀ and AV over all n keys (masked or not)
    elif spec.kind == "restricted-banded":
        per_row = projections + 4 * n * window_keys(spec) * d
    elif spec.kind == "transformer-block":
        per_row = projections + 4 * n * n * d + 4 * n * d * spec.ff
    elif spec.kind in RNN_GATES:
        per_row = 2 * 2 * n * d * RNN_GATES[spec.kind] * d  # input and hidden products
    elif spec.kind in ("conv", "dilated-conv"):
        per_row = 2 * n * k * d * 2 * d  # d → 2d channels, then GLU
    else:
        raise ValueError(f"unknown layer kind '{spec.kind}'")
    return batch * per_row


def parameters(spec: LayerSpec) -> int:
    """Number of parameters of the layer (biases included)."""
    d = spec.d_model
    attention = 4 * d * d + 4 * d
    if spec.kind in ("self-attention", "self-attention-math", "restricted", "restricted-banded"):
        return attention
    if spec.kind == "transformer-block":
        return attention + 2 * d * spec.ff + spec.ff + d + 4 * d  # FFN + two LayerNorms
    if spec.kind in RNN_GATES:
        g = RNN_GATES[spec.kind]
        return g * (2 * d * d + 2 * d)
    if spec.kind in ("conv", "dilated-conv"):
        return spec.kernel_size * d * 2 * d + 2 * d
    raise ValueError(f"unknown layer kind '{spec.kind}'")


def offsets(spec: LayerSpec, layer: int, n: int) -> range:
    """Relative positions (input − output, negated) that layer `layer` of a stack mixes:
    output i reads inputs i − o for o in the range, stepping by the dilation."""
    k, causal = spec.kernel_size, spec.causal
    if spec.kind in ("restricted", "restricted-banded"):
        span, step = spec.window, 1
    elif spec.kind in ("conv", "dilated-conv"):
        step = stack_dilations(spec, layer + 1)[layer]
        span = (k - 1 if causal else (k - 1) // 2) * step
    else:  # full attention
        span, step = n - 1, 1
    return range(0, span + 1, step) if causal else range(-span, span + 1, step)


def expected_path_length(spec: LayerSpec, n: int, max_layers: int = 4096) -> int | None:
    """Layers (or, for an RNN, recurrent steps) on the shortest path from input 0 to output n-1,
    derived from each layer's connectivity; None if the stack never connects them."""
    if spec.kind in RNN_GATES:
        return n - 1
    reached = {0}  # positions that depend on input 0 after `layers` layers
    for layers in range(max_layers + 1):
        if n - 1 in reached:
            return layers
        grown = {p + o for p in reached for o in offsets(spec, layers, n) if 0 <= p + o < n}
        if grown == reached:  # no layer adds anything: later (wider) ones cannot either
            return None
        reached = grown
    return None


def causal_path_length(spec: LayerSpec, n: int) -> int:
    """Closed form of the causal path length: 1, ⌈(n−1)/r⌉, ⌈(n−1)/(k−1)⌉, ⌈log_k n⌉-like, n−1."""
    k, b = spec.kernel_size, spec.dilation
    if spec.kind in RNN_GATES:
        return n - 1
    if spec.kind in ("restricted", "restricted-banded"):
        return math.ceil((n - 1) / spec.window)
    if spec.kind == "conv":
        return math.ceil((n - 1) / (k - 1))
    if spec.kind == "dilated-conv":  # smallest L with (k−1)·(1 + b + … + b^(L−1)) ≥ n − 1
        layers = 0
        while (k - 1) * sum(b ** i for i in range(layers)) < n - 1:
            layers += 1
        return layers
    return 1 if n > 1 else 0


def stack_dilations(spec: LayerSpec, n_layers: int) -> list[int]:
    """Dilation of each layer of a stack: dilation**i for dilated conv, else 1."""
    return [spec.dilation ** i if spec.kind == "dilated-conv" else 1 for i in range(n_layers)]


def sequential_ops_order(kind: str) -> str:
    """How the number of steps that must run one after another grows with n."""
    return "O(n)" if kind in RNN_GATES else "O(1)"


def paper_row(kind: str) -> tuple[str, str, str]:
    """(complexity per layer, sequential operations, maximum path length) from the paper."""
    return PAPER[PAPER_ROW[kind]]

"""Analytic cost of one layer (Vaswani et al. 2017, Table 1): FLOPs, parameters, activation
memory, and the path length a signal needs from the first input to the last output.

FLOPs count one multiply-add as 2 and, like `torch.utils.flop_counter.FlopCounterMode`, only
the matrix products (linear, bmm, conv); element-wise work (softmax, gates, norms) is O(n·d)
and left out. Every formula describes what our implementation executes (e.g. causal and
window-masked attention still compute all n² scores), not an idealised kernel.

Convolution layers may carry the CNN body's gates (`model.se`, `model.spatial`): squeeze-and-
excitation adds two d×d/4 products per summary (one summary per position when causal — the
prefix mean —, one per sequence otherwise) and connects every position it averages over; the
spatial gate adds a 2-channel → 1 convolution of `spatial_kernel` taps per position.
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
    se: bool = False  # conv kinds: squeeze-and-excitation after the convolution
    spatial: bool = False  # conv kinds: CBAM spatial gate after the convolution (and SE)
    spatial_kernel: int = 7

    @property
    def ff(self) -> int:
        """Feed-forward width of a transformer block."""
        return self.d_ff or 4 * self.d_model

    @property
    def se_width(self) -> int:
        """Bottleneck of squeeze-and-excitation: d/4 (at least 1), as in the CNN body."""
        return max(self.d_model // 4, 1)


def gate_flops(spec: LayerSpec, n: int) -> int:
    """Matrix-product FLOPs of a conv layer's gates over one sequence of n positions."""
    flops = 0
    if spec.se:
        summaries = n if spec.causal else 1  # the prefix mean at every position, or one mean
        flops += summaries * 2 * 2 * spec.d_model * spec.se_width  # squeeze d → d/4, excite d/4 → d
    if spec.spatial:
        flops += 2 * n * spec.spatial_kernel * 2  # conv of 2 pooled maps → 1 gate, k taps
    return flops


def gate_parameters(spec: LayerSpec) -> int:
    """Parameters of a conv layer's gates (biases included)."""
    d, r = spec.d_model, spec.se_width
    return (2 * d * r + r + d if spec.se else 0) + (2 * spec.spatial_kernel + 1 if spec.spatial else 0)


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
        per_row = 2 * n * k * d * 2 * d + gate_flops(spec, n)  # d → 2d channels, GLU, gates
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
        return spec.kernel_size * d * 2 * d + 2 * d + gate_parameters(spec)
    raise ValueError(f"unknown layer kind '{spec.kind}'")


def offsets(spec: LayerSpec, layer: int, n: int) -> range:
    """Relative positions (input − output, negated) that layer `layer` of a stack mixes:
    output i reads inputs i − o for o in the range, stepping by the dilation (the spatial
    gate's own offsets are `gate_offsets`, applied after these)."""
    k, causal = spec.kernel_size, spec.causal
    if spec.kind in ("restricted", "restricted-banded"):
        span, step = spec.window, 1
    elif spec.kind in ("conv", "dilated-conv") and not spec.se:
        step = stack_dilations(spec, layer + 1)[layer]
        span = (k - 1 if causal else (k - 1) // 2) * step
    else:  # full attention, or squeeze-and-excitation's mean over the (prefix of the) sequence
        span, step = n - 1, 1
    return range(0, span + 1, step) if causal else range(-span, span + 1, step)


def gate_offsets(spec: LayerSpec) -> range:
    """Offsets the spatial gate adds after a conv layer (output i = y_i · gate(y_{i−o})); {0} if off."""
    if spec.kind not in ("conv", "dilated-conv") or not spec.spatial:
        return range(0, 1)
    g = spec.spatial_kernel - 1
    return range(0, g + 1) if spec.causal else range(-(g // 2), g - g // 2 + 1)


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
        grown = {p + o for p in grown for o in gate_offsets(spec) if 0 <= p + o < n}
        if grown == reached:  # no layer adds anything: later (wider) ones cannot either
            return None
        reached = grown
    return None


def causal_path_length(spec: LayerSpec, n: int) -> int:
    """Closed form of the causal path length: 1, ⌈(n−1)/r⌉, ⌈(n−1)/(k−1)⌉, ⌈log_k n⌉-like, n−1."""
    k, b = spec.kernel_size, spec.dilation
    g = spec.spatial_kernel - 1 if spec.spatial else 0  # the spatial gate reaches g further back
    if spec.kind in RNN_GATES:
        return n - 1
    if spec.kind in ("restricted", "restricted-banded"):
        return math.ceil((n - 1) / spec.window)
    if spec.kind in ("conv", "dilated-conv") and spec.se:
        return 1 if n > 1 else 0  # the prefix mean connects every earlier position
    if spec.kind == "conv":
        return math.ceil((n - 1) / (k - 1 + g))
    if spec.kind == "dilated-conv":  # smallest L with Σ_i ((k−1)·b^i + g) ≥ n − 1
        layers = 0
        while sum((k - 1) * b ** i + g for i in range(layers)) < n - 1:
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

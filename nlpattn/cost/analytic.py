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

import dataclasses
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


# --- whole models: FLOPs per training step (for MFU) ------------------------------------------
# A ModelConfig-like object is read by attribute only (no import: this module stays torch-free).
# Training FLOPs are 3 × forward: the backward of every product computes the gradient of both
# operands (input and weight), 2 × its forward FLOPs; every counted product has a trainable or
# gradient-carrying operand on each side, from the token embeddings onwards — except the
# recurrent product of a zero initial state (no gradient flows into it: `rnn_backward_saving`).


def _bidirectional(cfg, causal: bool) -> bool:
    """Whether a recurrent / convolutional body reads both directions (as `sequence_direction`)."""
    return (not causal) if cfg.bidirectional is None else bool(cfg.bidirectional)


def transformer_layer_flops(cfg, n: int, memory_len: int = 0) -> int:
    """Forward FLOPs of one Transformer block over one sequence of n positions (all n² scores,
    as executed), plus cross-attention over `memory_len` encoder positions when > 0."""
    d, ff = cfg.d_model, cfg.d_ff
    flops = 2 * n * d * 3 * d + 2 * n * d * d + 4 * n * n * d + 4 * n * d * ff
    if memory_len:
        s = memory_len
        flops += 2 * n * d * d + 2 * s * d * 2 * d + 2 * n * d * d + 4 * n * s * d  # q, kv, out, QKᵀ·AV
    return flops


def rnn_layer_flops(cfg, positions: int, causal: bool) -> int:
    """Forward FLOPs of one LSTM/GRU layer over `positions` (real, when packed) time steps:
    per direction G gates × (input d → h + hidden h → h); bidirectional runs d/2 units each way."""
    g, d = RNN_GATES[cfg.body], cfg.d_model
    directions = 2 if _bidirectional(cfg, causal) else 1
    h = d // directions
    return directions * 2 * positions * g * h * (d + h)


def rnn_backward_saving(cfg, batch: int, causal: bool, reverse_rows: int | None = None,
                        task: str | None = None) -> int:
    """FLOPs the backward skips in a recurrent body: a hidden product that reads only the zero
    initial state needs no gradient (per layer, direction and row: 2·G·h·h). In a packed batch the
    backward direction starts only the `reverse_rows` longest rows so; the others join later."""
    if cfg.body not in RNN_GATES:
        return 0
    bidirectional = _bidirectional(cfg, causal)
    h = cfg.d_model // (2 if bidirectional else 1)
    rows = batch + ((batch if reverse_rows is None else reverse_rows) if bidirectional else 0)
    return _recurrent_layers(cfg, task) * rows * 2 * RNN_GATES[cfg.body] * h * h


def _recurrent_layers(cfg, task: str | None) -> int:
    """Layers that run in training: ELECTRA's generator adds its own to the body's."""
    return cfg.n_layers + (cfg.generator_layers if task == "electra" else 0)


def conv_layer_flops(cfg, n: int, causal: bool) -> int:
    """Forward FLOPs of one convolution layer (k taps, d → 2d for GLU or d for GELU) with its
    optional squeeze-and-excitation and spatial gates, over one sequence of n positions."""
    d, out = cfg.d_model, 2 * cfg.d_model if cfg.conv_activation == "glu" else cfg.d_model
    spec = LayerSpec("conv", d, causal=not _bidirectional(cfg, causal), se=cfg.se,
                     spatial=cfg.spatial, spatial_kernel=cfg.spatial_kernel)
    return 2 * n * cfg.kernel_size * d * out + gate_flops(spec, n)


def body_forward_flops(cfg, batch: int, n: int, *, causal: bool, memory_len: int = 0,
                       rnn_positions: int | None = None, decoder: bool = False) -> int:
    """Forward FLOPs of a whole body over (batch, n, d); `rnn_positions` = real positions of a
    packed (right-padded, bidirectional) recurrent batch, None → batch·n."""
    layers = cfg.n_decoder_layers if decoder and cfg.n_decoder_layers else cfg.n_layers
    if cfg.body == "transformer":
        return layers * batch * transformer_layer_flops(cfg, n, memory_len)
    if cfg.body in RNN_GATES:
        return layers * rnn_layer_flops(cfg, batch * n if rnn_positions is None else rnn_positions, causal)
    if cfg.body == "cnn":
        return layers * batch * conv_layer_flops(cfg, n, causal)
    raise ValueError(f"unknown body '{cfg.body}'")


def head_forward_flops(cfg, task: str, rows: int, num_labels: int = 2) -> int:
    """Forward FLOPs of the head over `rows` vectors: the positions projected onto the vocabulary
    (an MLM given labels projects its masked positions only), or the pooled rows of a classifier."""
    d, v = cfg.d_model, cfg.vocab_size
    if task == "mlm":
        return rows * (2 * d * d * bool(cfg.mlm_transform) + 2 * d * v)
    if task in ("clm", "seq2seq"):
        return rows * 2 * d * v
    if task == "electra":  # the detection head: dense d → d, then d → 1
        return rows * (2 * d * d + 2 * d)
    if task in ("classification", "regression"):
        return rows * (2 * d * d * bool(cfg.pooler) + 2 * d * (1 if task == "regression" else num_labels))
    raise ValueError(f"unknown task '{task}'")


def model_forward_flops(cfg, task: str, batch: int, n: int, *, head_rows: int | None = None,
                        decoder_len: int = 0, rnn_positions: int | None = None, num_labels: int = 2) -> int:
    """Forward FLOPs of a whole model (embeddings → body → head) on a (batch, n) input:
    `head_rows` = masked positions of an MLM batch with labels (None → every position);
    seq2seq: `decoder_len` target positions attend to the n source positions."""
    if task == "seq2seq":
        enc = body_forward_flops(cfg, batch, n, causal=False, rnn_positions=rnn_positions)
        dec = body_forward_flops(cfg, batch, decoder_len, causal=True, memory_len=n, decoder=True)
        return enc + dec + head_forward_flops(cfg, task, batch * decoder_len)
    body = body_forward_flops(cfg, batch, n, causal=_task_causal(cfg, task), rnn_positions=rnn_positions)
    if task == "electra":  # + the generator (a shallower body and the MLM head on the masked rows)
        generator = dataclasses.replace(cfg, n_layers=cfg.generator_layers)
        return (body + head_forward_flops(cfg, task, batch * n)
                + body_forward_flops(generator, batch, n, causal=False, rnn_positions=rnn_positions)
                + head_forward_flops(cfg, "mlm", batch * n if head_rows is None else head_rows))
    if task in ("classification", "regression"):
        return body + head_forward_flops(cfg, task, batch, num_labels)
    return body + head_forward_flops(cfg, task, batch * n if head_rows is None else head_rows)


def _task_causal(cfg, task: str) -> bool:
    """Whether the (first) body of `task` runs causally: CLM, and classifiers on a decoder."""
    return task == "clm" or (task in ("classification", "regression") and cfg.arch == "decoder")


def batch_training_flops(cfg, task: str, batch: dict, num_labels: int = 2) -> int:
    """FLOPs of forward + backward (3 × forward, less `rnn_backward_saving`) of `model(**batch)`, from the batch's shapes
    (and, for an MLM, the number of masked labels; for a packed recurrent encoder, real tokens)."""
    ids = batch["input_ids"]
    b, n = ids.shape
    labels, mask = batch.get("labels"), batch.get("attention_mask")
    head_rows = None
    if task in ("mlm", "electra") and labels is not None:
        from nlpattn.heads import mlm_head_rows

        head_rows = mlm_head_rows(int((labels != -100).sum()))  # as it runs: padded to a row bucket
    dec = batch.get("decoder_input_ids")
    rnn_positions = reverse_rows = None
    if cfg.body in RNN_GATES and mask is not None and _bidirectional(cfg, _task_causal(cfg, task)):
        if not bool(mask.all()):  # packed: each row runs its real length (at least 1)
            lengths = mask.sum(dim=1).clamp(min=1)
            rnn_positions, reverse_rows = int(lengths.sum()), int((lengths == lengths.max()).sum())
    forward = model_forward_flops(cfg, task, b, n, head_rows=head_rows, rnn_positions=rnn_positions,
                                  decoder_len=dec.shape[1] if dec is not None else 0, num_labels=num_labels)
    return 3 * forward - rnn_backward_saving(cfg, b, _task_causal(cfg, task), reverse_rows, task)

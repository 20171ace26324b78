"""Table 1 measurements: analytic FLOPs vs FlopCounterMode, path lengths, sequential ops,
memory accounting, power-law fits, crossovers, and a tiny end-to-end `nlpattn cost` run."""
import json
import math

import pytest
import torch
from torch import nn

from nlpattn.cost.analytic import (LAYER_KINDS, LayerSpec, causal_path_length, expected_path_length,
                                   forward_flops, parameters)
from nlpattn.cost.fit import crossover, fit_power_law, fit_tail
from nlpattn.cost.layers import BandedAttention, build_layer, countable
from nlpattn.cost.measure import count_flops, median_seconds, peak_memory_bytes, saved_tensor_bytes
from nlpattn.cost.paths import measured_path_length, sequential_ops


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_analytic_flops_equal_flop_counter_exactly(kind, causal):
    for n, d in [(24, 32), (40, 64)]:
        spec = LayerSpec(kind, d, n_heads=4, window=5, kernel_size=3, dilation=3, causal=causal)
        torch.manual_seed(0)
        layer = build_layer(spec)
        with countable(layer):
            counted = count_flops(layer, torch.randn(2, n, d))
        assert counted == forward_flops(spec, n, batch=2), (kind, n, d)  # README: within 0.1%; it is exact


def test_flop_counter_misses_the_fused_cpu_kernels_we_work_around():
    # Documented in table1.md: on CPU the fused oneDNN LSTM and SDPA's QKᵀ/AV count as 0 FLOPs.
    x = torch.randn(1, 32, 64)
    lstm, attn = build_layer(LayerSpec("lstm", 64)), build_layer(LayerSpec("self-attention", 64))
    assert count_flops(lstm, x) == 0
    assert count_flops(attn, x) == 8 * 32 * 64 * 64  # the projections only, not 4·n²·d


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_analytic_parameters_equal_module_parameters(kind):
    spec = LayerSpec(kind, 48, n_heads=4)
    assert parameters(spec) == sum(p.numel() for p in build_layer(spec).parameters())


@pytest.mark.parametrize("causal", [True, False])
def test_banded_attention_equals_masked_window_attention(causal):
    torch.manual_seed(0)
    spec = LayerSpec("restricted", 32, n_heads=4, window=3, causal=causal)
    masked, banded = build_layer(spec), BandedAttention(spec)
    banded.load_state_dict(masked.state_dict())
    x = torch.randn(2, 19, 32)
    torch.testing.assert_close(banded(x), masked(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_measured_path_length_equals_derived(kind, causal):
    for n in (2, 9, 33):
        spec = LayerSpec(kind, 8, n_heads=2, window=4, kernel_size=3, dilation=3, causal=causal)
        assert measured_path_length(spec, n) == expected_path_length(spec, n), (kind, causal, n)


def test_causal_path_lengths_match_the_closed_forms():
    n = 64
    cases = {"self-attention": 1, "transformer-block": 1, "restricted": 16, "restricted-banded": 16,
             "conv": 32, "dilated-conv": 4, "lstm": 63, "gru": 63}  # r=4, k=3, dilations 1,3,9,27
    for kind, value in cases.items():
        spec = LayerSpec(kind, 8, window=4, kernel_size=3, dilation=3)
        assert expected_path_length(spec, n) == causal_path_length(spec, n) == value, kind
    assert causal_path_length(LayerSpec("dilated-conv", 8, dilation=3), 82) == math.ceil(math.log(82, 3))
    # centred kernels with dilations 3**i only reach offsets in balanced ternary: 0 never reaches 8
    assert expected_path_length(LayerSpec("dilated-conv", 8, dilation=3, causal=False), 9) is None


def test_sequential_ops_grow_with_n_only_for_recurrence():
    def depth(kind, n):
        return sequential_ops(build_layer(LayerSpec(kind, 16, n_heads=2)), torch.randn(1, n, 16), kind)[0]

    for kind in ("self-attention", "restricted-banded", "conv", "dilated-conv"):
        assert depth(kind, 16) == depth(kind, 64), kind
    for kind in ("lstm", "gru"):
        d8, d16, d32 = depth(kind, 8), depth(kind, 16), depth(kind, 32)
        assert d32 - d16 == 2 * (d16 - d8) and d16 - d8 >= 8, kind  # a constant number of ops per token


def test_peak_memory_replays_allocations_and_frees():
    x = torch.randn(1024, 256)  # 1 MiB

    def fn():
        a = x @ x.T  # 4 MiB
        b = a.softmax(-1)  # +4 MiB → 8 MiB peak
        del a
        return b @ x  # 4 + 1 MiB

    assert peak_memory_bytes(fn) == 8 * 2 ** 20


def test_saved_tensor_bytes_counts_activations_only():
    layer = nn.Sequential(nn.Linear(16, 16), nn.Tanh())
    x = torch.randn(5, 16, requires_grad=True)
    # Linear saves x (the input: excluded) and its weight (a parameter: excluded); tanh its output.
    assert saved_tensor_bytes(layer, x) == 5 * 16 * 4


def test_median_seconds_runs_warmup_then_repeats():
    calls = []
    median_seconds(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5


def test_power_law_fit_recovers_synthetic_exponents():
    xs = [64, 128, 256, 512, 1024, 2048]
    fit = fit_power_law(xs, [3.0 * x ** 1.7 for x in xs])
    assert fit.exponent == pytest.approx(1.7, abs=1e-9) and fit.coefficient == pytest.approx(3.0)
    assert fit.r2 == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    noisy = [2e-6 * x ** 2 * math.exp(0.05 * float(torch.randn(1, generator=g))) for x in xs]
    assert fit_power_law(xs, noisy).exponent == pytest.approx(2.0, abs=0.1)
    with_overhead = [1.0 + 1e-6 * x ** 2 for x in xs]  # a fixed cost hides the slope at small x
    assert fit_tail(xs, with_overhead).exponent > fit_power_law(xs, with_overhead).exponent + 0.3
    with pytest.raises(ValueError):
        fit_power_law([1.0], [1.0])


def test_crossover_is_found_on_the_log_log_scale():
    xs = [16, 32, 64, 128, 256, 512]
    quadratic, linear = [x * x for x in xs], [100 * x for x in xs]
    c = crossover(xs, quadratic, linear)
    assert c["status"] == "crossed" and c["x"] == pytest.approx(100.0) and c["range"] == [64, 128]
    assert crossover(xs, linear, quadratic)["status"] == "below-range"
    assert crossover(xs, [1] * 6, [2] * 6)["status"] == "above-range"


def test_nlpattn_cost_end_to_end(tmp_path):
    from nlpattn.cli import main

    out = tmp_path / "cost"
    rc = main(["cost", f"output_dir={out}", "cost.lengths=[16,32,64]", "cost.d_model=16",
               "cost.d_models=[8,16]", "cost.fixed_length=16", "cost.n_heads=2", "cost.window=4",
               "cost.repeats=1", "cost.warmup=0", "cost.max_path_n=16", "cost.threads=1"])
    assert rc == 0
    results = json.loads((out / "table1.json").read_text())
    assert set(results["layers"]) == set(LAYER_KINDS)
    for entry in results["layers"].values():
        assert all(p["measured"] == p["expected"] for p in entry["paths"])
        assert [r["n"] for r in entry["length_sweep"]] == [16, 32, 64]
        assert all(r["time_fwd_s"] > 0 and r["time_train_s"] > 0 for r in entry["length_sweep"])
    assert results["layers"]["lstm"]["fits_n"]["flops_analytic"]["exponent"] == pytest.approx(1.0)
    markdown = (out / "table1.md").read_text()
    assert "| LSTM | O(n·d²) |" in markdown and "Crossover" in markdown
    for name in ("time_vs_n", "memory_vs_n", "flops_vs_n", "loglog_fits", "time_vs_d"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cost_config_errors(tmp_path, capsys):
    from nlpattn.cli import main

    assert main(["cost", f"output_dir={tmp_path}", "cost.layers=[self-atention]"]) == 2
    assert "did you mean 'self-attention'" in capsys.readouterr().err
    assert main(["cost", "bogus", f"output_dir={tmp_path}"]) == 2
    assert main(["cost", f"output_dir={tmp_path}", "cost.d_model=30", "cost.n_heads=4"]) == 2


@pytest.mark.parametrize("body", ["transformer", "lstm", "gru", "cnn"])
def test_model_forward_flops_counts_every_body_matmul(body):
    from nlpattn.config import ModelConfig
    from nlpattn.cost.measure import model_forward_flops
    from nlpattn.models import build_model

    d, n, layers, vocab = 32, 20, 2, 50
    cfg = ModelConfig(body=body, arch="decoder", vocab_size=vocab, d_model=d, n_heads=4, d_ff=4 * d,
                      n_layers=layers, max_len=n, dropout=0.0, kernel_size=3)
    kind = {"transformer": "transformer-block", "cnn": "conv"}.get(body, body)
    body_flops = layers * forward_flops(LayerSpec(kind, d, n_heads=4, kernel_size=3), n)
    expected = body_flops + 2 * n * d * vocab  # + the tied output projection
    assert model_forward_flops(build_model(cfg, "clm"), 1, n) == expected  # exact, not within a tolerance


GATES = [dict(se=True), dict(spatial=True), dict(se=True, spatial=True)]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kind", ["conv", "dilated-conv"])
@pytest.mark.parametrize("gates", GATES, ids=["se", "spatial", "se+spatial"])
def test_gated_conv_flops_and_parameters_equal_the_module(kind, causal, gates):
    n, d = 24, 32
    spec = LayerSpec(kind, d, kernel_size=3, dilation=3, causal=causal, spatial_kernel=5, **gates)
    plain = LayerSpec(kind, d, kernel_size=3, dilation=3, causal=causal)
    torch.manual_seed(0)
    layer = build_layer(spec)
    assert count_flops(layer, torch.randn(2, n, d)) == forward_flops(spec, n, batch=2)
    assert forward_flops(spec, n) > forward_flops(plain, n)  # the gates are counted
    assert parameters(spec) == sum(p.numel() for p in layer.parameters()) > parameters(plain)


def test_spatial_gate_flops_alone():
    from nlpattn.bodies.cnn import SpatialGate
    from nlpattn.cost.analytic import gate_flops

    spec = LayerSpec("conv", 16, spatial=True, spatial_kernel=7)
    assert count_flops(SpatialGate(7, causal=True), torch.randn(3, 40, 16)) == 3 * gate_flops(spec, 40) == 3 * 4 * 40 * 7


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kind", ["conv", "dilated-conv"])
@pytest.mark.parametrize("gates", GATES, ids=["se", "spatial", "se+spatial"])
def test_gated_conv_path_lengths_equal_derived(kind, causal, gates):
    for n in (2, 9, 33):
        spec = LayerSpec(kind, 8, n_heads=2, kernel_size=3, dilation=3, causal=causal, spatial_kernel=3, **gates)
        assert measured_path_length(spec, n) == expected_path_length(spec, n), (n, gates)
        if causal:
            assert causal_path_length(spec, n) == expected_path_length(spec, n), (n, gates)
    spatial = LayerSpec(kind, 8, kernel_size=3, dilation=3, spatial=True, spatial_kernel=3)
    assert causal_path_length(spatial, 28) < causal_path_length(LayerSpec(kind, 8, kernel_size=3, dilation=3), 28)


@pytest.mark.parametrize("arch", ["decoder", "encoder"])
def test_model_forward_flops_count_the_cnn_gates(arch):
    from nlpattn.config import ModelConfig
    from nlpattn.cost.measure import model_forward_flops
    from nlpattn.models import build_model

    d, n, layers, vocab = 32, 20, 2, 50
    cfg = ModelConfig(body="cnn", arch=arch, vocab_size=vocab, d_model=d, n_layers=layers, max_len=n,
                      dropout=0.0, kernel_size=3, se=True, spatial=True, spatial_kernel=5)
    spec = LayerSpec("conv", d, kernel_size=3, causal=arch == "decoder", se=True, spatial=True, spatial_kernel=5)
    expected = layers * forward_flops(spec, n) + 2 * n * d * vocab
    task = "clm" if arch == "decoder" else "mlm"
    model = build_model(cfg, task)
    if task == "mlm":  # the MLM head adds its dense transform
        expected += 2 * n * d * d
    assert model_forward_flops(model, 1, n) == pytest.approx(expected, rel=1e-9)


def test_nlpattn_cost_measures_conv_with_the_model_gates(tmp_path):
    from nlpattn.cli import main

    out = tmp_path / "cost"
    rc = main(["cost", f"output_dir={out}", "cost.layers=[conv,dilated-conv]", "cost.lengths=[16,32]",
               "cost.d_model=16", "cost.d_models=[16]", "cost.fixed_length=16", "cost.n_heads=2",
               "cost.repeats=1", "cost.warmup=0", "cost.max_path_n=16", "cost.threads=1",
               "model.body=cnn", "model.se=true", "model.spatial=true", "model.spatial_kernel=3"])
    assert rc == 0
    results = json.loads((out / "table1.json").read_text())
    for entry in results["layers"].values():
        assert entry["spec"]["se"] and entry["spec"]["spatial"] and entry["spec"]["spatial_kernel"] == 3
        assert entry["params"] == entry["params_counted"]
        assert all(p["measured"] == p["expected"] == 1 for p in entry["paths"])  # SE: the prefix mean
        assert all(r["flops_counted"] == r["flops_analytic"] for r in entry["length_sweep"])
    assert "| conv (contiguous) + SE + spatial gate (k=3) |" in (out / "table1.md").read_text()

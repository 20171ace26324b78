"""MFU in every run: analytic training FLOPs of whole models against FlopCounterMode (forward +
backward), `train.precision=auto` (native bf16 detection), the cached matmul peak, and
`flops_per_token` / `mfu` in metrics.jsonl and summary.json of a tiny run."""
import dataclasses
import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nlpattn.config import ModelConfig, TrainConfig, load_config
from nlpattn.cost.analytic import batch_training_flops
from nlpattn.cost.layers import countable
from nlpattn.models import build_model, load_model
from nlpattn.train import mfu, runtime
from test_train_utils import events, tiny_overrides

BASE = ModelConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_ff=24, max_len=32, dropout=0.0)
B, T = 3, 12


def counted_training_flops(model, batch: dict) -> int:
    """FLOPs FlopCounterMode sees in forward + backward (attention on the math path, LSTM unfused)."""
    with countable(model), FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    return counter.get_total_flops()


def make_batch(task: str, padded: bool) -> dict:
    """A batch for `task`; padded: right padding (rows of 12, 7 and 3 real tokens)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (B, T), generator=g)
    batch = {"input_ids": ids}
    if padded:
        batch["attention_mask"] = (torch.arange(T)[None] < torch.tensor([[12], [7], [3]])).long()
    if task in ("mlm", "electra"):
        labels = torch.full((B, T), -100)
        labels[0, 3], labels[1, 5], labels[1, 1], labels[2, 0] = 5, 2, 9, 7  # 4 masked of 36
        batch["labels"] = labels
    elif task == "clm":
        batch["labels"] = ids
    elif task == "seq2seq":
        batch["decoder_input_ids"], batch["labels"] = ids[:, :7], ids[:, 1:8]  # 7 targets vs 12 sources
    else:
        batch["labels"] = torch.tensor([0, 2, 1]) if task == "classification" else torch.randn(B)
    return batch


CASES = [(body, task, {}) for body in ("transformer", "lstm", "gru", "cnn") for task in ("mlm", "clm", "classification")]
CASES += [("cnn", task, gates) for task in ("mlm", "clm") for gates in
          ({"se": True}, {"spatial": True, "spatial_kernel": 5}, {"se": True, "spatial": True, "conv_activation": "gelu"})]
CASES += [("transformer", "seq2seq", {"n_decoder_layers": 3}), ("transformer", "regression", {"pooler": False}),
          ("transformer", "mlm", {"mlm_transform": False}), ("lstm", "classification", {"arch": "decoder"}),
          ("gru", "clm", {"tie_embeddings": False}), ("cnn", "classification", {"bidirectional": False, "se": True})]
CASES += [(body, "electra", {}) for body in ("transformer", "lstm", "gru", "cnn")]
CASES += [("transformer", "electra", {"generator_layers": 2, "mlm_transform": False})]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("body,task,extra", CASES, ids=[f"{b}-{t}-{'-'.join(e) or 'plain'}" for b, t, e in CASES])
def test_training_flops_equal_flop_counter_exactly(body, task, extra, padded):
    """3 × forward (less the zero initial state's gradient in RNNs), masked-only MLM head, packed
    bidirectional RNNs over real tokens only: equal to what FlopCounterMode counts, to the FLOP."""
    arch = {"clm": "decoder", "seq2seq": "encoder-decoder"}.get(task, "encoder")
    cfg = dataclasses.replace(BASE, body=body, **{"arch": arch, **extra})
    torch.manual_seed(0)
    model = build_model(cfg, task, num_labels=3 if task == "classification" else None)
    batch = make_batch(task, padded and task != "clm")
    expected = counted_training_flops(model, batch)
    assert expected > 0
    assert batch_training_flops(cfg, task, batch, num_labels=3) == expected  # tolerance 0: every op is seen


def test_mlm_flops_follow_the_masked_positions(monkeypatch):
    """Only masked positions go through the vocabulary projection, their count rounded up to the
    head's row bucket: one more masked label adds the transform and projection of one row
    (3 × 2·d·(d + V)) with a bucket of 1, and a whole bucket's rows, or nothing, with a bucket of 4."""
    import nlpattn.heads as heads

    cfg, batch = BASE, make_batch("mlm", False)
    more = dict(batch, labels=batch["labels"].clone())
    more["labels"][2, 9] = 4
    d, v = cfg.d_model, cfg.vocab_size
    monkeypatch.setattr(heads, "MLM_ROW_BUCKET", 1)
    assert batch_training_flops(cfg, "mlm", more) - batch_training_flops(cfg, "mlm", batch) == 3 * 2 * d * (d + v)
    monkeypatch.setattr(heads, "MLM_ROW_BUCKET", 4)
    n = int((batch["labels"] != -100).sum())
    step = batch_training_flops(cfg, "mlm", more) - batch_training_flops(cfg, "mlm", batch)
    assert step == (4 * 3 * 2 * d * (d + v) if n % 4 == 0 else 0)
    assert heads.mlm_head_rows(n) == -(-n // 4) * 4 and heads.mlm_head_rows(0) == 0


def test_model_flops_fn_only_for_our_models():
    model = build_model(BASE, "clm")
    batch = make_batch("clm", False)
    assert mfu.model_flops_fn(model)(batch) == batch_training_flops(BASE, "clm", batch)
    assert mfu.model_flops_fn(torch.nn.Linear(2, 2)) is None


# --- precision=auto -----------------------------------------------------------------------------

CPUINFO = "processor\t: 0\nvendor_id\t: Test\nmodel name\t: Test CPU 9000\nflags\t\t: fpu {flags}\n\nprocessor\t: 1\n"


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """Point the flags source at a written /proc/cpuinfo; no GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def write(flags: str):
        path = tmp_path / "cpuinfo"
        path.write_text(CPUINFO.format(flags=flags), encoding="utf-8")
        monkeypatch.setattr(runtime, "CPUINFO", str(path))

    return write


@pytest.mark.parametrize("flags,native,why", [
    ("sse avx2 avx512f avx512_bf16 amx_tile amx_bf16", True, "CPU has amx_bf16"),
    ("sse avx2 avx512f avx512_bf16", True, "CPU has avx512_bf16"),
    ("sse avx2 avx512f avx512_vnni", False, "CPU has no amx_bf16 or avx512_bf16"),
    ("sse avx2", False, "CPU has no amx_bf16 or avx512_bf16")])
def test_native_bf16_from_the_cpu_flags(fake_cpu, flags, native, why):
    fake_cpu(flags)
    assert runtime.native_bf16() is native
    assert runtime.resolve_precision("auto") == ("bf16" if native else "fp32", f"auto: {why}")
    for fixed in ("fp32", "bf16"):  # an explicit setting is kept whatever the CPU
        assert runtime.resolve_precision(fixed) == (fixed, "set by train.precision")
    assert runtime.cpu_model() == "Test CPU 9000"


def test_no_cpuinfo_means_fp32(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "CPUINFO", str(tmp_path / "missing"))
    assert runtime.cpu_flags() == set() and runtime.resolve_precision("auto")[0] == "fp32"


def test_auto_is_the_default_and_validated():
    assert TrainConfig().precision == "auto"
    assert load_config(None, ["train.precision=auto"]).train.precision == "auto"
    with pytest.raises(Exception, match="train.precision"):
        load_config(None, ["train.precision=fp8"])
    with pytest.raises(Exception, match="train.peak_flops"):
        load_config(None, ["train.peak_flops=0"])


# --- the peak -----------------------------------------------------------------------------------

def test_peak_is_measured_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(mfu, "matmul_peak_flops", lambda dtype, device: calls.append(dtype) or 1.5e11 * (len(calls)))
    assert mfu.peak_flops("bf16") == (1.5e11, "measured")
    assert mfu.peak_flops("bf16") == (1.5e11, "cached")
    assert mfu.peak_flops("fp32") == (3e11, "measured")  # another dtype: its own entry
    assert calls == [torch.bfloat16, torch.float32]
    cache = json.loads((tmp_path / "nlpattn" / "peak_flops.json").read_text())
    assert cache == {mfu.cache_key("bf16"): 1.5e11, mfu.cache_key("fp32"): 3e11}
    assert f"{torch.get_num_threads()} threads" in mfu.cache_key("bf16") and runtime.cpu_model() in mfu.cache_key("bf16")
    (tmp_path / "nlpattn" / "peak_flops.json").write_text("{not json")  # damaged: measured again
    assert mfu.peak_flops("bf16") == (4.5e11, "measured")


def test_matmul_peak_is_a_rate(one_thread):
    small = mfu.matmul_peak_flops(torch.float32, n=128, reps=3, min_seconds=0.0)
    assert 1e8 < small < 1e13  # 2·128³ FLOPs in well under a second, and not absurdly fast


# --- a run ----------------------------------------------------------------------------------------

@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one mixed-precision setting per process: reset it around the test."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_run_logs_flops_per_token_and_mfu(tmp_path, objective):
    from nlpattn.train.pretrain import run_pretrain

    peak = 2.5e11
    cfg = load_config(None, tiny_overrides(tmp_path / "data", tmp_path / "run", objective=objective, max_steps=3,
                                           save_every=100, eval_every=100, peak_flops=peak))
    summary = run_pretrain(cfg)
    train = events(tmp_path / "run")
    assert len(train) == 3
    for e in train:
        assert e["mfu"] == pytest.approx(e["tokens_per_s"] * e["flops_per_token"] / peak, rel=1e-9)
    assert summary["mfu"] == pytest.approx(summary["tokens_per_s"] * summary["flops_per_token"] / peak, rel=1e-9)
    assert (summary["peak_flops"], summary["peak_flops_source"]) == (peak, "train.peak_flops")
    assert (summary["precision"], summary["precision_reason"]) == ("fp32", "set by train.precision")
    # flops_per_token is what FlopCounterMode counts in one step of this model at this shape
    model = load_model(tmp_path / "run")
    ids = torch.randint(1, model.cfg.vocab_size, (4, 32))
    if objective == "clm":
        counted = counted_training_flops(model, {"input_ids": ids, "labels": ids})
        assert summary["flops_per_token"] == counted / ids.numel()
        assert all(e["flops_per_token"] == counted / ids.numel() for e in train)
    else:  # the number of masked positions varies: between none and every position
        none = counted_training_flops(model, {"input_ids": ids, "labels": torch.full_like(ids, -100)})
        some = counted_training_flops(model, {"input_ids": ids, "labels": torch.where(ids % 7 == 0, ids, -100)})
        assert none / ids.numel() < summary["flops_per_token"] < 3 * none / ids.numel()
        assert some > none


def test_auto_precision_and_cached_peak_in_a_run(tmp_path, monkeypatch, capsys, fresh_accelerate_state):
    from nlpattn.train.pretrain import run_pretrain

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    precision, reason = runtime.resolve_precision("auto")
    cache = tmp_path / "cache" / "nlpattn" / "peak_flops.json"
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({mfu.cache_key(precision, threads=1): 3.25e11}))
    cfg = load_config(None, tiny_overrides(tmp_path / "data", tmp_path / "run", max_steps=2, save_every=100,
                                           eval_every=100, final_eval_batches=1, precision="auto"))
    summary = run_pretrain(cfg)
    assert (summary["precision"], summary["precision_reason"]) == (precision, reason)
    assert (summary["peak_flops"], summary["peak_flops_source"]) == (3.25e11, "cached")
    assert math.isfinite(summary["mfu"]) and 0 < summary["mfu"]
    err = capsys.readouterr().err
    assert f"precision {precision} ({reason}); peak 325.0 GFLOP/s (cached)" in err


def test_mfu_fields_say_none_when_unknown():
    assert mfu.mfu_fields(6e9, 1000, 2.0, 1e10) == {"flops_per_token": 6e6, "mfu": 0.3}
    assert mfu.mfu_fields(None, 1000, 2.0, 1e10) == {"flops_per_token": None, "mfu": None}  # not one of our models
    assert mfu.mfu_fields(6e9, 1000, 2.0, None) == {"flops_per_token": 6e6, "mfu": None}  # no peak
    assert mfu.run_peak(None, "fp32", "cpu", needed=False) is None
    assert mfu.run_peak(5e11, "fp32", "cpu") == (5e11, "train.peak_flops")

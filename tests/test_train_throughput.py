"""benchmarks/train_throughput.py and benchmarks/pipeline.py smoke-run at tiny shapes: the JSON
and markdown they write (no timing is asserted: the machine is shared)."""
import argparse
import json
import math
import subprocess
import sys

import pytest
import torch

from test_train_utils import REPO, child_env

sys.path.insert(0, str(REPO / "benchmarks"))
import train_throughput as tt  # noqa: E402

TINY = ["--d", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--vocab", "128", "--seq", "16", "--batch", "2",
        "--steps", "2", "--warmup", "1", "--peak-n", "128", "--threads", "1"]


@pytest.mark.parametrize("name", list(tt.MODELS))
def test_every_model_trains_and_infers(name, one_thread):
    a = argparse.Namespace(d=32, layers=1, heads=2, ffn=64, vocab=128, seq=16, batch=2, steps=2,
                           warmup=1, dropout=0.0, device="cpu", worker=name, dtype="bf16", phase="train")
    row = tt.worker(a)
    assert row["model"] == name and row["objective"] == tt.MODELS[name]
    assert math.isfinite(row["loss_first"]) and abs(row["loss_first"] - math.log(128)) < 0.5  # random init ≈ ln V
    assert row["train_tok_s"] > 0 and row["peak_rss_mib"] > 0 and "infer_tok_s" not in row
    assert 28_000 < row["params"] < 31_000  # same shape: 128·32 tied embeddings, 512·32 positions, one block
    inference = tt.worker(argparse.Namespace(**{**vars(a), "phase": "infer"}))  # in a process of its own
    assert inference["infer_tok_s"] > 0 and inference["infer_faults_per_pass"] >= 0 and "train_tok_s" not in inference
    both = tt.worker(argparse.Namespace(**{**vars(a), "phase": "train+infer"}))  # --inference-after-training
    assert both["train_tok_s"] > 0 and both["infer_tok_s"] > 0


def test_benchmark_writes_json_and_markdown(tmp_path):
    out = tmp_path / "tt"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/train_throughput.py"), *TINY, "--dtypes", "fp32,bf16",
                           "--models", "nlpattn-clm,nanogpt", "--out", str(out)], capture_output=True, text=True,
                          cwd=REPO, env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.with_suffix(".json").read_text())
    assert set(result["peaks"]) == {"fp32", "bf16"} and all(v > 0 for v in result["peaks"].values())
    assert set(result["machine"]["flags"]) == set(tt.FLAGS) and result["machine"]["cpu"]
    rows = {(r["model"], r["dtype"]): r for r in result["rows"]}
    assert set(rows) == {(m, d) for m in ("nlpattn-clm", "nanogpt") for d in ("fp32", "bf16")}
    a = argparse.Namespace(**result["args"])
    for (model, dtype), r in rows.items():
        assert "error" not in r, r
        fpt = tt.model_flops_per_token("clm", a)
        assert r["train_mfu"] == pytest.approx(r["train_tok_s"] * fpt / result["peaks"][dtype], rel=1e-9)
    ours, nano = rows["nlpattn-clm", "bf16"], rows["nanogpt", "bf16"]
    assert ours["train_tok_s_vs_nanogpt"] == pytest.approx(ours["train_tok_s"] / nano["train_tok_s"])
    assert ours["train_vs_fp32"] == pytest.approx(ours["train_tok_s"] / rows["nlpattn-clm", "fp32"]["train_tok_s"])
    md = out.with_suffix(".md").read_text()
    assert result["machine"]["cpu"] in md and "| nlpattn-clm | bf16 |" in md and "× nanogpt" in md


def test_huge_pages_reach_every_worker_where_the_kernel_allows(tmp_path):
    from nlpattn.allocator import kernel_huge_page_mode

    out = tmp_path / "tt"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/train_throughput.py"), *TINY, "--dtypes", "fp32",
                           "--models", "nlpattn-mlm,bert", "--huge-pages", "--out", str(out)], capture_output=True,
                          text=True, cwd=REPO, env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    if kernel_huge_page_mode() in ("madvise", "always"):
        assert [r["memory"]["huge_pages"] for r in rows] == [True, True], rows
        assert "huge pages (THP_MEM_ALLOC_ENABLE=1)" in out.with_suffix(".md").read_text()
    else:  # a worker refuses rather than measure something else than asked
        assert all("--huge-pages: the kernel's transparent huge pages are" in r["error"] for r in rows), rows


def test_flops_per_token_of_the_benchmark_shape():
    """MLM counts the head over 15% of positions; CLM over every position (d 256, 4 layers, seq 128)."""
    a = argparse.Namespace(d=256, layers=4, heads=4, ffn=1024, vocab=8192, seq=128, batch=16)
    d, n, ff, v, L = 256, 128, 1024, 8192, 4
    body = L * (8 * d * d + 4 * n * d + 4 * d * ff)  # per token: projections, scores, FFN
    assert tt.model_flops_per_token("clm", a) == 3 * (body + 2 * d * v)
    assert tt.model_flops_per_token("mlm", a) == pytest.approx(3 * (body + 0.15 * (2 * d * d + 2 * d * v)), rel=1e-3)


def test_model_variants_parse_and_name_back():
    assert tt.parse_variant("nlpattn-clm") == ("nlpattn-clm", {})
    base, options = tt.parse_variant("nlpattn-mlm[compile,attention=math]")
    assert (base, options) == ("nlpattn-mlm", {"compile": True, "attention": "math"})
    assert tt.variant_name(base, options) == "nlpattn-mlm[compile,attention=math]"
    assert tt.objective_of("nlpattn-clm[compile]") == "clm"
    assert tt.parse_variant("nlpattn-clm[bias=false]") == ("nlpattn-clm", {"bias": "false"})
    assert tt.split_models("bert,nlpattn-clm[bias=false,activation=gelu],nanogpt") == \
        ["bert", "nlpattn-clm[bias=false,activation=gelu]", "nanogpt"]
    assert tt.model_options({"compile": True, "bias": "false", "activation": "gelu", "n_layers": "2"}) == \
        {"bias": False, "activation": "gelu", "n_layers": 2}
    for bad in ("gpt3", "nanogpt[attention=math]", "nlpattn-clm[fast]", "nlpattn-clm[compile", "gpt2[bias=false]",
                "nlpattn-clm[bias=no]"):
        with pytest.raises(ValueError):
            tt.parse_variant(bad)


def test_math_attention_variant_builds_our_model_with_the_math_path():
    a = argparse.Namespace(d=32, layers=1, heads=2, ffn=64, vocab=128, seq=16, batch=2, dropout=0.0)
    model = tt.build("nlpattn-clm[attention=math]", a)
    assert model.cfg.attention == "math"
    assert tt.build("nlpattn-clm", a).cfg.attention == "auto"  # the shipped default
    unbiased = tt.build("nlpattn-clm[bias=false]", a)
    linears = [m for m in unbiased.modules() if isinstance(m, torch.nn.Linear)]
    assert not unbiased.cfg.bias and linears and all(m.bias is None for m in linears)
    assert tt.build("nlpattn-clm[activation=gelu]", a).cfg.activation == "gelu"  # the benchmark's default: gelu_tanh


def test_rounds_take_each_figure_s_median_and_compiled_variants_get_a_break_even():
    def row(model, tok_s, warm=0.0):
        return {"model": model, "dtype": "fp32", "objective": "clm", "train_step_ms": 1000.0 * 32 / tok_s,
                "train_tok_s": tok_s, "infer_tok_s": 2 * tok_s, "peak_rss_mib": 100.0, "warmup_extra_s": warm,
                "infer_faults_per_pass": 0.0}
    rounds = [[row("nlpattn-clm", v), row("nlpattn-clm[compile]", 1.5 * v, warm=30.0 + i)]
              for i, v in enumerate((100.0, 300.0, 200.0))]
    rows = tt.median_rows(rounds)
    assert [r["train_tok_s"] for r in rows] == [200.0, 300.0]
    assert rows[0]["rounds_train_tok_s"] == [100.0, 300.0, 200.0]
    assert rows[0]["rounds_infer_tok_s"] == [200.0, 600.0, 400.0]
    tt.add_ratios(rows)
    compiled = rows[1]
    assert compiled["compile_s"] == 31.0 and compiled["train_vs_eager"] == pytest.approx(1.5)
    # eager needs W seconds for what compiled does in W - 31 s at 1.5x: W = 31 / (1 - 1/1.5)
    assert compiled["break_even_min"] == pytest.approx(31.0 / (1 - 1 / 1.5) / 60)
    assert "compile_s" not in rows[0]


def test_markdown_shows_a_slow_peak_and_flags_an_mfu_above_one():
    """bf16 without a native kernel: a 0.29 GFLOP/s peak prints as such, and its MFU above 1 is flagged."""
    result = {
        "machine": {"cpu": "AMD EPYC", "flags": {"avx2": True}, "torch": "2.13.0+cpu", "threads": 2},
        "args": {"d": 256, "layers": 4, "heads": 4, "ffn": 1024, "vocab": 8192, "seq": 128, "batch": 16,
                 "dropout": 0.0, "steps": 3, "warmup": 1, "rounds": 1},
        "peaks": {"fp32": 178e9, "bf16": 0.29e9}, "rows": []}
    for dtype, mfu in (("fp32", 0.6), ("bf16", 10.2)):
        result["rows"].append({"model": "nlpattn-mlm", "dtype": dtype, "objective": "mlm", "train_tok_s": 100.0,
                               "infer_tok_s": 200.0, "peak_rss_mib": 500.0, "train_mfu": mfu})
    text = tt.markdown(result)
    assert "- matmul peak fp32: 178 GFLOP/s" in text and "- matmul peak bf16: 0.29 GFLOP/s" in text
    assert "- matmul bf16 ÷ fp32: 0.00163" in text
    assert "MFU above 1 in bf16:" in text and "MFU above 1 in fp32" not in text


def test_pipeline_overhead_pools_blocks_and_bootstraps_over_pairs():
    """The overhead is pooled time per step (a rare slow block counts in full), not a median
    of blocks; its interval comes from resampling block pairs and brackets the pooled figure."""
    import pipeline

    out = pipeline.overhead_of([[2.0, 2.0], [2.0, 2.0], [2.0, 8.0]], [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]])
    assert out["pipeline_s_per_step"] == pytest.approx(3.0) and out["bare_s_per_step"] == pytest.approx(2.0)
    assert out["overhead_pct"] == pytest.approx(50.0)
    assert out["block_overhead_pct"] == pytest.approx([0.0, 0.0, 150.0])
    lo, hi = out["overhead_pct_ci95"]
    assert 0.0 <= lo < 50.0 < hi <= 150.0
    assert out["steps_timed"] == {"pipeline": 6, "bare": 6}


def test_pipeline_benchmark_interleaves_bare_blocks_in_the_run(tmp_path):
    """The default method at a tiny shape: one run, every block pair timed in full (block steps
    of the pipeline and of the bare step each), the pooled overhead as the result."""
    from test_train_utils import tiny_overrides

    out = tmp_path / "pipeline"
    cmd = [sys.executable, "benchmarks/pipeline.py", "--config", "configs/pretrain/clm-small.yaml", "--block", "3",
           "--blocks", "2", "--warmup", "1", "--out", str(out), "--set",
           *tiny_overrides(tmp_path / "data", tmp_path / "unused"), "train.save_every=4", "train.log_every=2"]
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["method"] == "interleaved" and result["steps_timed"] == {"pipeline": 6, "bare": 6}
    assert len(result["block_overhead_pct"]) == 2 and result["bare_s_per_step"] > 0
    assert result["overhead_pct"] == pytest.approx(100 * (result["pipeline_s_per_step"] / result["bare_s_per_step"] - 1))
    lo, hi = result["overhead_pct_ci95"]
    assert lo <= result["overhead_pct"] <= hi
    assert "over 2 block pairs of 3 steps" in proc.stdout


def test_pipeline_benchmark_reports_each_round_and_their_median(tmp_path):
    """benchmarks/pipeline.py --rounds 2 at a tiny shape: every round's pipeline and bare step,
    and the median round's overhead as the result (no timing asserted)."""
    from test_train_utils import tiny_overrides

    out = tmp_path / "pipeline"
    cmd = [sys.executable, "benchmarks/pipeline.py", "--config", "configs/pretrain/clm-small.yaml", "--method", "runs",
           "--steps", "2", "--warmup", "1", "--rounds", "2", "--out", str(out), "--set",
           *tiny_overrides(tmp_path / "data", tmp_path / "unused")]
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    rounds = result["rounds"]
    assert len(rounds) == 2 and all(r["steps"] == [2, 4] and r["bare_s_per_step"] > 0 for r in rounds)
    for r in rounds:
        assert r["overhead_pct"] == pytest.approx(100 * (r["pipeline_s_per_step"] / r["bare_s_per_step"] - 1))
    assert result["overhead_pct"] == min(r["overhead_pct"] for r in rounds)  # the lower median of two
    assert result["overhead_pct_range"] == [min(r["overhead_pct"] for r in rounds), max(r["overhead_pct"] for r in rounds)]
    assert "round 2:" in proc.stdout and "median of 2 rounds" in proc.stdout

"""The benchmarks' two sides are configured alike where they are meant to be (nothing is timed)."""
import importlib.util
import re

import pytest
import torch

from test_train_utils import REPO

SAME = ("optimizer", "fused", "lr", "betas", "eps", "batch", "schedule", "clip", "precision")


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sst2_peer_gets_our_optimizer_decay_groups_schedule_and_data():
    sides = load("sst2_peer").describe()
    ours, peer = sides["ours"], sides["peer"]
    assert ours["optimizer"] == "AdamW" and ours["fused"] is True  # transformers' default: fused torch AdamW
    for key in (*SAME, "elements_by_decay", "epochs", "max_length", "eval"):
        assert ours[key] == peer[key], (key, ours[key], peer[key])
    decay = ours["elements_by_decay"]
    assert set(decay) == {0.0, 0.01} and min(decay.values()) > 1e6  # matrices decay; embeddings, norms do not


def test_shakespeare_anchor_reference_has_our_recipe_and_eval_work():
    sides = load("shakespeare_anchor").describe()
    ours, ref = sides["ours"], sides["reference"]
    assert ours["fused"] is True
    for key in (*SAME, "min_lr", "weight_decay", "steps"):
        assert ours[key] == ref[key], (key, ours[key], ref[key])
    assert ours["eval"][:3] == ref["eval"][:3] and ours["eval"][3] is None  # final eval: the whole split


def test_shakespeare_reference_trains(monkeypatch):
    anchor = load("shakespeare_anchor")
    monkeypatch.setitem(anchor.RECIPE, "max_steps", 3)
    monkeypatch.setitem(anchor.RECIPE, "warmup_steps", 1)
    monkeypatch.setitem(anchor.RECIPE, "eval_every", 2)
    out = anchor.train_reference()
    assert 3.0 < out["final_val_loss"] < 5.0  # ~log(65) after 3 steps


def test_mlm_peer_scores_both_models_alike_on_the_same_masked_batches(tmp_path):
    """Ours and its transformers conversion get the same masked loss and accuracy from
    masked_scores: the two sides are scored by one rule (ours returns masked rows only)."""
    import torch

    from nlpattn.config import load_config
    from nlpattn.data.corpus import build_corpus
    from nlpattn.interop.hf import to_transformers
    from nlpattn.models import build_model
    from nlpattn.tokenizer import train_tokenizer
    from test_train_utils import tiny_overrides

    peer = load("mlm_peer")
    cfg = load_config(None, [*tiny_overrides(tmp_path / "data", tmp_path / "run", objective="mlm"),
                             "model.norm=post", "model.type_vocab_size=2"])
    tok = train_tokenizer(cfg.tokenizer, cfg.data.train_files)
    _, valid = build_corpus(cfg, tok)
    batches = peer.fixed_eval_batches(valid, cfg.data.block_size, tok, batch_size=4, n=2)
    again = peer.fixed_eval_batches(valid, cfg.data.block_size, tok, batch_size=4, n=2)
    assert len(batches) == 2 and all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, again))
    torch.manual_seed(0)
    ours = build_model(load_config(None, [*tiny_overrides(tmp_path / "data", tmp_path / "run", objective="mlm"),
                                          "model.norm=post", "model.type_vocab_size=2",
                                          f"model.vocab_size={tok.vocab_size}"]).model, "mlm").eval()
    mine, theirs = peer.masked_scores(ours, batches, ours=True), peer.masked_scores(to_transformers(ours), batches,
                                                                                     ours=False)
    assert mine["tokens"] == theirs["tokens"] > 0
    assert abs(mine["loss"] - theirs["loss"]) < 1e-4 and mine["accuracy"] == theirs["accuracy"]


def test_mlm_peer_schedule_follows_ours_over_steps_or_minutes():
    """The peer's lr schedule is transformers' over steps, and follows the budget clock (as ours
    does) with train.decay_over=minutes."""
    import torch

    from nlpattn.config import TrainConfig

    peer = load("mlm_peer")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    make = lambda **kw: peer.peer_scheduler(opt, TrainConfig(lr=1e-3, warmup_steps=2, schedule="linear",
                                                             max_steps=10, **kw))

    def steps(sched, n):
        for _ in range(n):
            opt.step()
            sched.step()
        return sched.get_last_lr()[0]

    by_steps, none = make()
    assert none is None and steps(by_steps, 6) == pytest.approx(0.5e-3)  # 4 of 8 decay steps
    by_minutes, clock = make(decay_over="minutes", max_minutes=1.0)
    clock.fraction = 0.75
    assert steps(by_minutes, 3) == pytest.approx(0.25e-3)


def test_mlm_peer_takes_an_existing_run_as_ours(tmp_path, capsys):
    """`--ours RUN`: the peer trains for that run's wall-clock on its tokenizer and cache; both are
    scored on the same tokens; the peer is saved whole; bad --ours input is one line, exit 2."""
    import json

    from nlpattn.config import load_config
    from nlpattn.train.pretrain import run_pretrain
    from test_train_utils import tiny_overrides

    run = tmp_path / "run"
    run_pretrain(load_config(None, tiny_overrides(tmp_path / "data", run, objective="mlm", max_steps=4)))
    peer = load("mlm_peer")
    out = tmp_path / "bench"
    assert peer.main(["--ours", str(run), "--out", str(out), "--eval-batches", "2"]) == 0
    result = json.loads((out / "mlm_peer.json").read_text())
    wall = json.loads((run / "summary.json").read_text())["wall_s"]
    assert result["ours_run"] == str(run) and result["ours"]["steps"] == 4
    # the peer stops at ours' wall-clock or at the run's step budget (4), whichever comes first
    assert 1 <= result["peer"]["steps"] <= 4
    assert result["peer"]["steps"] == 4 or result["peer"]["wall_s"] >= wall - 0.1
    assert result["ours"]["eval"]["tokens"] == result["peer"]["eval"]["tokens"] == result["eval_tokens"] > 0
    assert (out / "peer" / "model.safetensors").is_file() and not (out / "peer.partial").exists()
    assert f"--ours {run}" in (out / "mlm_peer.md").read_text()
    capsys.readouterr()
    for argv, message in ((["--ours", str(run), "--out", str(out)], "peer exists"),
                          (["--ours", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b2")],
                           "summary.json: no such file"),
                          (["--ours", str(run), "--out", str(tmp_path / "b3"), "train.lr=1"], "overrides apply only")):
        with pytest.raises(SystemExit) as exit_info:
            peer.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err


def test_corpus_cache_times_every_source_of_a_corpus(tmp_path, capsys):
    """benchmarks/corpus_cache.py on a two-source miniature corpus: tokens per source add up."""
    import gzip
    import json

    from nlpattn.config import TokenizerConfig
    from nlpattn.tokenizer import train_tokenizer

    corpus = tmp_path / "corpus"
    for rel, text in (("wikipedia/enwiki-00.txt.gz", "the cat sat on the mat.\n\nan article.\n"),
                      ("imdb/unsup.txt.gz", "a fine film.\nnot a fine film.\n")):
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(corpus / rel, "wt", encoding="utf-8") as f:
            f.write(text * 20)
    plain = tmp_path / "plain.txt"
    plain.write_text("the cat sat on the mat. a fine film.\n" * 20, encoding="utf-8")
    tok = train_tokenizer(TokenizerConfig(kind="char", vocab_size=64, n_sentinels=0), [str(plain)])
    tok.save(tmp_path / "run")
    bench = load("corpus_cache")
    assert bench.main(["--run", str(tmp_path / "run"), "--corpus", str(corpus), "--out", str(tmp_path / "cc")]) == 0
    result = json.loads((tmp_path / "cc.json").read_text())
    assert result["files"] == 2 and result["tokens"] == sum(r["tokens"] for r in result["per_source"]) > 0
    assert [r["source"].rsplit("/", 1)[-1] for r in result["per_source"]] == ["enwiki-00.txt.gz", "unsup.txt.gz"]
    assert result["wall_s"] >= 0 and "M tokens in" in (tmp_path / "cc.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--run", str(tmp_path / "run"), "--corpus", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and "nowhere: no corpus files" in capsys.readouterr().err


@pytest.mark.parametrize("inference", [False, True])
def test_profile_step_groups_a_step_or_an_inference_pass(capsys, inference):
    tiny = ["--d", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--vocab", "128", "--seq", "16",
            "--batch", "2", "--steps", "1", "--models", "nlpattn-clm", "--dtypes", "fp32"]
    assert load("profile_step").main(tiny + ["--inference"] * inference) == 0
    out = capsys.readouterr().out
    assert ("ms/inference pass" in out) == inference and "matmul" in out
    assert ("optimizer (fused AdamW)" in out) != inference  # no optimizer step when inferring
    bound = float(re.search(r"at most ([0-9.]+)x faster", out).group(1))
    assert 1.0 < bound < 20.0  # the matmuls are a real share of even a tiny model's time


def test_profile_step_counts_a_matmul_once_with_its_children():
    """The bound's shared work: outermost matmul / SDPA calls with their children, nested ones once."""
    from torch.profiler import profile

    bench = load("profile_step")
    x, w, b = torch.randn(64, 32), torch.randn(48, 32), torch.randn(48)
    with profile() as prof:
        torch.nn.functional.linear(x, w, b)  # addmm, with its bias copy inside
        torch.relu(x)
    events = prof.events()
    addmm = [e for e in events if e.name == "aten::addmm"]
    assert len(addmm) == 1 and bench.shared_work_ms(events) == pytest.approx(addmm[0].cpu_time_total / 1e3)
    assert bench.is_shared_work("aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def test_lm_head_loss_times_the_plain_and_the_fused_head(capsys):
    tiny = ["--rows", "64", "--d", "8", "--vocab", "32", "--steps", "1", "--warmup", "0", "--chunks", "16,64"]
    assert load("lm_head_loss").main(tiny) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("fp32: plain") and "16 rows" in lines[1] and lines[2].startswith("bf16:")


def test_activation_times_each_gelu_in_both_dtypes(capsys):
    assert load("activation").main(["--rows", "8", "--width", "16", "--steps", "1", "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("float32: gelu (exact)") and lines[2].startswith("bfloat16:")
    assert "gelu tanh via float32" in lines[2]


def test_allocator_compares_four_settings_on_each_workload(capsys):
    tiny = ["--rows", "8", "--d", "4", "--vocab", "16", "--blocks", "2", "--block-mib", "1", "--steps", "2",
            "--warmup", "1", "--threads", "1"]
    assert load("allocator").main(tiny) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("| workload | glibc default | kept (mmap 32 MiB) | kept + huge pages "
                        "| kept, mmap 1 GiB |")
    assert [line.split(" | ")[0] for line in lines[3:]] == ["| step", "| logits fp32", "| logits bf16"]
    assert all(line.count("faults") == 4 for line in lines[3:])


def test_masked_lm_loss_times_both_paths_on_the_same_logits(capsys):
    bench = load("masked_lm_loss")
    assert bench.main(["--rows", "8,40", "--vocab", "16", "--steps", "2", "--warmup", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ")[:2] for line in lines[3:]]
    assert rows == [["| 8", "float32"], ["| 8", "bfloat16"], ["| 40", "float32"], ["| 40", "bfloat16"]]
    # its reference is the path shipped before: same value as chunked_cross_entropy's
    torch.manual_seed(0)
    logits, targets = torch.randn(600, 16), torch.randint(0, 16, (600,))  # above 512 rows: 256-row chunks
    ref = bench.upcast_cross_entropy(logits, targets)
    assert abs(ref.item() - bench.chunked_cross_entropy(logits, targets).item()) < 1e-5
    assert abs(ref.item() - torch.nn.functional.cross_entropy(logits, targets).item()) < 1e-5


def test_mlm_peer_windows_are_framed_like_ours_when_the_run_frames_them(tmp_path):
    """With data.cls_sep the peer reads ours' windows framed [CLS] ... [SEP] ([EOS] -> [SEP]), as
    ours' MLMCollator frames them; without it the windows are the cache's tokens unchanged."""
    from types import SimpleNamespace

    from nlpattn.config import TokenizerConfig
    from nlpattn.tokenizer import train_tokenizer

    tok = train_tokenizer(TokenizerConfig(kind="wordpiece", vocab_size=200), texts=["a b c d e f g"] * 20)
    peer = load("mlm_peer")
    blocks = [torch.arange(10, 16) + i for i in range(4)]
    assert tok.eos_id not in (None, tok.sep_id)  # the document boundary must be a token of its own
    blocks[2][3] = tok.eos_id
    framed = peer.peer_windows(blocks, 1, 2, SimpleNamespace(cls_sep=True), tok)
    assert framed.shape == (2, 6)
    assert framed[:, 0].tolist() == [tok.cls_id] * 2 and framed[:, -1].tolist() == [tok.sep_id] * 2
    assert framed[0, 1:-1].tolist() == blocks[1][1:-1].tolist() and framed[1, 3] == tok.sep_id
    plain = peer.peer_windows(blocks, 1, 2, SimpleNamespace(cls_sep=False), tok)
    assert plain.tolist() == [blocks[1].tolist(), blocks[2].tolist()]


def test_rope_benchmark_swaps_in_llamas_rotation_that_computes_the_same(capsys):
    bench = load("rope")
    tiny = ["--d", "16", "--heads", "2", "--layers", "1", "--ffn", "32", "--vocab", "32", "--seq", "8", "--batch", "2",
            "--blocks", "2", "--per-block", "1", "--op-repeats", "1", "--threads", "1"]
    assert bench.main(tiny) == 0
    rows = [line.split(" | ")[0] for line in capsys.readouterr().out.splitlines()[3:]]
    assert rows == ["| q, k rotation, train", "| q, k rotation, inference"] + [
        f"| {name} {mode}" for name in bench.tt.split_models(bench.MODELS) for mode in ("train", "inference")]
    # the swapped-in rotation is transformers' formula and gives our values and gradients
    rope = bench.RotaryEmbedding(8, 16)
    x = torch.randn(2, 2, 5, 8, requires_grad=True)
    ours = rope(x, 3)
    (grad_ours,) = torch.autograd.grad(ours.sum(), x)
    with bench.rotation("llama"):
        assert bench.RotaryEmbedding.forward is bench.llama_forward
        llama = rope(x, 3)
        (grad_llama,) = torch.autograd.grad(llama.sum(), x)
    assert bench.RotaryEmbedding.forward is bench.ROTATIONS["ours"]
    torch.testing.assert_close(ours, llama)
    torch.testing.assert_close(grad_ours, grad_llama)


def test_attention_path_benchmark_switches_every_layer_and_restores_it(capsys):
    bench = load("attention_path")
    tiny = ["--d", "16", "--heads", "2", "--layers", "2", "--ffn", "32", "--vocab", "32", "--shapes", "2x8",
            "--blocks", "2", "--per-block", "1", "--threads", "1", "--models", "nlpattn-clm"]
    assert bench.main(tiny) == 0
    rows = [line.split(" | ")[:3] for line in capsys.readouterr().out.splitlines()[3:]]
    assert rows == [["| nlpattn-clm", "2x8", "train"], ["| nlpattn-clm", "2x8", "inference"]]
    args = bench.argparse.Namespace(d=16, heads=2, layers=2, ffn=32, vocab=32, seq=8, batch=2, dropout=0.0,
                                    dtype="fp32")
    model, _ = bench.model_step("nlpattn-clm", args, train=True)
    layers = [m for m in model.modules() if isinstance(m, bench.MultiHeadAttention)]
    before = [(m.use_sdpa, m.auto) for m in layers]
    ids = torch.randint(0, 32, (2, 8))
    outs = {}
    for path in bench.PATHS:
        with bench.attention_path(model, path):
            assert all(m.use_sdpa == (path == "sdpa") and not m.auto for m in layers)
            outs[path] = model(input_ids=ids).logits
    assert [(m.use_sdpa, m.auto) for m in layers] == before and len(layers) == 2
    torch.testing.assert_close(outs["sdpa"], outs["math"], atol=1e-5, rtol=1e-5)  # the same function

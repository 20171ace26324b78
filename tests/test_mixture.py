"""data.train_weights: pretraining on a mix of sources, each sampled at its weight."""
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nlpattn.config import Config, DataConfig, TokenizerConfig, load_config
from nlpattn.data.blocks import BlockLoader, RandomBlocks
from nlpattn.data.collate import MLMCollator
from nlpattn.data.corpus import build_corpus
from nlpattn.errors import ConfigError
from nlpattn.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
LETTERS = "abc"


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TokenizerConfig(kind="char", vocab_size=60), texts=["abc xyz"] * 10)


def write_sources(root: Path, sizes=(2000, 20000, 1000)) -> list[str]:
    """Source a (a glob over two files), b and c: lines of one letter, so a window names its source."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a").mkdir(exist_ok=True)
    for k, (letter, n) in enumerate(zip(LETTERS, sizes)):
        line = letter * 49 + "\n"
        parts = [root / "a" / "a1.txt", root / "a" / "a2.txt"] if letter == "a" else [root / f"{letter}.txt"]
        for part in parts:
            part.write_text(line * (n // 50 // len(parts)))
    return [str(root / "a" / "*.txt"), str(root / "b.txt"), str(root / "c.txt")]


def corpus(tmp_path, tok, weights, **data):
    files = write_sources(tmp_path / "src")
    cfg = Config(output_dir=str(tmp_path / "run"),
                 data=DataConfig(train_files=files, train_weights=weights, **data))
    return build_corpus(cfg, tok)


def source_of(window: torch.Tensor, tok, strict: bool = True) -> str:
    text = tok.decode(window.tolist()).replace("\n", "").replace(" ", "")
    assert len(set(text)) == 1 or not strict, f"a window crosses sources: {set(text)}"
    return text[0]


def shares(ds: RandomBlocks, tok, n: int, strict: bool = True) -> dict[str, float]:
    counts = dict.fromkeys(LETTERS, 0)
    for i in range(n):
        counts[source_of(ds[i], tok, strict)] += 1
    return {k: v / n for k, v in counts.items()}


def test_blocks_follow_the_weights_not_the_sizes(tmp_path, tok):
    n = 3000
    train, _ = corpus(tmp_path / "w", tok, [0.5, 0.2, 0.3])
    got = shares(RandomBlocks(train, 32, seed=1), tok, n)
    for letter, w in zip(LETTERS, (0.5, 0.2, 0.3)):
        sigma = math.sqrt(w * (1 - w) / n)
        assert abs(got[letter] - w) < 4 * sigma, (letter, got)
    sizes, _ = corpus(tmp_path / "s", tok, [])  # no weights: proportional to size (b is ~87%)
    assert sizes.mixture is None and shares(RandomBlocks(sizes, 32, seed=1), tok, 500, False)["b"] > 0.8


def test_zero_weight_drops_a_source_and_positions_are_deterministic(tmp_path, tok):
    train, _ = corpus(tmp_path, tok, [1, 0, 3])
    ds = RandomBlocks(train, 32, seed=5)
    got = shares(ds, tok, 800)
    assert got["b"] == 0 and abs(got["a"] - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 800)
    assert [ds.position(i) for i in range(50)] == [RandomBlocks(train, 32, seed=5).position(i) for i in range(50)]
    assert [ds.position(i) for i in range(50)] != [RandomBlocks(train, 32, seed=6).position(i) for i in range(50)]


def test_weighted_loader_resumes_exactly(tmp_path, tok):
    train, _ = corpus(tmp_path, tok, [0.5, 0.2, 0.3])
    collate = MLMCollator(tok)
    loader = BlockLoader(RandomBlocks(train, 32, seed=2), 4, collate, seed=9)
    for _ in range(3):
        next(loader)
    state = json.loads(json.dumps(loader.state_dict()))
    want = [next(loader) for _ in range(2)]
    resumed = BlockLoader(RandomBlocks(train, 32, seed=0), 4, collate, seed=0)
    resumed.load_state_dict(state)
    for batch in want:
        got = next(resumed)
        assert all(torch.equal(got[k], batch[k]) for k in ("input_ids", "labels"))


def test_valid_fraction_is_never_sampled_for_training(tmp_path, tok):
    train, valid = corpus(tmp_path, tok, [0.5, 0.2, 0.3], valid_fraction=0.02)
    assert len(valid) > 0
    ds = RandomBlocks(train, 32, seed=3)
    assert max(ds.position(i) + 32 for i in range(4000)) <= len(train)
    c_ranges = train.mixture[2][1]
    assert c_ranges[-1][1] == len(train)  # c, the last source, lost its tail to validation


@pytest.mark.parametrize("weights,message", [
    ("[1,2]", r"'data.train_weights' has 2 weights for 3 data.train_files entries"),
    ("[1,-1,2]", r"'data.train_weights' must be finite numbers >= 0, got -1"),
    ("[0,0,0]", r"'data.train_weights' are all zero"),
])
def test_bad_weights_one_line_exit_2_nothing_written(tmp_path, weights, message):
    files = write_sources(tmp_path / "src")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "nlpattn", "pretrain", "--config", str(REPO / "configs/pretrain/mlm-small.yaml"),
                           f"output_dir={out}", f"data.train_files=[{','.join(files)}]", f"data.train_weights={weights}"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert __import__("re").search(message, done.stderr) and not out.exists()


def test_mlm_corpus_recipe_loads_and_a_missing_corpus_names_the_path(tmp_path):
    cfg = load_config(str(REPO / "configs/pretrain/mlm-corpus.yaml"))
    assert len(cfg.data.train_weights) == len(cfg.data.train_files) == 3
    assert (cfg.model.norm, cfg.model.dropout, cfg.model.bias, cfg.data.block_size) == ("pre", 0.0, False, 128)
    assert cfg.data.mlm_probability == 0.25 and cfg.model.position == "rope" and cfg.train.schedule == "linear"
    assert cfg.data.cls_sep and cfg.model.pooling == "mean"  # windows framed [CLS] ... [SEP]; classifiers read the mean
    assert (cfg.tokenizer.kind, cfg.tokenizer.vocab_size, cfg.tokenizer.lowercase) == ("wordpiece", 16384, True)
    assert cfg.train.max_minutes <= 58  # + ~2 minutes of tokenizer and token cache: the 60-minute budget
    assert cfg.train.decay_over == "minutes"  # the decay ends with the budget on any host
    nowhere = tmp_path / "no-corpus"
    files = [f.replace("../shared/data/corpus", str(nowhere)) for f in cfg.data.train_files]
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "nlpattn", "pretrain", "--config", str(REPO / "configs/pretrain/mlm-corpus.yaml"),
                           f"output_dir={out}", f"data.train_files=[{','.join(files)}]"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(nowhere / "wikipedia") in done.stderr and not out.exists()


def run_corpus_recipe_shrunk(config: str, out, steps: int) -> None:
    """`nlpattn pretrain --config configs/pretrain/CONFIG.yaml` on three bundled sources instead of
    the corpus, with a tiny model, for `steps` steps (checkpoint and evaluation every 2)."""
    from nlpattn.cli import main

    wiki = REPO / "data/wikitext-2"
    files = [str(wiki / "valid.txt.gz"), str(wiki / "test.txt.gz"), str(REPO / "data/tinyshakespeare/input.txt.gz")]
    assert main(["pretrain", "--config", str(REPO / f"configs/pretrain/{config}.yaml"), f"output_dir={out}",
                 f"data.train_files=[{','.join(files)}]", "tokenizer.vocab_size=500", "model.d_model=32",
                 "model.n_layers=1", "model.n_heads=2", "model.d_ff=64", f"train.max_steps={steps}",
                 "train.save_every=2", "train.eval_every=2", "train.eval_batches=1", "train.final_eval_batches=1",
                 "train.num_threads=1", "train.progress=false"]) == 0


def test_mlm_corpus_recipe_runs_shrunk(tmp_path):
    """The README's `nlpattn pretrain --config configs/pretrain/mlm-corpus.yaml`, on three bundled
    sources instead of the corpus and a tiny model; its summary counts the setup seconds."""
    import json

    out = tmp_path / "run"
    run_corpus_recipe_shrunk("mlm-corpus", out, steps=4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and set(summary["setup_s"]) == {"tokenizer", "cache"}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    # the recipe's pooling reaches a classifier fine-tuned from the run and the curve's scratch model
    from nlpattn.train.curve import scratch_overrides
    from nlpattn.train.finetune import classifier_from, load_source

    for source in (out, out / "checkpoints" / "step-0000002"):
        assert classifier_from(load_source(str(source))[1], num_labels=2).head.pooling == "mean"
    assert classifier_from(load_source(str(out))[1], num_labels=2, pooling="cls").head.pooling == "cls"
    assert "model.pooling=mean" in scratch_overrides(out)


def test_weighted_pretrain_resumes_bit_for_bit(tmp_path):
    import shutil

    from test_train_utils import events, run_cli, tiny_overrides

    files = write_sources(tmp_path / "src")
    mix = [f"data.train_files=[{','.join(files)}]", "data.train_weights=[0.5,0.2,0.3]"]
    args = lambda out: ["pretrain", *tiny_overrides(tmp_path / "data", out, objective="mlm", max_steps=8,
                                                    save_every=4, keep_last=2, eval_every=100), *mix]
    ref = run_cli(args(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    shutil.copytree(tmp_path / "ref", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-0000008")
    (tmp_path / "cut" / "summary.json").unlink()
    again = run_cli(args(tmp_path / "cut"))
    assert again.returncode == 0 and "resumed from" in again.stderr, again.stderr
    want, got = events(tmp_path / "ref"), events(tmp_path / "cut")
    assert [e["step"] for e in got] == [e["step"] for e in want] and got[-1]["step"] == 8
    assert [e["loss"] for e in got] == [e["loss"] for e in want]

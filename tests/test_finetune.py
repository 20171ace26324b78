"""GLUE fine-tuning: epoch batches, initialising from runs, outputs, bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nlpattn.config import ModelConfig, load_config
from nlpattn.data.epochs import EpochBatches
from nlpattn.models import build_model, save_model
from nlpattn.train.finetune import classifier_from, run_finetune

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64",
        "tokenizer.kind=char", "train.progress=false", "train.batch_size=16", f"glue.data_dir={REPO / 'data/glue'}",
        "train.precision=fp32",  # in-process runs share one Accelerate precision; numerics in fp32
        f"data.train_files=[{REPO / 'data/tinyshakespeare/input.txt.gz'}]"]


def examples(n=103, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": list(range(int(torch.randint(2, 30, (1,), generator=g)))), "label": i % 2}
            for i in range(n)]


def identity(batch):
    return batch


def test_epoch_batches_cover_each_example_once_and_group_lengths():
    data = examples()
    batches = EpochBatches(data, 10, identity, seed=1, group=5)
    seen = [id(e) for _ in range(batches.batches_per_epoch) for e in next(batches)]
    assert len(seen) == len(set(seen)) == 100  # 103 // 10 batches; the partial one dropped
    spread = [max(map(len, (e["input_ids"] for e in b))) - min(len(e["input_ids"]) for e in b)
              for b in (next(batches) for _ in range(10))]
    assert sum(spread) / len(spread) < 8  # random batches of lengths 2..29 would spread ~22
    assert batches.epoch == pytest.approx(2.0)


def test_epoch_batches_without_grouping_mix_lengths():
    ungrouped = EpochBatches(examples(), 10, identity, seed=1, group=1)  # train.group_by_length=false
    spread = [max(len(e["input_ids"]) for e in b) - min(len(e["input_ids"]) for e in b)
              for b in (next(ungrouped) for _ in range(10))]
    assert sum(spread) / len(spread) > 15


def test_epoch_batches_resume_and_shard():
    data = examples()
    a = EpochBatches(data, 8, identity, seed=3)
    for _ in range(17):
        next(a)
    b = EpochBatches(data, 8, identity, seed=0)
    b.load_state_dict(a.state_dict())
    assert next(a) == next(b)
    one = EpochBatches(data, 8, identity, seed=5)
    two = [EpochBatches(data, 4, identity, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        assert next(one) == next(two[0]) + next(two[1])


@pytest.mark.parametrize("task,arch,pooling", [("mlm", "encoder", "cls"), ("clm", "decoder", "last"),
                                               ("seq2seq", "encoder-decoder", "cls")])
def test_classifier_takes_the_pretrained_trunk(task, arch, pooling):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, vocab_size=40, d_model=16, n_heads=2, d_ff=32, n_layers=1, max_len=32)
    source = build_model(cfg, task)
    clf = classifier_from(source, num_labels=3)
    trunk = source.encoder if task == "seq2seq" else source.body
    for (name, p), (_, q) in zip(trunk.named_parameters(), clf.body.named_parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(clf.embeddings.token.weight, source.embeddings.token.weight)
    assert clf.head.pooling == pooling and clf.num_labels == 3


def test_pooling_override_with_init_is_used_and_saved(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=16, n_heads=2, d_ff=32, n_layers=1, max_len=32)
    clf = classifier_from(build_model(cfg, "mlm"), num_labels=2, pooling="mean").eval()
    ids = torch.randint(5, 40, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    hidden = clf(ids, attention_mask=mask).hidden
    expected = torch.stack([hidden[0].mean(0), hidden[1, :4].mean(0)])
    assert torch.allclose(clf.head.pool(hidden, mask.bool()), expected, atol=1e-6)
    save_model(clf, tmp_path)
    from nlpattn.models import load_model

    assert load_model(tmp_path).head.pooling == "mean"


def test_dropout_override_with_init_sets_every_dropout():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=16, n_heads=2, d_ff=32, n_layers=1, max_len=32, dropout=0.0)
    source = build_model(cfg, "mlm")
    kept = classifier_from(source, num_labels=2)
    assert kept.cfg.dropout == 0.0
    assert all(m.p == 0.0 for m in kept.modules() if isinstance(m, torch.nn.Dropout))
    clf = classifier_from(source, num_labels=2, dropout=0.1)
    assert clf.cfg.dropout == 0.1 and clf.cfg.attention_dropout is None
    rates = [m.p for m in clf.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates and all(p == 0.1 for p in rates)
    assert clf.body.layers[0].self_attn.dropout == 0.1  # attention's own rate
    ids = torch.randint(5, 40, (2, 7))
    clf.train()
    assert not torch.equal(clf(ids).logits, clf(ids).logits)  # dropout is live in training


def test_bad_glue_dropout_or_padding_names_the_key():
    from nlpattn.errors import ConfigError

    with pytest.raises(ConfigError, match="glue.dropout"):
        load_config(str(REPO / "configs/finetune/sst2.yaml"), ["glue.dropout=1.5"])
    with pytest.raises(ConfigError, match="glue.padding"):
        load_config(str(REPO / "configs/finetune/sst2.yaml"), ["glue.padding=max"])


def test_bad_pooling_names_the_key():
    from nlpattn.errors import ConfigError

    with pytest.raises(ConfigError, match="model.pooling"):
        load_config(str(REPO / "configs/finetune/sst2.yaml"), ["model.pooling=max"])


def _glue_dir_with_test(tmp_path):
    src = REPO / "data/glue/WNLI"
    dst = tmp_path / "glue" / "WNLI"
    dst.mkdir(parents=True)
    import gzip

    for split in ("train", "dev"):
        (dst / f"{split}.tsv").write_bytes(gzip.decompress((src / f"{split}.tsv.gz").read_bytes()))
    dev = (dst / "dev.tsv").read_text().splitlines()
    test = ["\t".join(line.split("\t")[:3]) for line in dev[:21]]  # test files have no label
    (dst / "test.tsv").write_text("\n".join(test) + "\n")
    return tmp_path / "glue"


def test_finetune_from_scratch_writes_eval_and_predictions(tmp_path):
    glue = _glue_dir_with_test(tmp_path)
    cfg = load_config(REPO / "configs/finetune/glue.yaml",
                      [*TINY, "task=wnli", f"output_dir={tmp_path / 'run'}", f"glue.data_dir={glue}",
                       "train.epochs=0.3"])
    report = run_finetune(cfg)
    run = tmp_path / "run"
    saved = json.loads((run / "eval/wnli.json").read_text())
    assert saved["metrics"]["wnli"]["accuracy"] == report["metrics"]["wnli"]["accuracy"]
    dev = (run / "predictions/wnli-dev.tsv").read_text().splitlines()
    assert dev[0] == "index\tprediction\tlabel" and len(dev) == 72
    gold = [line.split("\t")[2] for line in dev[1:]]
    pred = [line.split("\t")[1] for line in dev[1:]]
    accuracy = sum(p == g for p, g in zip(pred, gold)) / len(gold)
    assert accuracy == pytest.approx(saved["metrics"]["wnli"]["accuracy"])
    test = (run / "predictions/wnli.tsv").read_text().splitlines()
    assert test[0] == "index\tprediction" and len(test) == 21 and {t.split("\t")[1] for t in test[1:]} <= {"0", "1"}
    assert (run / "model.safetensors").is_file() and (run / "tokenizer.json").is_file()


def test_finetune_honours_num_threads(tmp_path, monkeypatch):
    """train.num_threads applies to fine-tuning as it does to pretraining."""
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    cfg = load_config(REPO / "configs/finetune/glue.yaml",
                      [*TINY, "task=wnli", f"output_dir={tmp_path / 'run'}", "train.epochs=0.05",
                       "train.num_threads=1"])
    run_finetune(cfg)
    assert calls and calls[0] == 1


def test_finetune_from_pretrained_run_and_transformers_dir(tmp_path):
    from nlpattn.tokenizer import load_tokenizer

    first = tmp_path / "first"
    run_finetune(load_config(REPO / "configs/finetune/glue.yaml",
                             [*TINY, "task=wnli", f"output_dir={first}", "train.epochs=0.1"]))
    # Our run directory as a starting point: a classifier run counts too (its trunk is reused).
    report = run_finetune(load_config(REPO / "configs/finetune/stsb.yaml",
                                      [*TINY, f"init={first}", f"output_dir={tmp_path / 'b'}", "train.epochs=0.05"]))
    assert set(report["metrics"]["stsb"]) == {"pearson", "spearmanr"}
    # A transformers BERT directory (saved offline) with our tokenizer beside it.
    import transformers

    tok = load_tokenizer(first)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=160))
    hf.save_pretrained(tmp_path / "bert")
    tok.save(tmp_path / "bert")
    report = run_finetune(load_config(REPO / "configs/finetune/glue.yaml",
                                      [*TINY, "task=wnli", f"init={tmp_path / 'bert'}",
                                       f"output_dir={tmp_path / 'c'}", "train.epochs=0.1"]))
    assert 0.0 <= report["metrics"]["wnli"]["accuracy"] <= 1.0


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "nlpattn", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("extra,pattern", [
    (["task=sst3"], r"unknown GLUE task 'sst3' \(valid: cola, sst2"),
    (["task=wnli", "init=/nonexistent/run"], r"init: /nonexistent/run does not exist"),
    (["task=wnli", "init={tmp}"], r"init: .* has no model.json \+ model.safetensors"),
    (["task=ax"], r"task: 'ax' is test-only"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, extra, pattern):
    import re

    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    out = _cli("finetune", "--config", "configs/finetune/glue.yaml", *TINY, *extra, f"output_dir={tmp_path / 'x'}")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), out.stderr
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_bad_label_in_tsv_names_file_and_line(tmp_path):
    glue = _glue_dir_with_test(tmp_path)
    train = glue / "WNLI" / "train.tsv"
    lines = train.read_text().splitlines()
    lines[5] = "\t".join(lines[5].split("\t")[:3] + ["maybe"])
    train.write_text("\n".join(lines) + "\n")
    out = _cli("finetune", "--config", "configs/finetune/glue.yaml", *TINY, "task=wnli", f"glue.data_dir={glue}",
               f"output_dir={tmp_path / 'x'}")
    assert out.returncode == 2 and "train.tsv:6" in out.stderr and "maybe" in out.stderr, out.stderr


def test_init_with_other_tokenizer_is_refused(tmp_path):
    from nlpattn.errors import ConfigError
    from nlpattn.tokenizer import load_tokenizer

    run = tmp_path / "run"
    tok_cfg = load_config(None, ["tokenizer.kind=char"]).tokenizer
    from nlpattn.tokenizer import train_tokenizer

    tok = train_tokenizer(tok_cfg, [str(REPO / "data/tinyshakespeare/input.txt.gz")])
    tok.save(run)
    save_model(build_model(ModelConfig(vocab_size=tok.vocab_size, d_model=16, n_heads=2, d_ff=32, n_layers=1)), run)
    other = train_tokenizer(load_config(None, ["tokenizer.kind=wordpiece", "tokenizer.vocab_size=300"]).tokenizer,
                            [str(REPO / "data/wikitext-2/test.txt.gz")])
    other.save(tmp_path / "other")
    assert load_tokenizer(run).hash() != other.hash()
    cfg = load_config(REPO / "configs/finetune/glue.yaml",
                      [*TINY, "task=wnli", f"init={run}", f"tokenizer.path={tmp_path / 'other'}",
                       f"output_dir={tmp_path / 'x'}"])
    with pytest.raises(ConfigError, match="tokenizer.path: .* differs from the tokenizer of init"):
        run_finetune(cfg)

"""The explorer on tiny run directories (random weights): every kind of input, every output
format, and the bad inputs (one line naming the setting, exit 2, nothing written)."""
import gzip
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from nlpattn.attention_stats import entropy, rollout
from nlpattn.cli import main
from nlpattn.config import ModelConfig, TokenizerConfig
from nlpattn.explorer import explorer_data, render_page
from nlpattn.models import build_model, save_model
from nlpattn.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
TEXT = "The cat sat on the mat, and the dog slept."


@pytest.fixture(scope="module")
def tok():
    lines = gzip.decompress((REPO / "data/wikitext-2/valid.txt.gz").read_bytes()).decode().splitlines()[:300]
    return train_tokenizer(TokenizerConfig(kind="wordpiece", vocab_size=400, n_sentinels=4), texts=lines)


@pytest.fixture(scope="module")
def make_run(tok, tmp_path_factory):
    """A run directory (model.json + weights + tokenizer + config.yaml) of a random model."""
    def make(task="mlm", task_name=None, **changes):
        torch.manual_seed(0)
        fields = dict(vocab_size=tok.vocab_size, d_model=16, n_heads=2, d_ff=32, n_layers=2, max_len=24,
                      dropout=0.0)
        cfg = ModelConfig(**{**fields, **changes})
        run = tmp_path_factory.mktemp(task)
        model = build_model(cfg, task, num_labels=2 if task == "classification" else None, init_std=0.3)
        save_model(model, run)  # init_std=0.3: peaked attention, so mix-ups show
        tok.save(run)
        (run / "config.yaml").write_text(yaml.safe_dump({"task": task_name, "output_dir": str(run)}))
        return run
    return make


def weights(section, layer):
    return torch.tensor(section["layers"][layer])


def test_classifier_prediction_cls_row_and_stats(make_run, tok):
    run = make_run("classification", task_name="sst2")
    data = explorer_data(run, text=TEXT)
    from nlpattn.models import load_model

    model = load_model(run).eval()
    ids = torch.tensor([tok.encode_pair(TEXT)[0]])
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    probs = torch.softmax(out.logits[0], -1)
    pred = data["prediction"]
    assert pred["label"] == ("negative", "positive")[int(probs.argmax())]
    assert pred["probability"] == pytest.approx(float(probs.max()), abs=1e-4)
    (sec,) = data["sections"]
    assert data["highlight"] == 0 and sec["queries"][0] == "[CLS]" and sec["queries"][-1] == "[SEP]"
    for layer in range(2):
        torch.testing.assert_close(weights(sec, layer), out.attentions[layer][0], atol=1e-4, rtol=0)
    assert len(sec["stats"]) == 2 * 2
    assert sec["stats"][3]["entropy"] == pytest.approx(float(entropy(out.attentions[1][0, 1])), abs=1e-5)
    roll = rollout([a[0] for a in out.attentions])
    torch.testing.assert_close(torch.tensor(sec["overall"]), roll[0], atol=1e-4, rtol=0)
    assert sec["overall_from"] == "[CLS] row" and set(sec["groups"]) >= {"cls", "sep", "punct"}


def test_pair_marks_segments_and_uses_them(make_run, tok):
    run = make_run("mlm", type_vocab_size=2)
    data = explorer_data(run, text="the cat sat", text_pair="on the mat")
    (sec,) = data["sections"]
    ids, types = tok.encode_pair("the cat sat", "on the mat")
    assert sec["query_segments"] == types and 0 in types and 1 in types
    assert sec["queries"].count("[SEP]") == 2
    from nlpattn.models import load_model

    model = load_model(run).eval()
    with torch.no_grad():
        plain = model(torch.tensor([ids]), output_attentions=True).attentions[0][0]
        typed = model(torch.tensor([ids]), token_type_ids=torch.tensor([types]), output_attentions=True)
    torch.testing.assert_close(weights(sec, 0), typed.attentions[0][0], atol=1e-4, rtol=0)
    assert not torch.allclose(weights(sec, 0), plain, atol=1e-2)  # segment embeddings were used


def test_seq2seq_has_cross_attention_over_the_source(make_run, tok):
    run = make_run("seq2seq", arch="encoder-decoder", n_decoder_layers=3)
    data = explorer_data(run, source="the cat sat on the mat", target="a dog")
    enc, dec, cross = data["sections"]
    assert [s["id"] for s in data["sections"]] == ["encoder", "decoder", "cross"]
    assert enc["queries"][-1] == "[EOS]" and dec["queries"][0] == "[BOS]"
    assert cross["queries"] == dec["queries"] and cross["keys"] == enc["keys"]
    assert len(cross["layers"]) == 3 and weights(cross, 2).shape == (2, len(dec["queries"]), len(enc["keys"]))
    assert cross["rollout"] is None and "distance" not in cross["stats"][0]
    assert weights(dec, 0).triu(1).abs().max() == 0  # the decoder never looks ahead
    torch.testing.assert_close(weights(cross, 1).sum(-1), torch.ones(2, len(dec["queries"])), atol=1e-3, rtol=0)


def test_causal_lm_reads_plain_text(make_run, tok):
    data = explorer_data(make_run("clm", arch="decoder"), text=TEXT)
    (sec,) = data["sections"]
    assert "[CLS]" not in sec["queries"] and sec["causal"] and data["prediction"] is None
    assert weights(sec, 1).triu(1).abs().max() == 0


def test_outputs_html_json_png(make_run, tmp_path):
    run = make_run("classification", task_name="sst2")
    for name in ("x.html", "x.json", "x.png"):
        assert main(["attention-map", "--run", str(run), f"text={TEXT}", f"out={tmp_path / name}"]) == 0
    page = (tmp_path / "x.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page and "<link" not in page
    data = json.loads((tmp_path / "x.json").read_text())
    assert len(data["sections"][0]["layers"]) == 2 and data["sections"][0]["stats"]
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.html", "x.json", "x.png"]


def test_page_inlines_the_data_safely():
    data = {"title": "a </script> b", "sections": [], "tokens": ["</script><b>"]}
    page = render_page(data)
    inlined = page.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    assert json.loads(inlined) == data
    assert "<title>a &lt;/script&gt; b</title>" in page


def _fails(capsys, tmp_path, *args):
    rc = main(["attention-map", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing (not even a temporary file) was written
    return err


def test_bad_inputs(make_run, capsys, tmp_path):
    out = f"out={tmp_path / 'a.html'}"
    rnn = make_run("mlm", body="lstm")
    assert "model.body" in _fails(capsys, tmp_path, "--run", str(rnn), "text=hello", out)
    mlm = make_run("mlm")
    long_text = " ".join(["word"] * 40)
    err = _fails(capsys, tmp_path, "--run", str(mlm), f"text={long_text}", out)
    assert err.count("text:") == 1 and "max_len=24" in err and "truncate=true" in err
    assert "text_pair" in _fails(capsys, tmp_path, "--run", str(mlm), "text=a b", "text_pair=c d", out)
    assert "out:" in _fails(capsys, tmp_path, "--run", str(mlm), "text=a b", f"out={tmp_path / 'a.txt'}")
    assert "unknown key 'txt'" in _fails(capsys, tmp_path, "--run", str(mlm), "txt=a", out)
    assert "truncate:" in _fails(capsys, tmp_path, "--run", str(mlm), "text=a", "truncate=maybe", out)
    s2s = make_run("seq2seq", arch="encoder-decoder")
    assert "target" in _fails(capsys, tmp_path, "--run", str(s2s), "source=a b", out)
    assert "text_pair" in _fails(capsys, tmp_path, "--run", str(s2s), "source=a", "target=b", "text_pair=c", out)
    assert "source/target" in _fails(capsys, tmp_path, "--run", str(mlm), "source=a", "target=b", out)


def test_truncate_true_keeps_max_len_tokens(make_run, tmp_path):
    run = make_run("mlm")
    data = explorer_data(run, text=" ".join(["word"] * 40), truncate=True)
    assert len(data["sections"][0]["queries"]) == 24 and "truncated" in data["notes"][0]
    assert math.isclose(sum(data["sections"][0]["layers"][0][0][0]), 1.0, abs_tol=1e-3)


def test_cnn_run_shows_its_gates(make_run, tok, capsys, tmp_path):
    import dataclasses

    if "spatial" not in {f.name for f in dataclasses.fields(ModelConfig)}:
        pytest.skip("this checkout's CNN body has no spatial gate (model.spatial)")
    run = make_run("mlm", body="cnn", se=True, spatial=True)
    data = explorer_data(run, text=TEXT)
    spatial, channel = data["sections"]
    assert (spatial["id"], channel["id"]) == ("spatial", "channel")
    from nlpattn.models import load_model

    model = load_model(run).eval()
    with torch.no_grad():
        out = model(torch.tensor([tok.encode_pair(TEXT)[0]]), output_attentions=True)
    expected = torch.stack([g.spatial[0] for g in out.gates])  # (L, T)
    torch.testing.assert_close(weights(spatial, 0)[0], expected, atol=1e-4, rtol=0)
    assert spatial["keys"][0] == "[CLS]" and spatial["queries"] == ["layer 1", "layer 2"]
    assert weights(channel, 0).shape == (1, 2, 16) and 0 < weights(channel, 0).min() <= weights(channel, 0).max() < 1
    plain = make_run("mlm", body="cnn")
    err = _fails(capsys, tmp_path, "--run", str(plain), "text=a b", f"out={tmp_path / 'a.html'}")
    assert "model.body" in err and "model.se" in err

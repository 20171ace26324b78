"""The README's commands end to end on one tiny pretrained run: `nlpattn export-hf` (loaded by
transformers, same logits), `nlpattn attention-map` (the model's weights in the file), the run's
tokenizer through `transformers.PreTrainedTokenizerFast`."""
import gzip
import json

import pytest
import torch
import transformers

from nlpattn.cli import main
from nlpattn.config import load_config
from nlpattn.models import load_model
from nlpattn.tokenizer import load_tokenizer, train_tokenizer
from test_train_utils import REPO, tiny_overrides

TEXTS = ["To be, or not to be: that is the question.", "O Romeo, Romeo! wherefore art thou Romeo?"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-step BERT-layout MLM run with a WordPiece tokenizer, made by `nlpattn pretrain`."""
    tmp = tmp_path_factory.mktemp("e2e")
    args = [a for a in tiny_overrides(tmp / "data", tmp / "run", objective="mlm", max_steps=3, eval_every=1000,
                                      final_eval_batches=1) if not a.startswith("tokenizer.")]
    args += ["tokenizer.kind=wordpiece", "tokenizer.vocab_size=300", "model.norm=post", "model.type_vocab_size=2",
             "train.precision=fp32"]  # one precision per process (Accelerate), as the other in-process runs
    assert main(["pretrain", *args]) == 0
    return tmp / "run"


def test_export_hf_command_gives_a_transformers_model_with_our_logits(run, tmp_path, capsys):
    assert main(["export-hf", "--run", str(run), "--out", str(tmp_path / "hf")]) == 0
    assert "wrote transformers model" in capsys.readouterr().out
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path / "hf")
    ours, tok = load_model(run).eval(), load_tokenizer(run)
    batch = hf_tok(TEXTS, padding=True, return_tensors="pt")
    assert batch["input_ids"][0].tolist()[:len(tok.encode(TEXTS[0])) + 2] == tok.encode(TEXTS[0], True)
    with torch.no_grad():
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        mine = ours(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    keep = batch["attention_mask"].bool()
    diff, scale = (mine[keep] - theirs[keep]).abs().max().item(), theirs[keep].abs().max().item()
    assert diff <= 1e-5 * scale, (diff, scale)
    assert main(["export-hf", "--run", str(run), "--out", str(tmp_path / "hf")]) == 2  # no silent overwrite
    assert main(["export-hf", "--run", str(run), "--out", str(tmp_path / "hf"), "--force"]) == 0


def test_attention_map_command_writes_the_models_weights(run, tmp_path):
    out = tmp_path / "a.json"
    assert main(["attention-map", "--run", str(run), f"text={TEXTS[0]}", f"out={out}"]) == 0
    (section, *_) = json.loads(out.read_text())["sections"]
    tok, model = load_tokenizer(run), load_model(run).eval()
    ids = torch.tensor([tok.encode(TEXTS[0], True)])
    with torch.no_grad():
        direct = torch.stack([a[0] for a in model(ids, output_attentions=True).attentions])  # (L, H, T, T)
    drawn = torch.tensor(section["layers"])
    assert drawn.shape == direct.shape == (2, 4, ids.shape[1], ids.shape[1])
    torch.testing.assert_close(drawn, direct, atol=1e-4, rtol=0)  # the file keeps 4 decimals at most
    page = tmp_path / "a.html"
    assert main(["attention-map", "--run", str(run), f"text={TEXTS[0]}", f"out={page}"]) == 0
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lstrip().lower().startswith("<!doctype html>")
    assert "question" in html and "<script src=" not in html  # self-contained
    assert main(["attention-map", "--run", str(run), "text=x", f"out={tmp_path / 'a.txt'}"]) == 2


def test_run_tokenizer_loads_in_transformers_with_the_same_ids(run):
    tok = load_tokenizer(run)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(run)
    for text in TEXTS:
        assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
        assert hf(text)["input_ids"] == tok.encode(text, add_special_tokens=True)  # [CLS] … [SEP]
    pair = hf(*TEXTS, return_token_type_ids=True)
    assert (pair["input_ids"], pair["token_type_ids"]) == tuple(tok.encode_pair(*TEXTS))
    assert [hf.convert_tokens_to_ids(t) for t in (hf.pad_token, hf.unk_token, hf.cls_token, hf.sep_token,
                                                   hf.mask_token)] == [0, 1, 2, 3, 4]
    assert hf.decode(tok.encode(TEXTS[0])) == tok.decode(tok.encode(TEXTS[0]))


@pytest.mark.parametrize("kind", ["bpe", "unigram", "sentencepiece-unigram", "sentencepiece-bpe", "char"])
def test_every_tokenizer_kind_loads_in_transformers(kind, tmp_path):
    lines = gzip.decompress((REPO / "data/wikitext-2/valid.txt.gz").read_bytes()).decode().splitlines()[:400]
    tok = train_tokenizer(load_config(None, [f"tokenizer.kind={kind}", "tokenizer.vocab_size=400"]).tokenizer,
                          texts=lines)
    tok.save(tmp_path)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path)
    for text in [*TEXTS, lines[5]]:
        assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert hf.convert_tokens_to_ids(hf.mask_token) == tok.mask_id and hf.pad_token_id == tok.pad_id

"""Replaced-token detection (ELECTRA): the corruption, the discriminator and the generator against
transformers' ElectraForPreTraining / BertForMaskedLM, a run through the Trainer, fine-tuning from it."""
import json

import pytest
import torch

from nlpattn.config import ModelConfig, load_config
from nlpattn.errors import ConfigError
from nlpattn.models import MaskedLM, build_model, replace_masked
from test_train_utils import events, tiny_overrides

CFG = ModelConfig(vocab_size=60, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=32, dropout=0.0,
                  norm="post", type_vocab_size=2, generator_layers=1)


def masked_batch() -> dict:
    """Three rows (12, 9 and 5 real tokens) with a few positions masked as the MLM collator does."""
    g = torch.Generator().manual_seed(0)
    original = torch.randint(5, 60, (3, 12), generator=g)
    mask = (torch.arange(12)[None] < torch.tensor([[12], [9], [5]])).long()
    labels = torch.full_like(original, -100)
    for row, col in ((0, 1), (0, 7), (1, 0), (1, 4), (1, 8), (2, 2)):
        labels[row, col] = original[row, col]
    ids = torch.where(labels != -100, torch.full_like(original, 4), original)  # 4 plays [MASK]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "original": original}


def test_replace_masked_fills_masked_positions_in_row_major_order():
    ids = torch.tensor([[7, 4, 9], [4, 8, 4]])
    labels = torch.tensor([[-100, 3, -100], [5, -100, 6]])
    corrupted, replaced = replace_masked(ids, labels, torch.tensor([3, 2, 1]))
    # the originals are restored everywhere, then the samples go to (0,1), (1,0), (1,2) in that order
    assert corrupted.tolist() == [[7, 3, 9], [2, 8, 1]]
    assert replaced.tolist() == [[False, False, False], [True, False, True]]  # 3 == original: not replaced


def test_discriminator_matches_transformers_electra():
    """Our detector on the corrupted text = ElectraForPreTraining with our weights: logits and loss
    (BCE over real tokens, target 1 = replaced)."""
    from nlpattn.interop.hf import to_transformers

    torch.manual_seed(0)
    model = build_model(CFG, "electra").eval()
    batch = masked_batch()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    corrupted, replaced = out.parts["corrupted"], out.parts["replaced"]
    keep = batch["labels"] == -100
    assert torch.equal(corrupted[keep], batch["original"][keep])  # unmasked positions: the original text
    hf = to_transformers(model)
    assert type(hf).__name__ == "ElectraForPreTraining"
    ref = hf(input_ids=corrupted, attention_mask=batch["attention_mask"], labels=replaced.long())
    assert torch.allclose(out.logits, ref.logits, atol=1e-5)
    assert out.parts["detection_loss"].item() == pytest.approx(ref.loss.item(), abs=1e-6)
    assert out.loss.item() == pytest.approx(out.parts["mlm_loss"].item() + 50.0 * ref.loss.item(), rel=1e-6)
    plain = model(input_ids=corrupted, attention_mask=batch["attention_mask"])  # no labels: detect as given
    assert torch.allclose(plain.logits, ref.logits, atol=1e-5)


def test_generator_is_a_shallow_masked_lm_sharing_the_embeddings():
    """The generator's loss is BertForMaskedLM's with the generator's layers and head and the shared
    embeddings (through our MaskedLM, itself checked against BERT)."""
    from nlpattn.interop.hf import to_transformers
    from nlpattn.models import replace_config

    torch.manual_seed(0)
    model = build_model(CFG, "electra").eval()
    assert model.generator_head.decoder.weight is model.embeddings.token.weight
    assert len(model.generator.layers) == 1 and len(model.body.layers) == 2
    state = model.state_dict()
    mlm = MaskedLM(replace_config(CFG, n_layers=1))
    mlm.load_state_dict({**{k: v for k, v in state.items() if k.startswith("embeddings.")},
                         **{"body." + k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")},
                         **{"head." + k[len("generator_head."):]: v for k, v in state.items()
                            if k.startswith("generator_head.")}})
    batch = masked_batch()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    ref = to_transformers(mlm.eval())(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      labels=batch["labels"])
    assert out.parts["mlm_loss"].item() == pytest.approx(ref.loss.item(), abs=1e-5)


def test_masked_positions_get_the_generators_samples():
    """A generator sure of token 9 puts 9 at every masked position; replaced marks where 9 differs."""
    torch.manual_seed(0)
    model = build_model(CFG, "electra")
    with torch.no_grad():
        model.generator_head.bias[9] = 1e4
    batch = masked_batch()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    masked = batch["labels"] != -100
    assert (out.parts["corrupted"][masked] == 9).all()
    assert torch.equal(out.parts["replaced"], masked & (batch["original"] != 9))
    out.loss.backward()  # both parts train: the generator through its MLM loss, the detector through its own
    assert model.generator.layers[0].ffn.fc_in.weight.grad.abs().sum() > 0
    assert model.body.layers[1].ffn.fc_in.weight.grad.abs().sum() > 0


def test_electra_pretrains_then_finetunes_from_its_discriminator(tmp_path):
    from nlpattn.models import load_model
    from nlpattn.train.finetune import classifier_from, run_finetune
    from nlpattn.train.pretrain import run_pretrain
    from test_finetune import REPO, TINY

    run = tmp_path / "run"
    summary = run_pretrain(load_config(None, [*tiny_overrides(tmp_path / "data", run, objective="electra"),
                                              "model.generator_layers=1"]))
    assert summary["objective"] == "electra" and summary["flops_per_token"] > 0
    val = events(run, "val")
    assert val and all(0.0 <= e["detection_accuracy"] <= 1.0 and 0.0 < e["replaced"] < 1.0 for e in val)
    assert summary["final_val_detection_accuracy"] == pytest.approx(val[-1]["detection_accuracy"])
    assert json.loads((run / "model.json").read_text())["task"] == "electra"
    model = load_model(run)
    clf = classifier_from(model, num_labels=2)
    for name, value in clf.state_dict().items():
        if name.startswith(("embeddings.", "body.")):
            assert torch.equal(value, model.state_dict()[name]), name  # the discriminator's trunk
    report = run_finetune(load_config(REPO / "configs/finetune/glue.yaml",
                                      [*TINY, "task=wnli", f"init={run}", f"output_dir={tmp_path / 'ft'}",
                                       "train.epochs=0.05", "glue.max_length=32"]))  # the run's max_len
    assert 0.0 <= report["metrics"]["wnli"]["accuracy"] <= 1.0


def test_electra_evaluation_is_repeatable_and_leaves_training_randomness_alone(tmp_path):
    """The eval corrupts with a fixed seed on a forked RNG: two evaluations agree, and the global
    random stream is where it was."""
    from types import SimpleNamespace

    from nlpattn.data.blocks import SequentialBlocks
    from nlpattn.data.corpus import build_corpus
    from nlpattn.tokenizer import train_tokenizer
    from nlpattn.train.pretrain import lm_eval_fn, make_collator

    cfg = load_config(None, tiny_overrides(tmp_path / "data", tmp_path / "run", objective="electra"))
    tok = train_tokenizer(cfg.tokenizer, cfg.data.train_files)
    _, valid = build_corpus(cfg, tok)
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                                    max_len=32, dropout=0.0), "electra").eval()
    evaluate = lm_eval_fn("electra", SequentialBlocks(valid, 32), 4, make_collator(cfg, tok), 2)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    one_process = SimpleNamespace(device=torch.device("cpu"), num_processes=1, process_index=0,
                                  gather_for_metrics=lambda x: x)
    with torch.no_grad():
        first, second = evaluate(model, one_process), evaluate(model, one_process)
    assert first == second and torch.equal(torch.get_rng_state(), state)
    assert set(first) == {"loss", "ppl", "accuracy", "detection_loss", "detection_accuracy", "replaced"}


@pytest.mark.parametrize("overrides,message", [
    (["model.body=lstm", "model.bidirectional=false"], "objective=electra needs a bidirectional body"),
    (["model.generator_layers=0"], "model.generator_layers' must be >= 1"),
    (["model.detection_weight=0"], "model.detection_weight' must be a positive number"),
])
def test_electra_settings_are_checked(tmp_path, overrides, message):
    from nlpattn.train.pretrain import run_pretrain

    with pytest.raises(ConfigError, match=message):
        run_pretrain(load_config(None, [*tiny_overrides(tmp_path / "data", tmp_path / "run", objective="electra"),
                                        *overrides]))
    assert not (tmp_path / "run").exists()


def test_electra_corpus_recipe_is_mlm_corpus_with_detection_and_runs_shrunk(tmp_path):
    """configs/pretrain/electra-corpus.yaml: mlm-corpus.yaml's model, data and schedule with the
    ELECTRA objective; run on bundled text instead of the corpus, with a tiny model."""
    from test_mixture import run_corpus_recipe_shrunk
    from test_train_utils import REPO

    electra, mlm = (load_config(str(REPO / f"configs/pretrain/{name}.yaml"))
                    for name in ("electra-corpus", "mlm-corpus"))
    assert (electra.objective, electra.model.generator_layers, electra.data.mlm_probability) == ("electra", 1, 0.15)
    assert electra.model == mlm.model and electra.train == mlm.train  # the generator's keys are at their defaults
    assert (electra.data.train_files, electra.data.train_weights) == (mlm.data.train_files, mlm.data.train_weights)
    out = tmp_path / "run"
    run_corpus_recipe_shrunk("electra-corpus", out, steps=2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] == "electra" and summary["steps"] == 2 and "final_val_detection_accuracy" in summary

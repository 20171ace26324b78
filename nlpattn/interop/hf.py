"""Weights ⇄ transformers (BERT, GPT-2) and torch.nn.Transformer.

`from_transformers(hf_model)` converts BertForMaskedLM / BertForSequenceClassification /
GPT2LMHeadModel into our models; `to_transformers(model)` goes the other way where the
architecture matches (ReplacedTokenDetection → ElectraForPreTraining, the discriminator);
`from_torch_transformer(nn.Transformer)` fills a Seq2SeqLM's bodies.
transformers is imported only inside these functions.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from nlpattn.config import ModelConfig
from nlpattn.errors import CheckpointError, ConfigError, OutputError
from nlpattn.models import CausalLM, MaskedLM, ReplacedTokenDetection, Seq2SeqLM, SequenceClassifier, build_model

_HF_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_OUR_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def _act(name: str) -> str:
    if name not in _HF_ACT:
        raise ConfigError(f"activation '{name}' has no nlpattn equivalent ({', '.join(_HF_ACT)})")
    return _HF_ACT[name]


def bert_model_config(c) -> ModelConfig:
    """ModelConfig equivalent to a transformers BertConfig."""
    return ModelConfig(body="transformer", arch="encoder", vocab_size=c.vocab_size, d_model=c.hidden_size,
                       n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
                       d_ff=c.intermediate_size, max_len=c.max_position_embeddings,
                       dropout=c.hidden_dropout_prob, attention_dropout=c.attention_probs_dropout_prob,
                       norm="post", norm_eps=c.layer_norm_eps, position="learned",
                       type_vocab_size=c.type_vocab_size, activation=_act(c.hidden_act),
                       pad_token_id=c.pad_token_id or 0, tie_embeddings=True)


def gpt2_model_config(c) -> ModelConfig:
    """ModelConfig equivalent to a transformers GPT2Config."""
    return ModelConfig(body="transformer", arch="decoder", vocab_size=c.vocab_size, d_model=c.n_embd,
                       n_layers=c.n_layer, n_heads=c.n_head, d_ff=c.n_inner or 4 * c.n_embd,
                       max_len=c.n_positions, dropout=c.resid_pdrop, attention_dropout=c.attn_pdrop,
                       norm="pre", norm_eps=c.layer_norm_epsilon, position="learned",
                       activation=_act(c.activation_function), tie_embeddings=True)


# A conversion table row: (their name, our name, row slice of our tensor or None, transpose?).
# One table serves both directions, so import and export can never disagree.
Row = tuple[str, str, "slice | None", bool]


def _qkv_rows(their_prefix: str, our_name: str, d: int, names=("query", "key", "value")) -> list[Row]:
    rows = []
    for k, n in enumerate(names):
        for kind in ("weight", "bias"):
            rows.append((f"{their_prefix}{n}.{kind}", f"{our_name}.{kind}", slice(k * d, (k + 1) * d), False))
    return rows


def bert_table(cfg: ModelConfig, prefix: str = "bert.") -> list[Row]:
    """Rows mapping a BertModel (under `prefix`) onto our encoder trunk."""
    e = prefix + "embeddings."
    table: list[Row] = [(e + "word_embeddings.weight", "embeddings.token.weight", None, False),
                        (e + "position_embeddings.weight", "embeddings.position.weight", None, False),
                        (e + "token_type_embeddings.weight", "embeddings.token_type.weight", None, False)]
    table += _pairs(e + "LayerNorm.", "embeddings.norm.", ("weight", "bias"))
    for i in range(cfg.n_layers):
        h, o = f"{prefix}encoder.layer.{i}.", f"body.layers.{i}."
        table += _qkv_rows(h + "attention.self.", o + "self_attn.qkv_proj", cfg.d_model)
        for theirs, ours in (("attention.output.dense.", "self_attn.out_proj."),
                             ("attention.output.LayerNorm.", "norm_self."),
                             ("intermediate.dense.", "ffn.fc_in."), ("output.dense.", "ffn.fc_out."),
                             ("output.LayerNorm.", "norm_ffn.")):
            table += _pairs(h + theirs, o + ours, ("weight", "bias"))
    return table


def gpt2_table(cfg: ModelConfig) -> list[Row]:
    """Rows mapping GPT2LMHeadModel onto our CausalLM (Conv1D weights are transposed)."""
    table: list[Row] = [("transformer.wte.weight", "embeddings.token.weight", None, False),
                        ("transformer.wpe.weight", "embeddings.position.weight", None, False)]
    table += _pairs("transformer.ln_f.", "body.final_norm.", ("weight", "bias"))
    for i in range(cfg.n_layers):
        h, o = f"transformer.h.{i}.", f"body.layers.{i}."
        for theirs, ours in (("ln_1.", "norm_self."), ("ln_2.", "norm_ffn.")):
            table += _pairs(h + theirs, o + ours, ("weight", "bias"))
        for theirs, ours in (("attn.c_attn.", "self_attn.qkv_proj."), ("attn.c_proj.", "self_attn.out_proj."),
                             ("mlp.c_fc.", "ffn.fc_in."), ("mlp.c_proj.", "ffn.fc_out.")):
            table += [(h + theirs + "weight", o + ours + "weight", None, True),
                      (h + theirs + "bias", o + ours + "bias", None, False)]
    return table


def _pairs(theirs: str, ours: str, kinds: tuple[str, ...]) -> list[Row]:
    return [(theirs + k, ours + k, None, False) for k in kinds]


def mlm_head_table() -> list[Row]:
    """BertForMaskedLM's prediction head (the decoder weight is tied to the embedding)."""
    return (_pairs("cls.predictions.transform.dense.", "head.transform.0.", ("weight", "bias"))
            + _pairs("cls.predictions.transform.LayerNorm.", "head.transform.2.", ("weight", "bias"))
            + [("cls.predictions.bias", "head.bias", None, False)])


def detection_head_table() -> list[Row]:
    """ElectraForPreTraining's discriminator head."""
    return (_pairs("discriminator_predictions.dense.", "detector.dense.", ("weight", "bias"))
            + _pairs("discriminator_predictions.dense_prediction.", "detector.out.", ("weight", "bias")))


def classifier_head_table() -> list[Row]:
    """BertForSequenceClassification's pooler and classifier."""
    return (_pairs("bert.pooler.dense.", "head.pooler.0.", ("weight", "bias"))
            + _pairs("classifier.", "head.out.", ("weight", "bias")))


def _import(model: nn.Module, their_sd: dict[str, torch.Tensor], table: list[Row]) -> nn.Module:
    """Fill `model` from their state dict following `table`; every parameter must be covered."""
    ours = {k: v.clone() for k, v in model.state_dict().items()}
    covered = set()
    for their, our, rows, transpose in table:
        src = their_sd[their].t() if transpose else their_sd[their]
        if rows is None:
            ours[our] = src.detach().clone()
        else:
            ours[our][rows] = src
        covered.add(our)
    tied = {n for n in ours if n.endswith("decoder.weight")}
    missing = [n for n in ours if n not in covered and n not in tied]
    if missing:
        raise ConfigError(f"weight conversion left parameters unset: {missing[:5]}")
    for name in tied:  # a tied weight is the embedding: load it with the same values
        ours[name] = ours["embeddings.token.weight"]
    model.load_state_dict(ours)
    return model


def _export(hf: nn.Module, ours_sd: dict[str, torch.Tensor], table: list[Row]) -> nn.Module:
    """Copy our weights into the transformers model `hf` following `table`."""
    their_sd = hf.state_dict()
    with torch.no_grad():
        for their, our, rows, transpose in table:
            src = ours_sd[our] if rows is None else ours_sd[our][rows]
            their_sd[their].copy_(src.t() if transpose else src)
    return hf


def from_transformers(hf_model: nn.Module) -> nn.Module:
    """Our equivalent of a transformers BertForMaskedLM, BertForSequenceClassification or
    GPT2LMHeadModel, with the weights copied (logits equal within float error)."""
    kind = type(hf_model).__name__
    sd = hf_model.state_dict()
    if kind == "BertForMaskedLM":
        cfg = bert_model_config(hf_model.config)
        return _import(MaskedLM(cfg), sd, bert_table(cfg) + mlm_head_table())
    if kind == "BertForSequenceClassification":
        cfg = bert_model_config(hf_model.config)
        model = SequenceClassifier(cfg, num_labels=hf_model.config.num_labels)
        return _import(model, sd, bert_table(cfg) + classifier_head_table())
    if kind == "GPT2LMHeadModel":
        cfg = gpt2_model_config(hf_model.config)
        return _import(CausalLM(cfg), sd, gpt2_table(cfg))
    raise ConfigError(f"from_transformers: unsupported model class {kind} "
                      "(BertForMaskedLM, BertForSequenceClassification, GPT2LMHeadModel)")


def load_transformers_dir(path: str | Path, task: str) -> nn.Module:
    """Load a local transformers BERT/GPT-2 directory (no hub access) and convert it."""
    import transformers

    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: no config.json (not a transformers model directory)")
    try:
        hf_config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError, ValueError, JSON errors
        raise CheckpointError(f"{path / 'config.json'}: not a transformers config ({_first_line(e)})") from None
    if hf_config.model_type not in ("bert", "gpt2"):
        raise ConfigError(f"{path}: model_type '{hf_config.model_type}' is not supported (bert, gpt2)")
    cls_name = "GPT2LMHeadModel" if hf_config.model_type == "gpt2" else "BertForMaskedLM"
    try:
        hf = getattr(transformers, cls_name).from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - refused pickles, truncated files, shape mismatches
        raise CheckpointError(f"{path}: its weights cannot be loaded safely ({_first_line(e)}); "
                              f"nlpattn reads model.safetensors, or a .bin only through torch's weights_only loader") from None
    return from_transformers(hf)


def _first_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:300] or type(e).__name__


def _check_exportable(model: nn.Module, arch: str, norm: str) -> ModelConfig:
    cfg = model.cfg
    if cfg.body != "transformer" or cfg.arch != arch or cfg.norm != norm or cfg.position != "learned":
        raise ConfigError(f"to_transformers: needs body=transformer, arch={arch}, norm={norm}, "
                          f"position=learned; this model has body={cfg.body}, arch={cfg.arch}, "
                          f"norm={cfg.norm}, position={cfg.position}")
    if not cfg.bias or not cfg.tie_embeddings:
        raise ConfigError("to_transformers: needs model.bias=true and model.tie_embeddings=true")
    return cfg


def _bert_config(cfg: ModelConfig, **extra):
    import transformers

    return transformers.BertConfig(**_encoder_settings(cfg), **extra)


def _encoder_settings(cfg: ModelConfig) -> dict:
    """BertConfig / ElectraConfig keyword arguments describing our encoder's shape."""
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff,
        max_position_embeddings=cfg.max_len, hidden_act=_OUR_ACT[cfg.activation],
        layer_norm_eps=cfg.norm_eps, type_vocab_size=max(cfg.type_vocab_size, 1),
        hidden_dropout_prob=cfg.dropout, pad_token_id=cfg.pad_token_id,
        attention_probs_dropout_prob=cfg.attention_dropout if cfg.attention_dropout is not None else cfg.dropout)


def to_transformers(model: nn.Module) -> nn.Module:
    """A transformers model with our weights: MaskedLM → BertForMaskedLM, CausalLM →
    GPT2LMHeadModel, SequenceClassifier (post-LN encoder) → BertForSequenceClassification,
    ReplacedTokenDetection → ElectraForPreTraining (its discriminator; the generator stays behind)."""
    import transformers

    ours_sd = model.state_dict()
    if isinstance(model, CausalLM):
        cfg = _check_exportable(model, "decoder", "pre")
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=cfg.vocab_size, n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
            n_inner=cfg.d_ff, n_positions=cfg.max_len, activation_function=_OUR_ACT[cfg.activation],
            layer_norm_epsilon=cfg.norm_eps, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout, bos_token_id=None, eos_token_id=None))
        return _export(hf, ours_sd, gpt2_table(cfg)).eval()
    if isinstance(model, (MaskedLM, SequenceClassifier, ReplacedTokenDetection)):
        cfg = _check_exportable(model, "encoder", "post")
        if not cfg.mlm_transform and isinstance(model, MaskedLM) or not cfg.pooler and isinstance(model, SequenceClassifier):
            raise ConfigError("to_transformers: BERT needs model.mlm_transform / model.pooler = true")
        if cfg.type_vocab_size == 0:  # BERT always has segment embeddings: give it a zero one
            ours_sd = dict(ours_sd, **{"embeddings.token_type.weight": torch.zeros(1, cfg.d_model)})
        if isinstance(model, ReplacedTokenDetection):
            hf = transformers.ElectraForPreTraining(transformers.ElectraConfig(
                embedding_size=cfg.d_model, **_encoder_settings(cfg)))
            table = bert_table(cfg, prefix="electra.") + detection_head_table()
        elif isinstance(model, MaskedLM):
            hf = transformers.BertForMaskedLM(_bert_config(cfg))
            table = bert_table(cfg) + mlm_head_table()
        else:
            hf = transformers.BertForSequenceClassification(_bert_config(cfg, num_labels=model.num_labels))
            table = bert_table(cfg) + classifier_head_table()
        return _export(hf, ours_sd, table).eval()
    raise ConfigError(f"to_transformers: no transformers equivalent for {type(model).__name__}")


def from_torch_transformer(t: nn.Transformer, vocab_size: int, max_len: int = 512,
                           position: str = "sinusoidal") -> Seq2SeqLM:
    """A Seq2SeqLM whose encoder and decoder bodies carry the weights of `t` (embeddings and
    output projection are new: nn.Transformer has none)."""
    enc0 = t.encoder.layers[0]
    act = "gelu" if getattr(enc0, "activation_relu_or_gelu", 1) == 2 else "relu"
    cfg = ModelConfig(body="transformer", arch="encoder-decoder", vocab_size=vocab_size,
                      d_model=t.d_model, n_layers=len(t.encoder.layers),
                      n_decoder_layers=len(t.decoder.layers), n_heads=t.nhead,
                      d_ff=enc0.linear1.out_features, max_len=max_len, dropout=enc0.dropout.p,
                      norm="pre" if enc0.norm_first else "post", norm_eps=enc0.norm1.eps,
                      embedding_norm=False, final_norm=t.encoder.norm is not None,
                      position=position, activation=act)
    model = build_model(cfg, "seq2seq")
    sd = {**_torch_stack(t.encoder, "encoder", cross=False), **_torch_stack(t.decoder, "decoder", cross=True)}
    table = [(name, name, None, False) for name in sd]
    sd.update({k: v for k, v in model.state_dict().items() if k.startswith(("embeddings.", "head."))})
    table += [(k, k, None, False) for k in model.state_dict() if k.startswith(("embeddings.", "head."))]
    return _import(model, sd, table)


def _torch_stack(stack: nn.Module, ours_prefix: str, cross: bool) -> dict[str, torch.Tensor]:
    """nn.TransformerEncoder/Decoder weights under our body's names."""
    d = {}
    norms = ("norm_self", "norm_cross", "norm_ffn") if cross else ("norm_self", "norm_ffn")
    for i, layer in enumerate(stack.layers):
        o = f"{ours_prefix}.layers.{i}."
        sa = layer.self_attn
        d[o + "self_attn.qkv_proj.weight"], d[o + "self_attn.qkv_proj.bias"] = sa.in_proj_weight, sa.in_proj_bias
        d[o + "self_attn.out_proj.weight"], d[o + "self_attn.out_proj.bias"] = sa.out_proj.weight, sa.out_proj.bias
        if cross:
            ca, dm = layer.multihead_attn, layer.multihead_attn.embed_dim
            d[o + "cross_attn.q_proj.weight"], d[o + "cross_attn.q_proj.bias"] = ca.in_proj_weight[:dm], ca.in_proj_bias[:dm]
            d[o + "cross_attn.kv_proj.weight"], d[o + "cross_attn.kv_proj.bias"] = ca.in_proj_weight[dm:], ca.in_proj_bias[dm:]
            d[o + "cross_attn.out_proj.weight"], d[o + "cross_attn.out_proj.bias"] = ca.out_proj.weight, ca.out_proj.bias
        for ours_norm, theirs in zip(norms, ("norm1", "norm2", "norm3")):
            d[o + ours_norm + ".weight"], d[o + ours_norm + ".bias"] = getattr(layer, theirs).weight, getattr(layer, theirs).bias
        d[o + "ffn.fc_in.weight"], d[o + "ffn.fc_in.bias"] = layer.linear1.weight, layer.linear1.bias
        d[o + "ffn.fc_out.weight"], d[o + "ffn.fc_out.bias"] = layer.linear2.weight, layer.linear2.bias
    if stack.norm is not None:
        d[f"{ours_prefix}.final_norm.weight"], d[f"{ours_prefix}.final_norm.bias"] = stack.norm.weight, stack.norm.bias
    return d


EXPORT_MARK = "nlpattn-export.json"  # names a directory as ours to replace with --force


def check_export_target(run_dir: Path, out_dir: Path, force: bool) -> bool:
    """Whether `out_dir` must be replaced; OutputError unless it is absent, empty, or (with
    `force`) an earlier export of ours. A run directory is never a target."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out: {out_dir} is a file, not a directory")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return out_dir.exists()
    if out_dir.resolve() == run_dir.resolve() or (out_dir / "model.json").exists():
        raise OutputError(f"--out: {out_dir} is an nlpattn run directory; export somewhere else")
    if not (out_dir / EXPORT_MARK).is_file():
        raise OutputError(f"--out: {out_dir} is not empty and not an earlier export; choose another directory")
    if not force:
        raise OutputError(f"--out: {out_dir} holds an earlier export; add --force to replace it")
    return True


def export_run(run_dir: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Write a run's model (and tokenizer.json, if any) as a transformers model directory.
    An existing `out_dir` is replaced only if it is an earlier export and `force` is set."""
    import json

    from nlpattn.fileio import atomic_dir
    from nlpattn.models import load_model

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    replace = check_export_target(run_dir, out_dir, force)
    model = load_model(run_dir).eval()
    hf = to_transformers(model)
    with atomic_dir(out_dir, replace=replace) as tmp:
        hf.save_pretrained(str(tmp), safe_serialization=True)
        tok = run_dir / "tokenizer.json"
        if tok.is_file():
            import transformers

            fast = transformers.PreTrainedTokenizerFast.from_pretrained(str(run_dir))  # with its special tokens
            fast.save_pretrained(str(tmp))
            shutil.copy(tok, tmp / "tokenizer.json")
        (tmp / EXPORT_MARK).write_text(json.dumps({"run": str(run_dir.resolve())}) + "\n", encoding="utf-8")
    return out_dir


def cli_export(args) -> int:
    """`nlpattn export-hf --run RUN --out DIR [--force]`."""
    if not args.run or not args.out:
        raise ConfigError("export-hf needs --run RUN_DIR and --out OUT_DIR")
    out = export_run(args.run, args.out, force=args.force)
    print(f"wrote transformers model to {out}")
    return 0

"""Configs: dataclasses filled from YAML (`yaml.safe_load`) and dotted `key=value` overrides.

Every key is checked: an unknown key, a value of the wrong type, or an invalid combination
raises `ConfigError` with a one-line message naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlpattn.errors import ConfigError

BODIES = ("transformer", "lstm", "gru", "cnn")
ARCHS = ("encoder", "decoder", "encoder-decoder")
OBJECTIVES = ("mlm", "clm", "seq2seq", "electra")
POOLINGS = ("cls", "mean", "last")
TOKENIZER_KINDS = ("bpe", "wordpiece", "unigram", "sentencepiece-unigram", "sentencepiece-bpe", "char")


@dataclass
class ModelConfig:
    """The network: embeddings → body → head. See docs in README 'Model switches'."""

    body: str = "transformer"  # transformer | lstm | gru | cnn
    arch: str = "encoder"  # encoder | decoder | encoder-decoder
    vocab_size: int = 8192
    d_model: int = 256
    n_layers: int = 4
    n_decoder_layers: int | None = None  # encoder-decoder only; None → n_layers
    n_heads: int = 4
    d_ff: int = 1024
    max_len: int = 512
    dropout: float = 0.1
    attention_dropout: float | None = None  # None → dropout
    norm: str = "pre"  # pre | post (post = the paper's and BERT's layout)
    norm_eps: float = 1e-5
    embedding_norm: bool | None = None  # LayerNorm after embeddings; None → (norm == post)
    final_norm: bool | None = None  # LayerNorm after the last block; None → (norm == pre)
    position: str = "learned"  # learned | sinusoidal | rope | none
    rope_base: float = 10000.0
    type_vocab_size: int = 0  # BERT segment embeddings (2 for pairs); 0 = none
    tie_embeddings: bool = True
    attention: str = "auto"  # sdpa | math | auto (math for CPU training where measured faster: attention.math_is_faster)
    attention_window: int | None = None  # restricted self-attention: attend to |i-j| <= r
    activation: str = "gelu"  # gelu | gelu_tanh | relu
    bias: bool = True
    mlm_transform: bool = True  # BERT's dense+act+norm before the MLM vocabulary projection
    pooler: bool = True  # BERT's dense+tanh pooler in the classifier head
    pooling: str | None = None  # classifier summary: cls | mean | last; None → the body's default (also over an init)
    pad_token_id: int = 0
    # recurrent body
    bidirectional: bool | None = None  # None → True for encoder, False for decoder
    # convolutional body
    kernel_size: int = 3
    dilation: int = 2  # dilation of layer i is dilation**i (1 = no dilation)
    conv_activation: str = "glu"  # glu | gelu
    se: bool = False  # squeeze-and-excitation channel attention
    spatial: bool = False  # CBAM-style spatial gate over positions (after SE when both are on)
    spatial_kernel: int = 7  # taps of the spatial gate's convolution over positions (odd)
    # replaced-token detection (objective electra): the generator is a shallower body of the same width
    generator_layers: int = 1  # layers of the MLM generator that fills the masked positions
    detection_weight: float = 50.0  # loss = generator MLM loss + detection_weight · detection loss

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.d_model // self.n_heads


@dataclass
class TokenizerConfig:
    """Which tokenizer to train (or `path` to load one)."""

    kind: str = "wordpiece"
    vocab_size: int = 8192
    min_frequency: int = 2
    lowercase: bool = False
    n_sentinels: int = 0  # <extra_id_N> tokens for span corruption
    path: str | None = None  # load an existing tokenizer (file or run directory) instead
    max_sentence_length: int = 16384  # sentencepiece only


@dataclass
class DataConfig:
    """Where the text comes from and how it is cut into training examples."""

    train_files: list[str] = field(default_factory=list)
    train_weights: list[float] = field(default_factory=list)  # one per train_files entry; [] = by size
    valid_files: list[str] = field(default_factory=list)
    dataset: str | None = None  # a `datasets` / hub name, e.g. "wikitext:wikitext-2-raw-v1"
    text_column: str = "text"
    streaming: bool = False
    valid_fraction: float = 0.0  # hold out the tail of train_files when valid_files is empty
    doc_split: str = "auto"  # auto | file | line | blank | wikitext | row: where documents start
    block_size: int = 128
    cache_dir: str | None = None  # token cache; None → <output_dir>/cache
    num_workers: int = 0
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    cls_sep: bool = False  # MLM/ELECTRA: each window framed as BERT's input: [CLS] first, [SEP] last and between documents
    noise_density: float = 0.15
    mean_span_length: float = 3.0


@dataclass
class TrainConfig:
    """The optimisation loop (shared by pretraining and fine-tuning)."""

    max_steps: int = 1000
    max_minutes: float | None = None
    epochs: float | None = None  # fine-tuning: overrides max_steps when set
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-4
    min_lr: float = 0.0
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    warmup_ratio: float | None = None  # overrides warmup_steps when set
    schedule: str = "cosine"  # cosine | linear | constant
    decay_over: str = "steps"  # steps: decay ends at max_steps | minutes: at max_minutes of wall-clock (cramming's budget)
    clip_grad: float | None = 1.0
    seed: int = 0
    group_by_length: bool = True  # fine-tuning: batch sentences of similar length (less padding)
    precision: str = "auto"  # auto (bf16 where the CPU/GPU has native bf16, else fp32) | fp32 | bf16 | fp16
    peak_flops: float | None = None  # device peak FLOP/s for `mfu`; None → measured once per machine (cached)
    compile: bool = False
    log_every: int = 50
    eval_every: int = 500
    eval_batches: int | None = 50  # None = the whole validation set
    eval_batch_size: int | None = None  # None → batch_size
    final_eval_batches: int | None = None  # the eval after the last step; None = whole set
    num_threads: int | None = None  # torch threads per process; None → torch's default (cores / processes)
    init_std: float | None = 0.02  # from-scratch init N(0, std), GPT-2 residual scaling; None = layer defaults
    save_every: int = 1000
    keep_last: int = 2
    resume: str = "auto"  # auto | never | PATH
    nan_skip: int = 0  # non-finite losses tolerated (skipped) before stopping
    progress: bool = True


@dataclass
class GlueConfig:
    """GLUE data location and encoding."""

    data_dir: str = "data/glue"
    max_length: int = 128
    truncation: str = "head"  # head | tail | head+tail (single-text tasks; pairs: longest first)
    head_tokens: int = 128  # head+tail: tokens kept from the start, the rest from the end
    tasks: list[str] = field(default_factory=list)  # `nlpattn glue`: empty = all available
    max_train_examples: int | None = None  # a fixed random subset (seed 0) of the train split; None = all
    max_eval_examples: int | None = None  # the same for every dev split; None = all
    padding: str = "bucket"  # bucket: to one of ~8 widths per doubling (few shapes) | longest: the batch's longest
    dropout: float | None = None  # every dropout while fine-tuning; None = the start's (init's or model.dropout)


@dataclass
class CostConfig:
    """`nlpattn cost`: the measured Table 1 sweep."""

    lengths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    d_model: int = 256
    d_models: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    fixed_length: int = 256
    layers: list[str] = field(
        default_factory=lambda: ["self-attention", "self-attention-math", "restricted", "restricted-banded",
                                 "lstm", "gru", "conv", "dilated-conv", "transformer-block"]
    )
    n_heads: int = 4
    window: int = 16  # restricted attention: keys within distance r
    kernel_size: int = 3
    dilation: int | None = None  # dilated conv: layer i uses dilation**i; None → kernel_size (log_k n)
    causal: bool = True  # decoder layers (masked attention, left-padded conv); false = centred
    batch_size: int = 1
    repeats: int = 5
    warmup: int = 2
    max_path_n: int = 64  # path lengths are measured for n = 8, 16, … up to this
    fit_from: int | None = None  # fit exponents over n >= this; None → the largest half of lengths
    device: str = "cpu"  # cpu | cuda
    threads: int | None = None  # torch.set_num_threads; None → PyTorch's default
    # `nlpattn cost compare`: equal-budget CLM training; one run per entry, each entry being
    # space-separated key=value overrides on top of the config (pick sizes with ~equal params)
    compare_runs: list[str] = field(default_factory=lambda: [
        "model.body=transformer model.n_layers=4",
        "model.body=lstm model.n_layers=6 model.position=none",
        "model.body=gru model.n_layers=8 model.position=none",
        "model.body=cnn model.n_layers=8 model.position=none"])
    compare_minutes: float = 2.0  # wall-clock budget of each run (its train.max_minutes)


@dataclass
class RaceConfig:
    """`nlpattn race`: bodies at equal wall-clock budget, MLM pretraining then real tasks (issue 18)."""

    bodies: list[str] = field(default_factory=lambda: ["transformer", "lstm", "gru", "cnn", "cnn-se"])
    # per-body overrides: "<body> key=value key=value ..." (sizes that match the body parameters)
    body_overrides: list[str] = field(default_factory=list)
    param_tolerance: float = 0.10  # body parameter counts must lie within this of each other
    lrs: list[float] = field(default_factory=lambda: [3e-4, 1e-3, 3e-3])
    sweep_minutes: float = 0.4  # MLM budget of each lr-sweep run
    minutes: float = 2.5  # MLM budget of each body's pretraining run
    tasks: list[str] = field(default_factory=lambda: ["sst2", "cola", "imdb"])
    seeds: int = 3
    imdb_lengths: list[int] = field(default_factory=lambda: [128, 512])
    glue_dir: str = "data/glue"  # SST-2 / CoLA
    imdb_dir: str = "../shared/data/corpus"  # holds imdb/train.tsv.gz, imdb/test.tsv.gz
    finetune_config: str = "configs/finetune/glue.yaml"  # the one recipe for every body
    finetune_overrides: list[str] = field(default_factory=list)  # key=value on top of it, every run
    max_train_examples: list[str] = field(default_factory=lambda: ["sst2=2000", "cola=2000", "imdb=256"])
    max_eval_examples: list[str] = field(default_factory=lambda: ["imdb=256"])  # unlisted task = all


@dataclass
class Config:
    """The root config: one schema for every command; each reads the sections it needs."""

    output_dir: str = "runs/default"
    objective: str = "mlm"  # mlm | clm | seq2seq | electra (replaced-token detection)
    task: str | None = None  # fine-tuning: a GLUE task name
    init: str | None = None  # fine-tuning or continued pretraining: run dir, checkpoint, transformers dir; None = scratch
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    glue: GlueConfig = field(default_factory=GlueConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    race: RaceConfig = field(default_factory=RaceConfig)


# Names from DESIGN.md: every command shares the root schema.
PretrainConfig = Config
FinetuneConfig = Config


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                schema: type = Config) -> Any:
    """Load `path` (YAML) into `schema`, apply dotted `key=value` overrides, validate."""
    source = str(path) if path is not None else "<defaults>"
    raw: dict = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides or []:
        key, value = _parse_override(item, source)
        _set_dotted(raw, key, value)
    cfg = _build(schema, raw, source, prefix="")
    if isinstance(cfg, Config):
        validate(cfg, source)
    elif isinstance(cfg, ModelConfig):
        validate_model(cfg, source)
    return cfg


def model_config_from_dict(d: dict, source: str = "<dict>") -> ModelConfig:
    """Build and validate a ModelConfig from a plain dict (e.g. a run's model.json)."""
    cfg = _build(ModelConfig, d, source, prefix="model.")
    validate_model(cfg, source)
    return cfg


def to_dict(cfg: Any) -> dict:
    """A dataclass config as plain nested dicts (YAML/JSON ready)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    """A dataclass config as YAML text, keys in declaration order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _read_yaml(path: Path, depth: int = 0) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return _apply_includes(path, data, depth)


def _apply_includes(path: Path, data: dict, depth: int) -> dict:
    """`include: [other.yaml, ...]` (relative to this file) is loaded first, then overridden."""
    includes = data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if depth > 8:
        raise ConfigError(f"{path}: 'include' nested too deeply (a cycle?)")
    merged: dict = {}
    for name in includes:
        _deep_merge(merged, _read_yaml(path.parent / name, depth + 1))
    _deep_merge(merged, data)
    return merged


def _deep_merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _parse_override(item: str, source: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"{source}: override '{item}' is not of the form key=value")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _all_keys(schema: type, prefix: str) -> list[str]:
    keys = []
    for name, typ in typing.get_type_hints(schema).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(typ):
            keys.extend(_all_keys(typ, prefix + name + "."))
    return keys


def _unknown_key(schema: type, key: str, source: str, prefix: str) -> ConfigError:
    full = prefix + key
    siblings = [prefix + f.name for f in dataclasses.fields(schema)]
    close = difflib.get_close_matches(full, siblings, n=1, cutoff=0.6)
    if not close:  # maybe it belongs in another section: search every key
        close = difflib.get_close_matches(full, _all_keys(Config, ""), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{source}: unknown key '{full}'{hint}")


def _build(schema: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key '{prefix.rstrip('.')}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}
    for key in raw:
        if key not in names:
            raise _unknown_key(schema, str(key), source, prefix)
    kwargs = {}
    for name, value in raw.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, value, source, prefix + name + ".")
        else:
            kwargs[name] = _coerce(value, typ, source, prefix + name)
    return schema(**kwargs)


def _coerce(value: Any, typ: Any, source: str, key: str) -> Any:
    """Check `value` against the annotation `typ` (int → float allowed; str → list split)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, source, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        (item_type,) = typing.get_args(typ)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif not isinstance(value, list):
            value = [value]
        return [_coerce(v, item_type, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if typ is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: key '{key}' must be {typ.__name__}, got {value!r}")


def _choice(value: str, choices: tuple[str, ...], key: str, source: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{source}: key '{key}' must be one of {', '.join(choices)}; "
                          f"got '{value}'{hint}")


def validate_model(m: ModelConfig, source: str) -> None:
    """Reject impossible model settings with a message naming the key."""
    _choice(m.body, BODIES, "model.body", source)
    _choice(m.arch, ARCHS, "model.arch", source)
    _choice(m.norm, ("pre", "post"), "model.norm", source)
    _choice(m.position, ("learned", "sinusoidal", "rope", "none"), "model.position", source)
    _choice(m.attention, ("sdpa", "math", "auto"), "model.attention", source)
    _choice(m.activation, ("gelu", "gelu_tanh", "relu"), "model.activation", source)
    _choice(m.conv_activation, ("glu", "gelu"), "model.conv_activation", source)
    if m.pooling is not None:
        _choice(m.pooling, POOLINGS, "model.pooling", source)
    for key in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len", "kernel_size",
                "dilation", "generator_layers"):
        if getattr(m, key) < 1:
            raise ConfigError(f"{source}: key 'model.{key}' must be >= 1, got {getattr(m, key)}")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"{source}: key 'model.dropout' must be in [0, 1), got {m.dropout}")
    if not 0.0 < m.detection_weight < float("inf"):
        raise ConfigError(f"{source}: key 'model.detection_weight' must be a positive number, got {m.detection_weight}")
    if m.body == "transformer" and m.d_model % m.n_heads != 0:
        raise ConfigError(f"{source}: key 'model.d_model' ({m.d_model}) must be divisible by "
                          f"'model.n_heads' ({m.n_heads})")
    if m.position == "rope" and (m.d_model // m.n_heads) % 2 != 0:
        raise ConfigError(f"{source}: key 'model.position' = rope needs an even head size; "
                          f"d_model/n_heads = {m.d_model // m.n_heads}")
    if m.arch == "encoder-decoder" and m.body != "transformer":
        raise ConfigError(f"{source}: key 'model.arch' = encoder-decoder needs model.body = "
                          f"transformer (cross-attention); got body '{m.body}'")
    if m.spatial and m.body != "cnn":
        raise ConfigError(f"{source}: key 'model.spatial' needs model.body = cnn (a gate over the "
                          f"convolution's positions); got body '{m.body}'")
    if m.spatial_kernel < 1 or m.spatial_kernel % 2 == 0:
        raise ConfigError(f"{source}: key 'model.spatial_kernel' must be odd and >= 1, got {m.spatial_kernel}")
    if m.body == "cnn" and m.kernel_size % 2 == 0:
        raise ConfigError(f"{source}: key 'model.kernel_size' must be odd for the cnn body, "
                          f"got {m.kernel_size}")


TRUNCATIONS = ("head", "tail", "head+tail")
PADDINGS = ("bucket", "longest")


def validate_weights(d: DataConfig, source: str) -> None:
    """`data.train_weights`: empty, or one finite weight >= 0 per train_files entry, not all zero."""
    w = d.train_weights
    if not w:
        return
    if len(w) != len(d.train_files):
        raise ConfigError(f"{source}: key 'data.train_weights' has {len(w)} weights for "
                          f"{len(d.train_files)} data.train_files entries")
    bad = [x for x in w if not isinstance(x, (int, float)) or not 0 <= x < float("inf")]
    if bad:
        raise ConfigError(f"{source}: key 'data.train_weights' must be finite numbers >= 0, got {bad[0]}")
    if sum(w) <= 0:
        raise ConfigError(f"{source}: key 'data.train_weights' are all zero")


OBJECTIVE_ARCH = {"mlm": "encoder", "clm": "decoder", "seq2seq": "encoder-decoder", "electra": "encoder"}


def validate(cfg: Config, source: str) -> None:
    """Validate the whole config, including cross-section combinations."""
    validate_model(cfg.model, source)
    _choice(cfg.objective, OBJECTIVES, "objective", source)
    _choice(cfg.tokenizer.kind, TOKENIZER_KINDS, "tokenizer.kind", source)
    _choice(cfg.train.precision, ("auto", "fp32", "bf16", "fp16"), "train.precision", source)
    _choice(cfg.train.schedule, ("cosine", "linear", "constant"), "train.schedule", source)
    _choice(cfg.train.decay_over, ("steps", "minutes"), "train.decay_over", source)
    if cfg.train.decay_over == "minutes" and cfg.train.max_minutes is None:
        raise ConfigError(f"{source}: key 'train.decay_over' is minutes, which needs 'train.max_minutes'")
    if cfg.train.decay_over == "minutes" and cfg.train.warmup_ratio is not None:
        raise ConfigError(f"{source}: key 'train.warmup_ratio' is a share of max_steps; with "
                          f"train.decay_over=minutes set 'train.warmup_steps'")
    for key in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "save_every", "keep_last"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"{source}: key 'train.{key}' must be >= 1, got {getattr(cfg.train, key)}")
    for key in ("max_minutes", "epochs", "lr", "peak_flops"):
        value = getattr(cfg.train, key)
        if value is not None and not 0 < value < float("inf"):
            raise ConfigError(f"{source}: key 'train.{key}' must be a positive number, got {value}")
    validate_weights(cfg.data, source)
    _choice(cfg.glue.truncation, TRUNCATIONS, "glue.truncation", source)
    _choice(cfg.glue.padding, PADDINGS, "glue.padding", source)
    if cfg.glue.head_tokens < 0:
        raise ConfigError(f"{source}: key 'glue.head_tokens' must be >= 0, got {cfg.glue.head_tokens}")
    if cfg.glue.dropout is not None and not 0.0 <= cfg.glue.dropout < 1.0:
        raise ConfigError(f"{source}: key 'glue.dropout' must be in [0, 1), got {cfg.glue.dropout}")
    for key in ("max_train_examples", "max_eval_examples"):
        if getattr(cfg.glue, key) is not None and getattr(cfg.glue, key) < 1:
            raise ConfigError(f"{source}: key 'glue.{key}' must be >= 1, got {getattr(cfg.glue, key)}")
    if cfg.data.block_size < 2:
        raise ConfigError(f"{source}: key 'data.block_size' must be >= 2")
    if cfg.data.cls_sep and OBJECTIVE_ARCH.get(cfg.objective) != "encoder":  # the masked-LM objectives
        raise ConfigError(f"{source}: key 'data.cls_sep' frames masked-LM windows; objective={cfg.objective} "
                          f"reads its windows as they are")
    if cfg.data.block_size > cfg.model.max_len and cfg.model.position in ("learned",) and cfg.task is None:
        # fine-tuning (task set) reads no blocks: glue.max_length is what must fit
        raise ConfigError(f"{source}: key 'data.block_size' ({cfg.data.block_size}) exceeds "
                          f"'model.max_len' ({cfg.model.max_len})")
    if cfg.glue.max_length > cfg.model.max_len and cfg.model.position != "none" and cfg.task is not None:
        raise ConfigError(f"{source}: key 'glue.max_length' ({cfg.glue.max_length}) exceeds "
                          f"'model.max_len' ({cfg.model.max_len})")

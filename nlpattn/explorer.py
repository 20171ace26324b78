"""The attention explorer's data: encode the input the way the run was trained, run the model
once with `output_attentions=True`, and gather every layer × head with its statistics.

`explorer_data(run_dir, text=...)` returns one JSON-able dict (what `out=x.json` writes and
what the HTML page inlines):

    {"title", "run", "task", "inputs", "prediction": {...} | None, "highlight": CLS index | None,
     "sections": [{"id", "title", "queries": [tok], "keys": [tok], "query_segments", "key_segments",
                   "causal", "layers": L × H × T × S weights, "stats": [row per head],
                   "groups": {name: label}, "rollout": T × T | None, "overall": [S] | None}]}

Inputs: one text; a GLUE-style pair (`text_pair`, needs segment embeddings) as
`[CLS] a [SEP] b [SEP]`; or `source`/`target` for an encoder-decoder run, which adds the
decoder's self-attention and its cross-attention over the source.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from nlpattn.attention_stats import head_stats, is_punctuation, rollout
from nlpattn.errors import ConfigError

DIGITS = 4  # weights are rounded for the page: 1e-4 is below what a shade can show
GROUPS = {"cls": "[CLS]/BOS", "sep": "[SEP]/EOS", "punct": "punctuation"}


@dataclass
class Encoded:
    """Token ids of one input, ready for the model (decoder_* only for seq2seq)."""

    ids: list[int]
    types: list[int] | None = None
    decoder_ids: list[int] | None = None
    notes: list[str] = field(default_factory=list)


def load_run(run_dir: str | Path):
    """(model, tokenizer, task name or None) of a run directory; the model in eval mode."""
    from nlpattn.models import load_model
    from nlpattn.tokenizer import load_tokenizer

    model, tok = load_model(run_dir), load_tokenizer(run_dir)
    return model.eval(), tok, _run_task(Path(run_dir))


def _run_task(run_dir: Path) -> str | None:
    """The GLUE task a fine-tuned run was trained on (config.yaml `task`), else None."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return cfg.get("task") if isinstance(cfg, dict) else None


def check_has_attention(model, run_dir: str | Path) -> str:
    """"attention" or "gates" (CNN with model.se/model.spatial); else a ConfigError naming model.body."""
    body = getattr(model, "encoder", None) or model.body
    if getattr(body, "returns_attention", False):
        return "attention"
    if getattr(body, "returns_gates", False):
        return "gates"
    hint = " or a cnn with model.se/model.spatial gates" if model.cfg.body == "cnn" else ""
    raise ConfigError(f"model.body: {run_dir} is a '{model.cfg.body}' run, which has no attention "
                      f"weights to draw (attention-map needs body transformer{hint})")


def _fit(name: str, ids: list[int], limit: int, truncate: bool, notes: list[str]) -> list[int]:
    """`ids` if they fit in `limit`; else truncated (truncate=true) or a ConfigError naming `name`."""
    if len(ids) <= limit:
        return ids
    if not truncate:
        raise ConfigError(f"{name}: {len(ids)} tokens > model.max_len={limit}; shorten it or pass "
                          f"truncate=true to keep the first {limit}")
    notes.append(f"{name} truncated from {len(ids)} to {limit} tokens (model.max_len)")
    return ids[:limit]


def encode_inputs(model, tok, text: str | None = None, text_pair: str | None = None,
                  source: str | None = None, target: str | None = None,
                  truncate: bool = False) -> Encoded:
    """Ids for the run's kind of model: encoders get `[CLS] a [SEP] (b [SEP])`, causal LMs the
    plain text, encoder-decoders `source [EOS]` and `[BOS] target`."""
    limit, notes = model.cfg.max_len, []
    if model.task == "seq2seq":
        if text_pair is not None:
            raise ConfigError("text_pair: an encoder-decoder run reads source= and target=, not a pair")
        source = source if source is not None else text
        if not source or target is None:
            raise ConfigError('source/target: an encoder-decoder run needs source="..." (or text=) '
                              'and target="..." (the decoder\'s side)')
        src = _fit("source", [*tok.encode(source), tok.eos_id], limit, truncate, notes)
        dec = _fit("target", [tok.bos_id, *tok.encode(target)], limit, truncate, notes)
        return Encoded(src, decoder_ids=dec, notes=notes)
    if source is not None or target is not None:
        raise ConfigError(f"source/target: only for encoder-decoder runs; this is a '{model.task}' "
                          f"run (use text=)")
    if not text:
        raise ConfigError('text: required and non-empty (text="...")')
    if text_pair is not None:
        _check_pair(model)
    if model.task == "clm":
        return Encoded(_fit("text", tok.encode(text), limit, truncate, notes), notes=notes)
    ids, types = tok.encode_pair(text, text_pair)
    if len(ids) > limit:
        name = "text" if text_pair is None else "text/text_pair"
        _fit(name, ids, limit, truncate, notes)  # raises unless truncate=true
        ids, types = tok.encode_pair(text, text_pair, max_length=limit)
    return Encoded(ids, types if model.cfg.type_vocab_size else None, notes=notes)


def _check_pair(model) -> None:
    if model.task == "clm":
        raise ConfigError("text_pair: a causal LM reads one text; sentence pairs need an encoder "
                          "with segment embeddings")
    if not model.cfg.type_vocab_size:
        raise ConfigError("text_pair: this model has no segment embeddings (model.type_vocab_size=0), "
                          "so it cannot tell the two sentences of a pair apart")


def run_model(model, enc: Encoded):
    """One forward pass with attention weights (batch of one)."""
    ids = torch.tensor([enc.ids])  # (1, T)
    with torch.no_grad():
        if enc.decoder_ids is not None:
            return model(ids, decoder_input_ids=torch.tensor([enc.decoder_ids]), output_attentions=True)
        if enc.types is not None:
            return model(ids, token_type_ids=torch.tensor([enc.types]), output_attentions=True)
        return model(ids, output_attentions=True)


def token_labels(tok, ids: list[int]) -> list[str]:
    """Readable label per id: special tokens by name, word pieces keep their `##`."""
    out = []
    for i in ids:
        piece = tok.id_to_token(i)
        if i in tok.special_ids:
            out.append(piece)
            continue
        text = tok.decode([i], skip_special_tokens=False)
        if piece.startswith("##") and not text.startswith("##"):
            text = "##" + text
        out.append(text.replace("\n", "\\n") if text.strip() else (piece if piece.strip() else "␣"))
    return out


def key_groups(tok, ids: list[int], labels: list[str]) -> dict[str, list[bool]]:
    """Masks of the keys in each Clark et al. group that occurs in the sequence."""
    groups = {"cls": [i in (tok.cls_id, tok.bos_id) for i in ids],
              "sep": [i in (tok.sep_id, tok.eos_id) for i in ids],
              "punct": [is_punctuation(t) and i not in tok.special_ids for i, t in zip(ids, labels)]}
    return {k: v for k, v in groups.items() if any(v)}


def _rounded(layers: list[torch.Tensor]) -> list:
    return [[[[round(float(x), DIGITS) for x in row] for row in head] for head in w] for w in layers]


def make_section(sid: str, title: str, layers: list[torch.Tensor], queries: list[str], keys: list[str],
                 groups: dict[str, list[bool]], causal: bool = False, overall_row: int | None = None) -> dict:
    """One explorer section from per-layer (H, T, S) weights (self-attention when T == S)."""
    self_attn = queries is keys
    roll = rollout(layers) if self_attn else None  # (T, T)
    overall = None
    if roll is not None:
        overall = roll[overall_row] if overall_row is not None else roll.mean(0)  # (T,)
    return {"id": sid, "title": title, "queries": queries, "keys": keys, "causal": causal,
            "self_attention": self_attn, "query_segments": None, "key_segments": None,
            "layers": _rounded(layers), "stats": head_stats(layers, groups, self_attention=self_attn),
            "groups": {k: GROUPS[k] for k in groups},
            "rollout": None if roll is None else _rounded([roll[None]])[0][0],
            "overall": None if overall is None else [round(float(x), DIGITS) for x in overall],
            "overall_from": None if roll is None else ("[CLS] row" if overall_row is not None
                                                       else "mean over query rows")}


def prediction(model, out, task: str | None) -> dict | None:
    """A fine-tuned classifier's prediction: label and probability (or the regression score)."""
    if model.task not in ("classification", "regression"):
        return None
    logits = out.logits[0].float()  # (num_labels,)
    if model.task == "regression":
        return {"label": "score", "probability": None, "score": round(float(logits[0]), DIGITS)}
    probs = torch.softmax(logits, -1)
    names = _label_names(task, len(probs))
    best = int(probs.argmax())
    return {"label": names[best], "probability": round(float(probs[best]), DIGITS),
            "probabilities": {n: round(float(p), DIGITS) for n, p in zip(names, probs)}}


def _label_names(task: str | None, n: int) -> list[str]:
    from nlpattn.data.glue import GLUE_TASKS, get_task

    if task and task.replace("-", "").replace("_", "").lower() in GLUE_TASKS:
        names = list(get_task(task).label_names)
        if len(names) == n:
            return names
    return [f"label {i}" for i in range(n)]


def _cls_row(model, ids: list[int], tok) -> int | None:
    """Index of the [CLS] query row a classifier pools (None when it pools otherwise)."""
    pooling = getattr(getattr(model, "head", None), "pooling", None)
    return 0 if model.task in ("classification", "regression") and pooling == "cls" and ids[:1] == [tok.cls_id] \
        else None


def sections(model, tok, enc: Encoded, out) -> list[dict]:
    """The explorer's sections: self-attention, or encoder/decoder self- and cross-attention."""
    first = [a[0].float() for a in (out.encoder_attentions if enc.decoder_ids is not None else out.attentions)]
    src = token_labels(tok, enc.ids)
    src_groups = key_groups(tok, enc.ids, src)
    if enc.decoder_ids is None:
        causal = model.task == "clm" or model.cfg.arch == "decoder"
        sec = make_section("self", "Self-attention", first, src, src, src_groups, causal=causal,
                           overall_row=_cls_row(model, enc.ids, tok))
        sec["query_segments"] = sec["key_segments"] = enc.types
        return [sec]
    tgt = token_labels(tok, enc.decoder_ids)
    tgt_groups = key_groups(tok, enc.decoder_ids, tgt)
    dec = [a[0].float() for a in out.attentions]
    cross = [a[0].float() for a in out.cross_attentions]
    return [make_section("encoder", "Encoder self-attention (source)", first, src, src, src_groups),
            make_section("decoder", "Decoder self-attention (target)", dec, tgt, tgt, tgt_groups, causal=True),
            make_section("cross", "Cross-attention (target position → source tokens)", cross, tgt, src,
                         src_groups)]


def gate_sections(tok, enc: Encoded, out) -> list[dict]:
    """A CNN run's gates: spatial (where: layer × token) and channel (which features: layer ×
    channel, averaged over tokens), each drawn as one matrix; values in (0, 1), rows not summing to 1."""
    labels, secs = token_labels(tok, enc.ids), []
    spatial = [g.spatial[0].float() for g in out.gates if g.spatial is not None]  # each (T,)
    channel = [g.channel[0].float().mean(0) for g in out.gates if g.channel is not None]  # each (d,)
    if spatial:
        secs.append(_gate_section("spatial", "Spatial gate: where (layer × token)", torch.stack(spatial), labels))
    if channel:
        names = [f"c{c}" for c in range(channel[0].shape[0])]
        secs.append(_gate_section("channel", "Channel gate: which features (layer × channel, mean over tokens)",
                                  torch.stack(channel), names))
    return secs


def _gate_section(sid: str, title: str, gates: torch.Tensor, keys: list[str]) -> dict:
    """One gate matrix (L, N) as a section with one 'head' whose rows are the layers."""
    rows = [f"layer {i + 1}" for i in range(gates.shape[0])]
    return {"id": sid, "title": title, "kind": "gates", "queries": rows, "keys": keys, "causal": False,
            "self_attention": False, "query_segments": None, "key_segments": None,
            "layers": _rounded([gates[None]]), "stats": [], "groups": {}, "rollout": None, "overall": None,
            "overall_from": None}


def explorer_data(run_dir: str | Path, text: str | None = None, text_pair: str | None = None,
                  source: str | None = None, target: str | None = None, truncate: bool = False,
                  loaded=None) -> dict:
    """Everything the explorer shows for one input to one run (a JSON-able dict)."""
    model, tok, task = loaded if loaded is not None else load_run(run_dir)
    kind = check_has_attention(model, run_dir)
    enc = encode_inputs(model, tok, text, text_pair, source, target, truncate)
    out = run_model(model, enc)
    secs = sections(model, tok, enc, out) if kind == "attention" else gate_sections(tok, enc, out)
    inputs = {k: v for k, v in (("text", text), ("text_pair", text_pair), ("source", source),
                                 ("target", target)) if v is not None}
    cfg = model.cfg
    shape = f"{cfg.n_heads} heads" if kind == "attention" else "gates: " + ", ".join(s["id"] for s in secs)
    return {"title": f"{Path(run_dir).name}: {kind}", "run": str(run_dir), "task": task or model.task,
            "model": f"{cfg.body} {cfg.arch}, {cfg.n_layers} layers × {shape}, d={cfg.d_model}",
            "inputs": inputs, "notes": enc.notes, "prediction": prediction(model, out, task),
            "highlight": _cls_row(model, enc.ids, tok), "sections": secs}


def render_page(data: dict) -> str:
    """The explorer as one self-contained HTML page (template + data inlined as JSON)."""
    template = resources.files("nlpattn").joinpath("explorer.html").read_text(encoding="utf-8")
    # "<" escaped so no token text can close the <script> element; still valid JSON.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    values = {"TITLE": html.escape(data["title"]), "DATA": payload}
    return re.sub(r"__(TITLE|DATA)__", lambda m: values[m.group(1)], template)


def label_groups(labels: list[str]) -> dict[str, list[bool]]:
    """Key groups from token labels alone (no tokenizer at hand): [CLS]/[BOS], [SEP]/[EOS], punctuation."""
    groups = {"cls": [t in ("[CLS]", "[BOS]") for t in labels],
              "sep": [t in ("[SEP]", "[EOS]") for t in labels],
              "punct": [is_punctuation(t) for t in labels]}
    return {k: v for k, v in groups.items() if any(v)}

"""Text generation: greedy / temperature / top-k / top-p sampling with a KV cache for causal
LMs, and beam search for encoder-decoder models.

Batches of prompts of different lengths are left-padded: every row's new tokens start in the
same column, padded keys are masked and each row's positions count from its first real token
(`position_ids`), so a batched row generates exactly what it would alone. Bodies that cannot
take left padding (`body.left_padding_ok` false: a forward RNN would read the pads) generate
one group of equal-length prompts at a time instead. The logits pipeline follows transformers'
order: repetition penalty, then temperature, top-k, top-p.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from nlpattn.attention import KVCache
from nlpattn.errors import ConfigError


@dataclass
class SamplingConfig:
    """How the next token is chosen: temperature 0 (or top_k=1) means greedy."""

    max_new_tokens: int = 50
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the row (CTRL, Keskar et al. 2019)
    stop: list[str] = field(default_factory=list)  # stop strings: a row ends once its text contains one
    eos_id: int | None = None
    pad_id: int = 0  # left padding of batched prompts, and the filler after a row has stopped
    use_cache: bool = True
    seed: int | None = None


def check_sampling(cfg: SamplingConfig) -> None:
    """Refuse impossible settings with a one-line ConfigError naming the key."""
    def bad(key: str, rule: str) -> ConfigError:
        return ConfigError(f"generate: key '{key}' must be {rule}, got {getattr(cfg, key)!r}")

    if isinstance(cfg.max_new_tokens, bool) or not isinstance(cfg.max_new_tokens, int) or cfg.max_new_tokens < 1:
        raise bad("max_new_tokens", "an integer >= 1")
    if not (isinstance(cfg.temperature, (int, float)) and 0 <= cfg.temperature < math.inf):
        raise bad("temperature", "a number >= 0 (0 = greedy)")
    if cfg.top_k is not None and (not isinstance(cfg.top_k, int) or cfg.top_k < 1):
        raise bad("top_k", "an integer >= 1")
    if cfg.top_p is not None and not (isinstance(cfg.top_p, (int, float)) and 0 < cfg.top_p <= 1):
        raise bad("top_p", "in (0, 1]")
    if not (isinstance(cfg.repetition_penalty, (int, float)) and 0 < cfg.repetition_penalty < math.inf):
        raise bad("repetition_penalty", "a number > 0 (1 = off)")
    if any(not isinstance(s, str) or not s for s in cfg.stop):
        raise bad("stop", "a list of non-empty strings")


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set to -inf all but the top-k logits and outside the top-p nucleus. logits: (B, V).

    Top-k keeps ties with the k-th logit; top-p keeps the smallest set of most likely tokens
    whose probability reaches top_p (Holtzman et al. 2020), and always the most likely one.
    """
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop_sorted[:, 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def apply_repetition_penalty(logits: torch.Tensor, ids: torch.Tensor, penalty: float,
                             mask: torch.Tensor | None = None) -> torch.Tensor:
    """transformers' repetition penalty: the logit of every token present in the row (B, T) is
    divided by `penalty` if positive, multiplied if negative. Padded positions (mask 0) don't count."""
    if penalty == 1.0:
        return logits
    weight = torch.ones_like(ids, dtype=logits.dtype) if mask is None else mask.to(logits.dtype)
    present = torch.zeros_like(logits).scatter_add_(1, ids, weight) > 0  # (B, V)
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(present, penalised, logits)


def next_token(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Pick the next token (B,) from last-position logits (B, V) (penalties already applied)."""
    if cfg.temperature == 0 or cfg.top_k == 1:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists → (ids (B, T), attention_mask (B, T)), each row right-aligned (left padding)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("generate: every prompt needs at least one token")
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p):] = 1
    return ids, mask


@dataclass
class _Rows:
    """What the decoding loop tracks per row: the mask, positions, and which rows are done."""

    mask: torch.Tensor | None  # (B, T) 1 = real token; None = no padding anywhere
    finished: torch.Tensor  # (B,) bool
    prompt_len: int


def _step_inputs(ids: torch.Tensor, rows: _Rows, cache: KVCache | None) -> dict:
    """Model inputs for the next step: the new token (cache) or the whole sequence."""
    if rows.mask is None:
        return {"input_ids": ids[:, -1:] if cache is not None and len(cache) else ids, "cache": cache}
    positions = (rows.mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T): each row counts from its first token
    if cache is not None and len(cache):
        return {"input_ids": ids[:, -1:], "attention_mask": rows.mask, "position_ids": positions[:, -1:],
                "cache": cache}
    return {"input_ids": ids, "attention_mask": rows.mask, "position_ids": positions, "cache": cache}


def _stop_hit(ids: torch.Tensor, rows: _Rows, cfg: SamplingConfig, decode: Callable | None) -> torch.Tensor:
    """(B,) rows whose decoded continuation now contains a stop string."""
    hit = torch.zeros_like(rows.finished)
    if not cfg.stop:
        return hit
    for row in (~rows.finished).nonzero().flatten().tolist():
        text = decode(ids[row, rows.prompt_len:].tolist())
        hit[row] = any(s in text for s in cfg.stop)
    return hit


def _decode_loop(model: nn.Module, ids: torch.Tensor, rows: _Rows, cfg: SamplingConfig,
                 decode: Callable | None) -> torch.Tensor:
    """Append up to cfg.max_new_tokens tokens to ids (B, T0); finished rows get cfg fillers."""
    generator = torch.Generator(device=ids.device).manual_seed(cfg.seed) if cfg.seed is not None else None
    cache = KVCache() if cfg.use_cache and model.body.supports_cache else None  # RNN/CNN recompute
    fill = cfg.eos_id if cfg.eos_id is not None else cfg.pad_id
    for _ in range(cfg.max_new_tokens):
        if ids.shape[1] >= model.cfg.max_len:
            break
        logits = model(**_step_inputs(ids, rows, cache)).logits[:, -1]  # (B, V)
        logits = apply_repetition_penalty(logits, ids, cfg.repetition_penalty, rows.mask)
        token = next_token(logits, cfg, generator).masked_fill(rows.finished, fill)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if rows.mask is not None:
            rows.mask = torch.cat([rows.mask, torch.ones_like(rows.mask[:, :1])], dim=1)
        if cfg.eos_id is not None:
            rows.finished |= token == cfg.eos_id
        rows.finished |= _stop_hit(ids, rows, cfg, decode)
        if bool(rows.finished.all()):
            break
    return ids


@torch.no_grad()
def generate(model: nn.Module, input_ids: torch.Tensor, cfg: SamplingConfig | None = None, *,
             attention_mask: torch.Tensor | None = None,
             decode: Callable[[list[int]], str] | None = None) -> torch.Tensor:
    """Extend prompts (B, T0), left-padded where attention_mask (B, T0) is 0, by up to
    cfg.max_new_tokens tokens → (B, T0 + n). A row ends at eos or, given `decode` (token ids →
    text), once its continuation contains a stop string; after that it is filled with eos (or pad).

    With the cache each step feeds one token and reuses past keys/values; without it the
    whole sequence is recomputed every step (same result, for checking).
    """
    cfg = cfg or SamplingConfig()
    check_sampling(cfg)
    if cfg.stop and decode is None:
        raise ConfigError("generate: key 'stop' needs a tokenizer to decode with (pass decode=tok.decode)")
    model.eval()
    mask = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.long()
    if mask is not None and not model.body.left_padding_ok:
        return _generate_by_length(model, input_ids, mask, cfg, decode)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    return _decode_loop(model, input_ids, _Rows(mask, finished, input_ids.shape[1]), cfg, decode)


def _generate_by_length(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, cfg: SamplingConfig,
                        decode: Callable | None) -> torch.Tensor:
    """Left-padded prompts for a body that cannot mask padding: one unpadded batch per prompt length."""
    lengths, width = mask.sum(dim=1), ids.shape[1]
    parts = {}
    for n in sorted(set(lengths.tolist())):
        rows = (lengths == n).nonzero().flatten()
        prompts = ids[rows, width - n:]
        finished = torch.zeros(len(rows), dtype=torch.bool, device=ids.device)
        parts[n] = (rows, _decode_loop(model, prompts, _Rows(None, finished, n), cfg, decode)[:, n:])
    new = max(out.shape[1] for _, out in parts.values())
    fill = cfg.eos_id if cfg.eos_id is not None else cfg.pad_id
    result = torch.cat([ids, torch.full((ids.shape[0], new), fill, dtype=ids.dtype, device=ids.device)], dim=1)
    for rows, out in parts.values():
        result[rows, width:width + out.shape[1]] = out
    return result


@dataclass
class Generation:
    """One generated continuation: its text (cut before the first stop string), its tokens, why it ended."""

    prompt: str
    text: str
    token_ids: list[int]
    finish: str  # eos | stop | length


def generate_text(model: nn.Module, tokenizer, prompts: list[str] | str, cfg: SamplingConfig | None = None,
                  batch_size: int = 16) -> list[Generation]:
    """Generate a continuation of each prompt (left-padded batches of `batch_size`) → one Generation each."""
    cfg = cfg or SamplingConfig()
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    cfg = dataclasses.replace(cfg, eos_id=tokenizer.eos_id if cfg.eos_id is None else cfg.eos_id,
                              pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else cfg.pad_id)
    encoded = [tokenizer.encode(p) or [tokenizer.bos_id] for p in prompts]
    results = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(encoded[start:start + batch_size], cfg.pad_id)
        check_prompt_length(model, ids.shape[1])
        out = generate(model, ids, cfg, attention_mask=mask, decode=tokenizer.decode)[:, ids.shape[1]:]
        for prompt, row in zip(prompts[start:start + batch_size], out.tolist()):
            results.append(_finish(prompt, row, cfg, tokenizer.decode))
    return results


def check_prompt_length(model: nn.Module, length: int) -> None:
    """A prompt must leave room for one new token within model.cfg.max_len."""
    if length >= model.cfg.max_len:
        raise ConfigError(f"generate: key 'prompt' is {length} tokens; the model's max_len is "
                          f"{model.cfg.max_len}, so no room is left to generate")


def _finish(prompt: str, row: list[int], cfg: SamplingConfig, decode: Callable) -> Generation:
    """Cut a generated row at eos, then its text before the first stop string."""
    finish = "length"
    if cfg.eos_id is not None and cfg.eos_id in row:
        row, finish = row[:row.index(cfg.eos_id)], "eos"
    text = decode(row)
    cuts = [text.find(s) for s in cfg.stop if s in text]
    if cuts:
        text, finish = text[:min(cuts)], "stop"
    return Generation(prompt, text, row, finish)


@torch.no_grad()
def beam_search(model: nn.Module, input_ids: torch.Tensor, *, bos_id: int, eos_id: int,
                num_beams: int = 4, max_new_tokens: int = 50, length_penalty: float = 1.0,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Beam search for a Seq2SeqLM on one source sequence (1, S) → best target (1, T), bos first.

    A hypothesis scores Σ log p(token) / L^length_penalty, L = tokens generated (eos included);
    hypotheses still open after max_new_tokens compete too.
    """
    model.eval()
    if input_ids.shape[0] != 1:
        raise ConfigError(f"beam_search takes one source sequence, got batch {input_ids.shape[0]}")
    if num_beams < 1 or max_new_tokens < 1 or not math.isfinite(length_penalty):
        raise ConfigError(f"beam_search: num_beams ({num_beams}) and max_new_tokens ({max_new_tokens}) "
                          f"must be >= 1 and length_penalty finite ({length_penalty})")
    memory = model.encode(input_ids, attention_mask).hidden.expand(num_beams, -1, -1)  # (K, S, d)
    mem_mask = None if attention_mask is None else attention_mask.expand(num_beams, -1)
    beams = torch.full((num_beams, 1), bos_id, dtype=torch.long, device=input_ids.device)
    scores = torch.full((num_beams,), float("-inf"), device=input_ids.device)
    scores[0] = 0.0  # all beams start identical: keep one alive
    cache, done = KVCache(), []
    for _ in range(max_new_tokens):
        out = model.decode(beams[:, -1:], memory, mem_mask, cache=cache)
        logp = torch.log_softmax(model.head(out.hidden[:, -1])[0].float(), dim=-1)  # (K, V)
        beams, scores = _beam_step(beams, scores, logp, cache, done, eos_id, length_penalty)
        best_open = scores.max().item() / (beams.shape[1] - 1) ** length_penalty
        if len(done) >= num_beams and max(d[0] for d in done) > best_open:
            break
    steps = beams.shape[1] - 1
    done += [(s / steps ** length_penalty, b) for s, b in zip(scores.tolist(), beams.tolist()) if s > float("-inf")]
    best = max(done, key=lambda d: d[0])[1]
    return torch.tensor([best], device=input_ids.device)


def _beam_step(beams: torch.Tensor, scores: torch.Tensor, logp: torch.Tensor, cache: KVCache, done: list,
               eos_id: int, length_penalty: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Extend K beams by one token: hypotheses ending in eos go to `done`, the best K others stay open."""
    num_beams, vocab = logp.shape
    total = (scores[:, None] + logp).view(-1)  # (K·V,)
    top, flat = total.topk(min(2 * num_beams, total.numel()))
    keep_rows, keep_tokens, keep_scores = [], [], []
    for s, f in zip(top.tolist(), flat.tolist()):
        row, tok = divmod(f, vocab)
        if tok == eos_id:
            if s > float("-inf"):
                done.append((s / beams.shape[1] ** length_penalty, beams[row].tolist() + [tok]))
        else:
            keep_rows.append(row), keep_tokens.append(tok), keep_scores.append(s)
        if len(keep_rows) == num_beams:
            break
    index = torch.tensor(keep_rows, device=beams.device)
    cache.reorder(index)
    beams = torch.cat([beams[index], torch.tensor(keep_tokens, device=beams.device)[:, None]], dim=1)
    return beams, torch.tensor(keep_scores, device=beams.device)


# `nlpattn generate` options: key → type; `prompt` and `stop` may be given several times.
_CLI_KEYS = {"prompt": str, "prompt_file": str, "max_new_tokens": int, "temperature": float, "top_k": int,
             "top_p": float, "repetition_penalty": float, "stop": str, "seed": int, "num_samples": int,
             "use_cache": bool, "batch_size": int}
_REPEATABLE = ("prompt", "stop")
_SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "use_cache")


def _typed(key: str, value: str):
    """`value` as the type of `key`; ConfigError naming the key when it does not parse."""
    typ = _CLI_KEYS[key]
    if typ is bool:
        if value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
    else:
        try:
            return typ(value) if key != "stop" else value.replace("\\n", "\n").replace("\\t", "\t")
        except ValueError:
            pass
    raise ConfigError(f"generate: key '{key}' must be {typ.__name__}, got '{value}'")


def _parse_cli_options(overrides: list[str]) -> dict:
    """`key=value` options of `nlpattn generate`, typed; unknown keys are a ConfigError."""
    import difflib

    opts: dict = {key: [] for key in _REPEATABLE}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in _CLI_KEYS:
            close = difflib.get_close_matches(key, list(_CLI_KEYS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"generate: unknown key '{key}'{hint}; keys: {', '.join(_CLI_KEYS)}")
        if key in _REPEATABLE:
            opts[key].append(_typed(key, value))
        else:
            opts[key] = _typed(key, value)
    for key in ("num_samples", "batch_size"):
        if opts.get(key, 1) < 1:
            raise ConfigError(f"generate: key '{key}' must be >= 1, got {opts[key]}")
    return opts


def _cli_prompts(opts: dict) -> list[str]:
    """The prompts: every prompt=..., then one per line of prompt_file; [""] (start from bos) if none."""
    from pathlib import Path

    prompts = list(opts["prompt"])
    if "prompt_file" in opts:
        path = Path(opts["prompt_file"])
        try:
            prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"generate: key 'prompt_file': cannot read {path} ({e})") from None
    return prompts or [""]


def cli_main(args) -> int:
    """`nlpattn generate --run RUN prompt="..." [prompt=... stop=... max_new_tokens=50 top_p=0.9 ...]`."""
    from nlpattn.models import load_model
    from nlpattn.tokenizer import load_tokenizer

    opts = _parse_cli_options(args.overrides)
    cfg = SamplingConfig(**{k: opts[k] for k in _SAMPLING_KEYS if k in opts}, stop=opts["stop"])
    check_sampling(cfg)
    prompts = _cli_prompts(opts)
    run = args.run or args.init
    if not run:
        raise ConfigError('generate needs --run RUN_DIR (a causal-LM run) and prompt="..."')
    model, tok = load_model(run), load_tokenizer(run)
    if getattr(model, "task", "") != "clm":
        raise ConfigError(f"--run: {run} holds a '{model.task}' model; generate needs a causal LM (objective=clm)")
    batch = [p for p in prompts for _ in range(opts.get("num_samples", 1))]
    for g in generate_text(model, tok, batch, cfg, batch_size=opts.get("batch_size", 16)):
        print(g.prompt + g.text)
        print("---")
    return 0

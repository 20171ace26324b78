"""Text generation: greedy / temperature / top-k / top-p sampling with a KV cache for causal
LMs, and beam search for encoder-decoder models."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nlpattn.attention import KVCache


@dataclass
class SamplingConfig:
    """How the next token is chosen: temperature 0 (or top_k=1) means greedy."""

    max_new_tokens: int = 50
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    eos_id: int | None = None
    use_cache: bool = True
    seed: int | None = None


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set to -inf all but the top-k logits and outside the top-p nucleus. logits: (B, V)."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already cover top_p.
        drop_sorted = probs.cumsum(dim=-1) - probs > top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Pick the next token (B,) from last-position logits (B, V)."""
    if cfg.temperature == 0 or cfg.top_k == 1:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: nn.Module, input_ids: torch.Tensor, cfg: SamplingConfig | None = None) -> torch.Tensor:
    """Extend prompts (B, T0) by up to cfg.max_new_tokens tokens → (B, T0 + n).

    With the cache each step feeds one token and reuses past keys/values; without it the
    whole sequence is recomputed every step (same result, for checking).
    """
    cfg = cfg or SamplingConfig()
    model.eval()
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(cfg.seed)
    max_len = model.cfg.max_len
    # Bodies without a KV cache (RNN, CNN) recompute the prefix: same tokens, more work.
    cache = KVCache() if cfg.use_cache and model.body.supports_cache else None
    ids, step_input = input_ids, input_ids
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for _ in range(cfg.max_new_tokens):
        if ids.shape[1] >= max_len:
            break
        out = model(step_input, cache=cache) if cache is not None else model(ids)
        token = next_token(out.logits[:, -1], cfg, generator)
        if cfg.eos_id is not None:
            token = token.masked_fill(finished, cfg.eos_id)
            finished |= token == cfg.eos_id
        ids = torch.cat([ids, token[:, None]], dim=1)
        step_input = token[:, None]
        if cfg.eos_id is not None and bool(finished.all()):
            break
    return ids


@torch.no_grad()
def beam_search(model: nn.Module, input_ids: torch.Tensor, *, bos_id: int, eos_id: int,
                num_beams: int = 4, max_new_tokens: int = 50, length_penalty: float = 1.0,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Beam search for a Seq2SeqLM on one source sequence (1, S) → best target (1, T)."""
    model.eval()
    if input_ids.shape[0] != 1:
        raise ValueError(f"beam_search takes one source sequence, got batch {input_ids.shape[0]}")
    memory = model.encode(input_ids, attention_mask).hidden.expand(num_beams, -1, -1)  # (K, S, d)
    mem_mask = None if attention_mask is None else attention_mask.expand(num_beams, -1)
    beams = torch.full((num_beams, 1), bos_id, dtype=torch.long, device=input_ids.device)
    scores = torch.full((num_beams,), float("-inf"), device=input_ids.device)
    scores[0] = 0.0  # all beams start identical: keep one alive
    cache, done = KVCache(), []
    for _ in range(max_new_tokens):
        out = model.decode(beams[:, -1:], memory, mem_mask, cache=cache)
        logp = torch.log_softmax(model.head(out.hidden[:, -1])[0].float(), dim=-1)  # (K, V)
        total = (scores[:, None] + logp).view(-1)
        top, flat = total.topk(2 * num_beams)
        vocab = logp.shape[-1]
        keep_rows, keep_tokens, keep_scores = [], [], []
        for s, f in zip(top.tolist(), flat.tolist()):
            row, tok = divmod(f, vocab)
            if tok == eos_id:
                done.append((s / (beams.shape[1] ** length_penalty), beams[row].tolist() + [tok]))
            else:
                keep_rows.append(row), keep_tokens.append(tok), keep_scores.append(s)
            if len(keep_rows) == num_beams:
                break
        index = torch.tensor(keep_rows, device=beams.device)
        cache.reorder(index)
        beams = torch.cat([beams[index], torch.tensor(keep_tokens, device=beams.device)[:, None]], dim=1)
        scores = torch.tensor(keep_scores, device=beams.device)
        if len(done) >= num_beams and max(d[0] for d in done) > scores.max().item() / (beams.shape[1] ** length_penalty):
            break
    if not done:
        done = [(scores[0].item(), beams[0].tolist())]
    best = max(done, key=lambda d: d[0])[1]
    return torch.tensor([best], device=input_ids.device)


_CLI_KEYS = {"prompt": str, "max_new_tokens": int, "temperature": float, "top_k": int, "top_p": float,
             "seed": int, "num_samples": int}


def _parse_cli_options(overrides: list[str]) -> dict:
    """`key=value` options of `nlpattn generate`, typed; unknown keys are a ConfigError."""
    import difflib

    from nlpattn.errors import ConfigError

    opts = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in _CLI_KEYS:
            close = difflib.get_close_matches(key, list(_CLI_KEYS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"generate: unknown key '{key}'{hint}; keys: {', '.join(_CLI_KEYS)}")
        try:
            opts[key] = _CLI_KEYS[key](value)
        except ValueError:
            raise ConfigError(f"generate: key '{key}' must be {_CLI_KEYS[key].__name__}, got '{value}'") from None
    return opts


def cli_main(args) -> int:
    """`nlpattn generate --run RUN prompt="..." max_new_tokens=50 top_p=0.9 [temperature top_k seed]`."""
    from nlpattn.errors import ConfigError
    from nlpattn.models import load_model
    from nlpattn.tokenizer import load_tokenizer

    opts = _parse_cli_options(args.overrides)
    run = args.run or args.init
    if not run:
        raise ConfigError('generate needs --run RUN_DIR (a causal-LM run) and prompt="..."')
    model, tok = load_model(run), load_tokenizer(run)
    if getattr(model, "task", "") != "clm":
        raise ConfigError(f"--run: {run} holds a '{model.task}' model; generate needs a causal LM (objective=clm)")
    ids = tok.encode(opts.get("prompt", "")) or [tok.bos_id]
    cfg = SamplingConfig(max_new_tokens=opts.get("max_new_tokens", 50), temperature=opts.get("temperature", 1.0),
                         top_k=opts.get("top_k"), top_p=opts.get("top_p"), eos_id=tok.eos_id, seed=opts.get("seed"))
    prompts = torch.tensor([ids] * opts.get("num_samples", 1))
    for row in generate(model, prompts, cfg).tolist():
        print(tok.decode(row))
        print("---")
    return 0

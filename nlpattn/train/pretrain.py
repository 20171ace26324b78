"""Pretraining: `objective` mlm (encoder) | clm (decoder) | seq2seq (encoder-decoder, span
corruption) | electra (encoder, replaced-token detection) from text files, through the Trainer.

`run_pretrain(cfg)` makes a self-contained run directory: config.yaml (fully resolved), the
tokenizer, the token cache, metrics.jsonl, tb/, checkpoints/, model.safetensors + model.json and
summary.json. `nlpattn pretrain --config X [k=v ...]` and scripts/pretrain/*.py call it;
`accelerate launch` runs it on several processes with no code change.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch

from nlpattn.config import OBJECTIVE_ARCH, Config, load_config, to_yaml, validate
from nlpattn.errors import ConfigError, NlpattnError
from nlpattn.fileio import atomic_write_text

TASK = {"mlm": "mlm", "clm": "clm", "seq2seq": "seq2seq", "electra": "electra"}
BIDIRECTIONAL = ("mlm", "electra")  # objectives whose encoder reads both directions
IGNORE_INDEX = -100


def resolve_objective(cfg: Config) -> Config:
    """Set model.arch from the objective; ConfigError for a body/arch the objective cannot use."""
    want = OBJECTIVE_ARCH.get(cfg.objective)
    if want is None:
        raise ConfigError(f"objective: must be one of {', '.join(OBJECTIVE_ARCH)}; got '{cfg.objective}'")
    m = cfg.model
    if m.arch not in ("encoder", want):  # "encoder" is the default: taken as unset
        raise ConfigError(f"model.arch: objective={cfg.objective} needs arch '{want}', got '{m.arch}'")
    if cfg.objective in BIDIRECTIONAL and m.bidirectional is False:
        raise ConfigError(f"model.bidirectional: objective={cfg.objective} needs a bidirectional body; "
                          f"model.body='{m.body}' with bidirectional=false is causal-only")
    _check_body_capability(cfg.objective, m.body)
    _check_sentinels(cfg)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(m, arch=want))
    validate(cfg, "<config>")
    return cfg


def _check_body_capability(objective: str, body: str) -> None:
    from nlpattn.bodies import BODY_REGISTRY, _import_bodies

    _import_bodies()
    cls = BODY_REGISTRY.get("lstm" if body in ("lstm", "gru") else body)
    if cls is None:
        raise ConfigError(f"model.body: '{body}' is not available (have: {sorted(BODY_REGISTRY)})")
    cls = cls()
    if objective in BIDIRECTIONAL and not cls.bidirectional_ok:
        raise ConfigError(f"model.body: '{body}' is causal-only; objective={objective} needs a bidirectional body")
    if objective in ("clm", "seq2seq") and not cls.causal_ok:
        raise ConfigError(f"model.body: '{body}' cannot run causally; objective={objective} needs a decoder")


def _check_sentinels(cfg: Config) -> None:
    """seq2seq with a tokenizer still to train: enough sentinels, checked before any work."""
    from nlpattn.data.collate import spans_needed

    d = cfg.data
    if cfg.objective != "seq2seq" or cfg.tokenizer.path:
        return
    need = spans_needed(d.block_size, d.noise_density, d.mean_span_length)
    if need > cfg.tokenizer.n_sentinels:
        raise ConfigError(f"tokenizer.n_sentinels: span corruption of data.block_size={d.block_size} needs "
                          f"{need} sentinels, the tokenizer would have {cfg.tokenizer.n_sentinels}")


def make_collator(cfg: Config, tok):
    """The collator of the objective (MLM masking — also ELECTRA's generator input —, CLM labels,
    T5 span corruption)."""
    from nlpattn.data.collate import CLMCollator, MLMCollator, SpanCorruptionCollator

    d = cfg.data
    if cfg.objective in BIDIRECTIONAL:
        return MLMCollator(tok, d.mlm_probability, d.whole_word_mask, cls_sep=d.cls_sep)
    if cfg.objective == "clm":
        return CLMCollator(tok)
    collator = SpanCorruptionCollator(tok, d.noise_density, d.mean_span_length)
    need = collator.spans_needed(d.block_size)
    if need > len(tok.sentinel_ids):
        raise ConfigError(f"tokenizer.n_sentinels: span corruption of data.block_size={d.block_size} needs "
                          f"{need} sentinels, the tokenizer has {len(tok.sentinel_ids)}")
    return collator


def predictions(objective: str, batch: dict, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(number of predicted tokens, number predicted correctly) of one LM batch."""
    labels = batch["labels"]
    if objective == "mlm":  # logits cover the masked positions only, row-major
        keep = labels != IGNORE_INDEX
        return keep.sum(), (logits.argmax(-1) == labels[keep]).sum()
    if objective == "clm":
        logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != IGNORE_INDEX
    return keep.sum(), ((logits.argmax(-1) == labels) & keep).sum()


def lm_eval_fn(objective: str, dataset, batch_size: int, collate, max_batches: int | None):
    """An eval function: token-weighted loss, perplexity and accuracy over the validation blocks
    (for electra, the generator's and the detector's: see detection_eval_fn)."""
    if objective == "electra":
        return detection_eval_fn(dataset, batch_size, collate, max_batches)

    def batch_sums(model, batch: dict) -> torch.Tensor:
        out = model(**batch)
        n, correct = predictions(objective, batch, out.logits)
        return torch.stack([out.loss.double() * n, n.double(), correct.double()])

    def evaluate(model, accelerator) -> dict:
        """Loss, perplexity and accuracy over every process's share of the batches."""
        total = gathered_sums(model, accelerator, dataset, batch_size, collate, max_batches, batch_sums, 3)
        loss = total[0] / max(total[1], 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 700)), "accuracy": total[2] / max(total[1], 1)}

    return evaluate


def gathered_sums(model, accelerator, dataset, batch_size: int, collate, max_batches: int | None,
                  batch_sums, width: int) -> list[float]:
    """`batch_sums(model, batch)` (`width` float64 values) summed over this process's share of the
    validation batches, then over every process."""
    from nlpattn.data.blocks import validation_batches

    sums = torch.zeros(width, dtype=torch.float64, device=accelerator.device)
    for b, batch in enumerate(validation_batches(dataset, batch_size, collate)):
        if max_batches is not None and b >= max_batches:
            break
        if b % accelerator.num_processes != accelerator.process_index:
            continue
        batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        sums += batch_sums(model, batch).to(sums.device)
    return accelerator.gather_for_metrics(sums[None]).sum(0).tolist()


EVAL_SAMPLING_SEED = 1234


def detection_eval_fn(dataset, batch_size: int, collate, max_batches: int | None):
    """ELECTRA's eval function: the generator's masked-token loss, perplexity and accuracy, the
    detector's loss and accuracy over real tokens, and the fraction of tokens replaced. The
    generator's samples are drawn from a fixed seed (the same corruption at every evaluation) on a
    forked RNG (training's random stream is not disturbed)."""

    def evaluate(model, accelerator) -> dict:
        """The metrics over every process's share of the batches."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(EVAL_SAMPLING_SEED + accelerator.process_index)
            s = gathered_sums(model, accelerator, dataset, batch_size, collate, max_batches, detection_sums, 7)
        mlm_loss = s[0] / max(s[1], 1)
        return {"loss": mlm_loss, "ppl": math.exp(min(mlm_loss, 700)), "accuracy": s[2] / max(s[1], 1),
                "detection_loss": s[3] / max(s[4], 1), "detection_accuracy": s[5] / max(s[4], 1),
                "replaced": s[6] / max(s[4], 1)}

    return evaluate


def detection_sums(model, batch: dict) -> torch.Tensor:
    """One batch's sums for detection_eval_fn: masked tokens (generator loss·n, n, correct), then
    real tokens (detection loss·n, n, correct, replaced)."""
    out = model(**batch)
    labels, mask = batch["labels"], batch.get("attention_mask")
    masked = labels != IGNORE_INDEX
    real = torch.ones_like(masked) if mask is None else mask.bool()
    n_masked, n_real = masked.sum(), real.sum()
    gen_correct = (out.parts["generator_logits"].argmax(-1) == labels[masked]).sum()  # rows: masked, row-major
    replaced = out.parts["replaced"]
    det_correct = (((out.logits > 0) == replaced) & real).sum()
    return torch.stack([out.parts["mlm_loss"].double() * n_masked, n_masked.double(), gen_correct.double(),
                        out.parts["detection_loss"].double() * n_real, n_real.double(), det_correct.double(),
                        (replaced & real).sum().double()])


def _batches_class():
    from nlpattn.data.blocks import BlockLoader

    class PretrainBatches(BlockLoader):
        """BlockLoader plus `epoch` (passes over the training tokens) for the logs."""

        @property
        def epoch(self) -> float:
            """Passes over the training windows so far (all processes)."""
            return self.batches * self.world_size * self.batch_size / max(1, len(self.dataset))

    return PretrainBatches


def prepare_data(cfg: Config, accelerator, setup_s: dict | None = None):
    """Tokenizer (loaded, or trained into the run dir) and train/valid token caches; their
    wall times (s) go into `setup_s` as "tokenizer" and "cache" when it is given."""
    from nlpattn.data.corpus import build_corpus
    from nlpattn.tokenizer import train_or_load

    run_dir = Path(cfg.output_dir)
    setup_s = {} if setup_s is None else setup_s
    with accelerator.main_process_first():
        t0 = time.perf_counter()
        tok = train_or_load(cfg)
        if accelerator.is_main_process and not any((run_dir / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
            tok.save(run_dir)  # a run directory is self-contained
        t1 = time.perf_counter()
        train_cache, valid_cache = build_corpus(cfg, tok)
        setup_s.update(tokenizer=round(t1 - t0, 3), cache=round(time.perf_counter() - t1, 3))
    return tok, train_cache, valid_cache


def run_pretrain(cfg: Config, accelerator=None) -> dict:
    """Pretrain the model `cfg` describes on `cfg.data`; returns the run summary."""
    from nlpattn.rundir import RunDirGuard
    from nlpattn.train.loop import make_accelerator
    from nlpattn.train.memory import check_memory

    cfg = resolve_objective(cfg)
    source = load_init(cfg)  # a wrong init fails in seconds, before the data and the run directory
    if source is not None:
        cfg = with_init(cfg, source)
    check_memory(cfg)
    acc = accelerator if accelerator is not None else make_accelerator(cfg.train)
    with RunDirGuard(cfg.output_dir, is_main=acc.is_main_process):
        check_resume_settings(cfg)  # a refused resume fails here, before anything is written
        return _pretrain(cfg, acc, source)


def check_resume_settings(cfg: Config) -> None:
    """ConfigError/CheckpointError now if `train.resume` cannot be honoured with these settings."""
    from nlpattn.config import to_dict
    from nlpattn.rundir import check_resume_from
    from nlpattn.train.checkpoint import resolve_resume, resume_candidates

    candidates = resume_candidates(cfg.train.resume, cfg.output_dir)
    if candidates:
        check_resume_from(to_dict(cfg), candidates[0])
        resolve_resume(cfg.train.resume, cfg.output_dir)  # every file of one checkpoint reads and checks out


def _pretrain(cfg: Config, acc, source=None) -> dict:
    from accelerate.utils import set_seed

    from nlpattn.data.blocks import RandomBlocks, SequentialBlocks
    from nlpattn.models import build_model
    from nlpattn.train.loop import Trainer
    from nlpattn.train.runtime import set_threads

    set_threads(cfg.train, acc)
    setup_s: dict = {}
    tok, train_cache, valid_cache = prepare_data(cfg, acc, setup_s)
    if acc.is_main_process:
        print(f"tokenizer {setup_s['tokenizer']:.1f}s, token cache {setup_s['cache']:.1f}s "
              f"({len(train_cache):,} training tokens)", flush=True)
    if source is None:  # a continued model keeps init's vocabulary size and padding id
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size,
                                                                 pad_token_id=tok.pad_id))
    validate(cfg, "<config>")
    set_seed(cfg.train.seed)
    t, d = cfg.train, cfg.data
    model = source if source is not None else build_model(cfg.model, TASK[cfg.objective], init_std=t.init_std)
    collate = make_collator(cfg, tok)
    blocks = RandomBlocks(train_cache, d.block_size, seed=t.seed)
    batches = _batches_class()(blocks, t.batch_size, collate, seed=t.seed,
                               rank=acc.process_index, world_size=acc.num_processes)
    eval_fn = final_fn = None
    if valid_cache is not None:
        valid = SequentialBlocks(valid_cache, d.block_size)
        ebs = t.eval_batch_size or t.batch_size
        eval_fn = lm_eval_fn(cfg.objective, valid, ebs, collate, t.eval_batches)
        final_fn = lm_eval_fn(cfg.objective, valid, ebs, collate, t.final_eval_batches)
    trainer = Trainer(model, cfg.train, batches, cfg.output_dir, eval_fn=eval_fn, final_eval_fn=final_fn,
                      accelerator=acc, summary_extra={"objective": cfg.objective, "run_dir": cfg.output_dir,
                                                      "train_tokens_available": len(train_cache),
                                                      "setup_s": setup_s},
                      setup_s=sum(setup_s.values()))
    config_yaml = Path(cfg.output_dir) / "config.yaml"
    return trainer.fit(on_start=lambda: atomic_write_text(config_yaml, to_yaml(cfg)))


def load_init(cfg: Config):
    """The model of `cfg.init` for continued pretraining (a run dir, one of its checkpoints,
    or a transformers directory), or None without init; refused unless it does this objective and
    tokenizer.path, if set, is its tokenizer."""
    if not cfg.init:
        return None
    from nlpattn.train.finetune import check_init_fits, load_source

    tok, model = load_source(cfg.init)
    if model.task != TASK[cfg.objective]:
        raise ConfigError(f"init: {cfg.init} is a {model.task} model; objective={cfg.objective} continues "
                          f"only a {TASK[cfg.objective]} model")
    check_init_fits(cfg, tok, model)
    return model


def with_init(cfg: Config, model) -> Config:
    """`cfg` continuing `model`: its model config, and its tokenizer unless tokenizer.path names one
    (set here, before the resume check, so that a resumed run compares the same settings)."""
    from nlpattn.train.finetune import source_tokenizer_dir

    tokenizer = cfg.tokenizer if cfg.tokenizer.path else dataclasses.replace(
        cfg.tokenizer, path=str(source_tokenizer_dir(cfg.init)))
    return dataclasses.replace(cfg, model=model.cfg, tokenizer=tokenizer)


def _report(summary: dict) -> None:
    ppl = summary.get("final_ppl")
    print(f"pretrain {summary['objective']}: {summary['steps']} steps, {summary['tokens']:,} tokens, "
          f"{summary['wall_s']:.1f}s ({summary['tokens_per_s'] or 0:,.0f} tokens/s); "
          f"val loss {summary.get('final_val_loss')}, ppl {ppl}; run dir {summary['run_dir']}", flush=True)


def _exit_code(summary: dict) -> int:
    reason = summary.get("stop_reason")
    return 128 + signal.Signals[reason].value if reason in ("SIGINT", "SIGTERM") else 0


def cli_main(args: argparse.Namespace) -> int:
    """`nlpattn pretrain --config X [k=v ...]`: returns 0, or 128+signal after a signal stop."""
    cfg = load_config(args.config, args.overrides)
    summary = run_pretrain(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        _report(summary)
    return _exit_code(summary)


def script_main(objective: str, argv: list[str] | None = None) -> int:
    """scripts/pretrain/<objective>.py: `--config X [k=v ...]` with the objective forced."""
    parser = argparse.ArgumentParser(description=f"pretrain with objective={objective}")
    parser.add_argument("--config", default=None, help="YAML config file")
    parser.add_argument("overrides", nargs="*", default=[], help="key=value overrides")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from nlpattn.allocator import apply_from_environment

    apply_from_environment()  # as the nlpattn command does
    try:
        cfg = load_config(args.config, [*args.overrides, f"objective={objective}"])
        summary = run_pretrain(cfg)
    except NlpattnError as e:
        print(f"pretrain {objective}: error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        _report(summary)
    return _exit_code(summary)

"""GLUE fine-tuning of one task through the Trainer: `run_finetune(cfg)`, `nlpattn finetune`.

The model starts from `init` — one of our run directories (any body and objective: an MLM or
seq2seq encoder, a CLM decoder), a local transformers BERT/GPT-2 directory, or nothing (from
scratch, with a tokenizer trained on `data.train_files`) — and gets a classification or
regression head. The run directory gets eval/<task>.json (official metrics on dev),
predictions/<task>-dev.tsv, predictions/<task>.tsv for the test split when its file exists
(GLUE submission format), metrics.jsonl, tb/, checkpoints/, the model and the tokenizer.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path

import torch

from nlpattn.config import Config, load_config, to_yaml, validate
from nlpattn.errors import CheckpointError, ConfigError
from nlpattn.fileio import atomic_write_json, atomic_write_text

DEFAULT_CONFIG = "configs/finetune/glue.yaml"


# --- the model and tokenizer to start from --------------------------------------------------

def source_tokenizer_dir(init: str) -> Path:
    """Where `init`'s tokenizer lives: its run directory for a checkpoint, else init itself."""
    path = Path(init)
    return path.parent.parent if path.parent.name == "checkpoints" else path


def load_source(init: str):
    """(tokenizer, pretrained model) from one of our run dirs or a transformers directory."""
    from nlpattn.tokenizer import load_tokenizer

    path = Path(init)
    checkpoint = path.parent.name == "checkpoints" and (path / "model.safetensors").is_file()
    if (path / "model.json").is_file() or checkpoint:
        from nlpattn.models import load_model

        model = load_model(path)  # a checkpoint's tokenizer is its run's
        return load_tokenizer(source_tokenizer_dir(init)), model
    if (path / "config.json").is_file():
        from nlpattn.interop.hf import load_transformers_dir

        return load_tokenizer(path), load_transformers_dir(path, "mlm")
    if not path.exists():
        raise CheckpointError(f"init: {init} does not exist")
    raise CheckpointError(f"init: {init} has no model.json + model.safetensors (an nlpattn run) "
                          f"nor config.json (a transformers model): no weights to start from")


def check_init_fits(cfg: Config, tok, model) -> None:
    """ConfigError unless `cfg.tokenizer.path` (when set) is init's own tokenizer and the tokenizer
    fits the model's vocabulary: a pretrained model only understands its own tokenizer."""
    from nlpattn.tokenizer import load_tokenizer

    if cfg.tokenizer.path and load_tokenizer(cfg.tokenizer.path).hash() != tok.hash():
        raise ConfigError(f"tokenizer.path: {cfg.tokenizer.path} differs from the tokenizer of "
                          f"init={cfg.init}; a pretrained model only understands its own tokenizer")
    if tok.vocab_size > model.cfg.vocab_size:
        raise ConfigError(f"init: {cfg.init} has a tokenizer of {tok.vocab_size} tokens but a model "
                          f"vocabulary of {model.cfg.vocab_size}")


def with_dropout(model_cfg, dropout: float | None):
    """`model_cfg` with every dropout (attention's too) at `dropout`; unchanged when it is None."""
    if dropout is None:
        return model_cfg
    return dataclasses.replace(model_cfg, dropout=dropout, attention_dropout=None)


def classifier_from(source: torch.nn.Module, num_labels: int, pooling: str | None = None,
                    dropout: float | None = None) -> torch.nn.Module:
    """A SequenceClassifier whose embeddings and body are `source`'s (a seq2seq model gives its
    encoder); only the new head is freshly initialised, pooling `pooling` and with every dropout
    at `dropout` if given."""
    from nlpattn.models import SequenceClassifier

    cfg, state = with_dropout(source.cfg, dropout), source.state_dict()
    if pooling is not None:
        cfg = dataclasses.replace(cfg, pooling=pooling)
    if source.task == "seq2seq":
        cfg = dataclasses.replace(cfg, arch="encoder")
        state = {k.replace("encoder.", "body.", 1): v for k, v in state.items() if k.startswith("encoder.")}
        state.update({k: v for k, v in source.state_dict().items() if k.startswith("embeddings.")})
    trunk = {k: v for k, v in state.items() if k.startswith(("embeddings.", "body."))}
    model = SequenceClassifier(cfg, num_labels=num_labels)
    missing, unexpected = model.load_state_dict(trunk, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise CheckpointError(f"init: weights do not fit the classifier (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    return model


def init_model(cfg: Config, num_labels: int, accelerator):
    """(tokenizer, classifier) for `cfg.init`; from scratch when init is empty."""
    from nlpattn.models import build_model
    from nlpattn.tokenizer import load_tokenizer, train_or_load

    if cfg.init:
        tok, source = load_source(cfg.init)
        check_init_fits(cfg, tok, source)
        return tok, classifier_from(source, num_labels, cfg.model.pooling, cfg.glue.dropout)
    with accelerator.main_process_first():
        tok = train_or_load(cfg)
    mcfg = dataclasses.replace(with_dropout(cfg.model, cfg.glue.dropout), vocab_size=tok.vocab_size,
                               pad_token_id=tok.pad_id)
    task = "regression" if num_labels == 1 else "classification"
    return tok, build_model(mcfg, task, num_labels, init_std=cfg.train.init_std)


# --- evaluation -----------------------------------------------------------------------------

def glue_encoding(cfg: Config) -> tuple[int, str, int]:
    """(max_length, truncation, head_tokens) for `encode_glue`, from cfg.glue."""
    return cfg.glue.max_length, cfg.glue.truncation, cfg.glue.head_tokens


def metric_name(task, split: str) -> str:
    """The GLUE metric config of a dev split: mnli's dev_matched → mnli_matched."""
    if task.name == "mnli":
        return "mnli_mismatched" if "mismatched" in split else "mnli_matched"
    return task.name


@torch.no_grad()
def predict(model, examples: list[dict], collate, batch_size: int, accelerator) -> torch.Tensor:
    """Logits (N, num_labels) of `examples` in their order, computed across all processes."""
    from nlpattn.data.epochs import sorted_eval_order

    order = sorted_eval_order(examples)
    loader = torch.utils.data.DataLoader([examples[i] for i in order], batch_size=batch_size,
                                         shuffle=False, collate_fn=collate)
    loader = accelerator.prepare_data_loader(loader, device_placement=True)
    chunks = []
    for batch in loader:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        chunks.append(accelerator.gather_for_metrics(logits.float()).cpu())
    logits = torch.cat(chunks)
    out = torch.empty_like(logits)
    out[torch.tensor(order)] = logits
    return out


def to_predictions(task, logits: torch.Tensor) -> list:
    """Class ids (argmax) or regression scores from logits."""
    return logits.squeeze(-1).tolist() if task.is_regression else logits.argmax(-1).tolist()


def score(task, split: str, logits: torch.Tensor, labels: list) -> dict:
    """Official GLUE metric(s) and the loss of one dev split."""
    from nlpattn.metrics import load_glue_metric

    target = torch.tensor(labels, dtype=torch.float32 if task.is_regression else torch.long)
    if task.is_regression:
        loss = torch.nn.functional.mse_loss(logits.squeeze(-1), target)
    else:
        loss = torch.nn.functional.cross_entropy(logits, target)
    metric = load_glue_metric(metric_name(task, split))
    result = metric.compute(predictions=to_predictions(task, logits), references=labels)
    return {"loss": float(loss), **{k: float(v) for k, v in result.items()}}


class GlueEvaluator:
    """Eval function for the Trainer: metrics on every dev split (first split unprefixed)."""

    def __init__(self, task, dev: dict[str, list[dict]], collate, batch_size: int) -> None:
        self.task, self.dev, self.collate, self.batch_size = task, dev, collate, batch_size
        self.results: dict[str, dict] = {}
        self.logits: dict[str, torch.Tensor] = {}

    def __call__(self, model, accelerator) -> dict:
        flat = {}
        for i, (split, examples) in enumerate(self.dev.items()):
            logits = predict(model, examples, self.collate, self.batch_size, accelerator)
            self.logits[split] = logits
            self.results[split] = score(self.task, split, logits, [e["label"] for e in examples])
            prefix = "" if i == 0 else f"{split}/"
            flat.update({prefix + k: v for k, v in self.results[split].items()})
        return flat


# --- outputs --------------------------------------------------------------------------------

def _label_text(task, prediction) -> str:
    """A prediction as GLUE's submission files write it (label names for NLI tasks)."""
    if task.is_regression:
        return f"{min(5.0, max(0.0, prediction)):.3f}"
    raw = task.raw_labels[prediction] if task.raw_labels else str(prediction)
    return raw


def write_predictions(path: Path, task, examples, predictions: list, with_gold: bool) -> None:
    """`index<TAB>prediction` rows (plus the gold label for dev), written atomically."""
    header = "index\tprediction" + ("\tlabel" if with_gold else "")
    rows = [header]
    for i, (ex, pred) in enumerate(zip(examples, predictions)):
        row = f"{i}\t{_label_text(task, pred)}"
        if with_gold:
            row += f"\t{_label_text(task, ex.label)}"
        rows.append(row)
    atomic_write_text(path, "\n".join(rows) + "\n")


def write_outputs(cfg: Config, task, evaluator: GlueEvaluator, raw_dev: dict, model, tok,
                  collate, accelerator, summary: dict) -> dict:
    """eval/<task>.json and predictions/*.tsv (dev, and test when its file exists)."""
    from nlpattn.data.glue import encode_glue, read_glue_split, split_file

    run = Path(cfg.output_dir)
    test_written = []
    for split in task.test_splits:
        if split_file(task, split, cfg.glue.data_dir) is None:
            continue
        examples = read_glue_split(task, split, cfg.glue.data_dir)
        logits = predict(model, encode_glue(examples, tok, *glue_encoding(cfg)), collate,
                         cfg.train.eval_batch_size or cfg.train.batch_size, accelerator)
        name = task.name if len(task.test_splits) == 1 else f"{task.name}-{split.split('_')[-1]}"
        if accelerator.is_main_process:
            write_predictions(run / "predictions" / f"{name}.tsv", task, examples, to_predictions(task, logits), False)
        test_written.append(f"predictions/{name}.tsv")
    report = {"task": task.name, "init": cfg.init, "dev": evaluator.results,
              "metrics": {metric_name(task, s): {k: v for k, v in r.items() if k != "loss"}
                          for s, r in evaluator.results.items()},
              "test_predictions": test_written, "steps": summary.get("steps"),
              "wall_s": summary.get("wall_s"), "train_examples": summary.get("train_examples"),
              "run_dir": str(run)}
    if accelerator.is_main_process:
        for split, examples in raw_dev.items():
            write_predictions(run / "predictions" / f"{task.name}-{split}.tsv", task, examples,
                              to_predictions(task, evaluator.logits[split]), True)
        atomic_write_json(run / "eval" / f"{task.name}.json", report)
    return report


# --- the run ----------------------------------------------------------------------------------

def _steps(cfg: Config, batches) -> Config:
    """train.max_steps from train.epochs (when set) and the number of batches per epoch."""
    t = cfg.train
    if t.epochs is None:
        return cfg
    steps = max(1, math.ceil(t.epochs * batches.batches_per_epoch / t.grad_accum))
    return dataclasses.replace(cfg, train=dataclasses.replace(t, max_steps=steps))


def subset(examples: list, n: int | None) -> list:
    """A fixed random subset of `n` examples (seed 0, original order kept); all when n is None or larger."""
    if n is None or n >= len(examples):
        return examples
    import random

    keep = sorted(random.Random(0).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def run_finetune(cfg: Config, accelerator=None) -> dict:
    """Fine-tune on `cfg.task`; returns the eval report (also written to eval/<task>.json)."""
    from nlpattn.data.glue import check_glue_dir, check_truncation, get_task
    from nlpattn.rundir import RunDirGuard
    from nlpattn.train.loop import make_accelerator

    if not cfg.task:
        from nlpattn.data.glue import GLUE_TASKS

        raise ConfigError(f"task: required, one of {', '.join(GLUE_TASKS)}")
    task = get_task(cfg.task)
    if not task.train:
        raise ConfigError(f"task: '{task.name}' is test-only (no training split)")
    check_glue_dir(cfg.glue.data_dir)
    check_truncation(task, cfg.glue.truncation)
    acc = accelerator if accelerator is not None else make_accelerator(cfg.train)
    with RunDirGuard(cfg.output_dir, is_main=acc.is_main_process):
        return _finetune(cfg, task, acc)


def _finetune(cfg: Config, task, acc) -> dict:
    from accelerate.utils import set_seed

    from nlpattn.data.collate import ClassificationCollator
    from nlpattn.data.epochs import GROUP_WINDOW, EpochBatches
    from nlpattn.data.glue import encode_glue, read_glue_split
    from nlpattn.train.loop import Trainer
    from nlpattn.train.pretrain import check_resume_settings
    from nlpattn.train.runtime import set_threads

    set_threads(cfg.train, acc)
    set_seed(cfg.train.seed)
    # The task files are read (and checked) first: a bad row must fail before a tokenizer is trained
    # and saved into the run directory.
    train_raw = subset(read_glue_split(task, "train", cfg.glue.data_dir), cfg.glue.max_train_examples)
    raw_dev = {s: subset(read_glue_split(task, s, cfg.glue.data_dir), cfg.glue.max_eval_examples)
               for s in task.dev_splits}
    tok, model = init_model(cfg, task.num_labels, acc)
    cfg = dataclasses.replace(cfg, model=model.cfg)
    check_resume_settings(cfg)  # before anything is written to the run directory
    collate = ClassificationCollator(tok.pad_id, task.is_regression, padding=cfg.glue.padding,
                                     max_length=cfg.glue.max_length)
    batches = EpochBatches(encode_glue(train_raw, tok, *glue_encoding(cfg)), cfg.train.batch_size, collate,
                           seed=cfg.train.seed, rank=acc.process_index, world_size=acc.num_processes,
                           group=GROUP_WINDOW if cfg.train.group_by_length else 1)
    cfg = _steps(cfg, batches)
    validate(cfg, "<config>")
    run = Path(cfg.output_dir)
    dev = {s: encode_glue(ex, tok, *glue_encoding(cfg)) for s, ex in raw_dev.items()}
    evaluator = GlueEvaluator(task, dev, collate, cfg.train.eval_batch_size or cfg.train.batch_size)
    trainer = Trainer(model, cfg.train, batches, run, eval_fn=evaluator, accelerator=acc,
                      tokens_fn=lambda b: int(b["attention_mask"].sum()),
                      summary_extra={"task": task.name, "run_dir": str(run), "train_examples": len(train_raw)})

    def write_run_files() -> None:
        atomic_write_text(run / "config.yaml", to_yaml(cfg))
        tok.save(run)

    summary = trainer.fit(on_start=write_run_files)
    if summary.get("stop_reason") in ("SIGINT", "SIGTERM"):
        return {"task": task.name, "stopped": summary["stop_reason"], "run_dir": str(run)}
    return write_outputs(cfg, task, evaluator, raw_dev, trainer.model, tok, collate, acc, summary)


def report_line(report: dict) -> str:
    """One line: the task, its official metrics (×100) and the time it took."""
    if "metrics" not in report:
        return f"{report['task']}: stopped by {report.get('stopped')} (resume with train.resume=auto)"
    parts = [f"{name} " + ", ".join(f"{k} {100 * v:.1f}" for k, v in m.items())
             for name, m in report["metrics"].items()]
    return f"{report['task']}: " + "; ".join(parts) + f" ({report['steps']} steps, {report['wall_s']:.0f}s)"


def config_path(args_config: str | None) -> str:
    """The config file to use: the one given, or the default GLUE config of the repository."""
    if args_config:
        return args_config
    here = Path(DEFAULT_CONFIG)
    return str(here if here.is_file() else Path(__file__).resolve().parents[2] / DEFAULT_CONFIG)


def cli_main(args: argparse.Namespace) -> int:
    """`nlpattn finetune --config configs/finetune/glue.yaml task=sst2 init=runs/mlm-small`."""
    overrides = list(args.overrides) + ([f"init={args.init}"] if args.init else [])
    report = run_finetune(load_config(config_path(args.config), overrides))
    if int(os.environ.get("RANK", "0")) == 0:
        print(report_line(report), flush=True)
        print(f"run directory: {report['run_dir']}")
    return 0 if "metrics" in report else 130


def cli_glue(args: argparse.Namespace) -> int:
    """`nlpattn glue --init RUN [tasks=cola,sst2] [k=v ...]`: every task, then the scoreboard."""
    from nlpattn.train.glue_suite import run_glue

    tasks = [o.split("=", 1)[1] for o in args.overrides if o.startswith("tasks=")]
    overrides = [o for o in args.overrides if not o.startswith("tasks=")]
    run_glue(args.init, tasks[0].split(",") if tasks else None, overrides, args.out)
    return 0

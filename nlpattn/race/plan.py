"""What a race runs: the config of every body run and fine-tuning run, checked before anything
starts (bodies, tasks, budgets, capabilities, matched parameter counts), and `pick_best`.

Run directories under `output_dir`: `tokenizer/`, `cache/` (one token cache for every body),
`sweep/<body>/lr-<lr>/`, `pretrain/<body>/`, `finetune/<body>/<task>[-<length>]/seed-<s>/`.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from nlpattn.config import Config, load_config
from nlpattn.errors import ConfigError

# race body name → the model overrides that make it (the per-body sizes come from race.body_overrides)
BODY_BASE: dict[str, list[str]] = {
    "transformer": ["model.body=transformer"],
    "lstm": ["model.body=lstm", "model.bidirectional=true"],
    "gru": ["model.body=gru", "model.bidirectional=true"],
    "cnn": ["model.body=cnn"],
    "cnn-se": ["model.body=cnn", "model.se=true", "model.spatial=true"],
}
TASKS = ("sst2", "cola", "imdb")
TASK_METRIC = {"sst2": "accuracy", "cola": "matthews_correlation", "imdb": "accuracy"}
MIN_MINUTES = 1 / 60  # the rule for "a budget too small to take one step": under one second
CAPABILITY = {"mlm": "bidirectional_ok", "electra": "bidirectional_ok", "seq2seq": "bidirectional_ok",
              "clm": "causal_ok"}


@dataclass
class Job:
    """One fine-tuning run: body, task key (sst2 | cola | imdb-128 ...), seed, run dir, config."""

    body: str
    key: str
    seed: int
    run_dir: Path
    cfg: Config


def pick_best(losses: dict[float, float | None]) -> float:
    """The lr whose validation loss is lowest (non-finite or missing losses never win)."""
    finite = {lr: loss for lr, loss in losses.items() if loss is not None and loss == loss and loss != float("inf")}
    if not finite:
        raise ConfigError("race.lrs: no sweep run reached a finite validation loss; lower the lrs")
    return min(finite, key=lambda lr: (finite[lr], lr))


def task_counts(items: list[str], key: str) -> dict[str, int]:
    """`["sst2=2000", "imdb=500"]` → {task: n}; ConfigError naming `key` for a bad entry."""
    counts = {}
    for item in items:
        task, _, n = item.partition("=")
        if task not in TASKS or not n.isdigit() or int(n) < 1:
            raise ConfigError(f"{key}: '{item}' is not <task>=<count >= 1> with a task of {', '.join(TASKS)}")
        counts[task] = int(n)
    return counts


def body_extras(cfg: Config) -> dict[str, list[str]]:
    """race.body_overrides as {body: [key=value, ...]}."""
    extras: dict[str, list[str]] = {}
    for entry in cfg.race.body_overrides:
        name, *overrides = shlex.split(entry)
        if name not in BODY_BASE:
            raise ConfigError(f"race.body_overrides: unknown body '{name}' (have: {', '.join(BODY_BASE)})")
        extras.setdefault(name, []).extend(overrides)
    return extras


def check_race(cfg: Config) -> None:
    """ConfigError (one line naming the key) for bodies, tasks, budgets and seeds the race cannot run."""
    r = cfg.race
    unknown = [b for b in r.bodies if b not in BODY_BASE]
    if not r.bodies or unknown:
        what = f"unknown body '{unknown[0]}'" if unknown else "give at least one body"
        raise ConfigError(f"race.bodies: {what} (have: {', '.join(BODY_BASE)})")
    bad = [t for t in r.tasks if t not in TASKS]
    if bad:
        raise ConfigError(f"race.tasks: unknown task '{bad[0]}' (have: {', '.join(TASKS)})")
    for key in ("minutes", "sweep_minutes"):
        if not getattr(r, key) >= MIN_MINUTES:
            raise ConfigError(f"race.{key}: {getattr(r, key)} min is too small to take one training step "
                              f"(at least {MIN_MINUTES * 60:.0f} s = {MIN_MINUTES:.4f} min)")
    if not r.lrs or any(not lr > 0 for lr in r.lrs):
        raise ConfigError(f"race.lrs: give positive learning rates, got {r.lrs}")
    if r.seeds < 1:
        raise ConfigError(f"race.seeds: must be >= 1, got {r.seeds}")
    if "imdb" in r.tasks and (not r.imdb_lengths or min(r.imdb_lengths) < 8):
        raise ConfigError(f"race.imdb_lengths: give lengths >= 8, got {r.imdb_lengths}")
    task_counts(r.max_train_examples, "race.max_train_examples")
    task_counts(r.max_eval_examples, "race.max_eval_examples")
    body_extras(cfg)


def check_corpus(cfg: Config) -> None:
    """ConfigError naming the first corpus / task path that does not exist."""
    from glob import glob

    for key, paths in (("data.train_files", cfg.data.train_files), ("data.valid_files", cfg.data.valid_files)):
        for p in paths:
            if not p.startswith("glue:") and not glob(p):
                raise ConfigError(f"{key}: corpus path {p} does not exist")
    dirs = {"race.glue_dir": cfg.race.glue_dir} if set(cfg.race.tasks) - {"imdb"} else {}
    if "imdb" in cfg.race.tasks:
        dirs["race.imdb_dir"] = str(Path(cfg.race.imdb_dir) / "imdb")
    for key, d in dirs.items():
        if not Path(d).is_dir():
            raise ConfigError(f"{key}: {d} does not exist")


def body_config(cfg: Config, source: str | None, overrides: list[str], body: str, run_dir: Path,
                minutes: float, lr: float) -> Config:
    """The pretraining config of one body run: shared tokenizer and token cache, fresh start."""
    out = Path(cfg.output_dir)
    fixed = [f"output_dir={run_dir}", f"train.max_minutes={minutes}", f"train.lr={lr}", "train.resume=never",
             "train.progress=false", f"tokenizer.path={out / 'tokenizer'}", f"data.cache_dir={out / 'cache'}"]
    return load_config(source, [*overrides, *BODY_BASE[body], *body_extras(cfg).get(body, []), *fixed])


def check_bodies(cfg: Config, source: str | None, overrides: list[str], vocab_size: int) -> dict[str, dict]:
    """{body: {params_body, params_total}}; ConfigError if a body cannot do the objective or the
    body parameter counts differ by more than race.param_tolerance."""
    import dataclasses

    from nlpattn.bodies import BODY_REGISTRY, _import_bodies
    from nlpattn.models import build_model

    _import_bodies()
    need, counts = CAPABILITY[cfg.objective], {}
    for body in cfg.race.bodies:
        c = body_config(cfg, source, overrides, body, Path(cfg.output_dir) / "probe", 1.0, 1e-3)
        cls = BODY_REGISTRY["lstm" if c.model.body == "gru" else c.model.body]()
        if not getattr(cls, need):
            raise ConfigError(f"race.bodies: '{body}' cannot do the {cfg.objective} objective "
                              f"(its body is not {need})")
        model = build_model(dataclasses.replace(c.model, vocab_size=vocab_size), cfg.objective, init_std=None)
        counts[body] = {"params_body": sum(p.numel() for p in model.body.parameters()),
                        "params_total": model.num_parameters()}
    low, high = (f(v["params_body"] for v in counts.values()) for f in (min, max))
    if high > low * (1 + cfg.race.param_tolerance):
        sizes = ", ".join(f"{b} {v['params_body']:,}" for b, v in counts.items())
        raise ConfigError(f"race.body_overrides: body parameters differ by more than "
                          f"{cfg.race.param_tolerance:.0%} ({sizes}); adjust the sizes")
    return counts


def finetune_jobs(cfg: Config, inits: dict[str, Path]) -> list[Job]:
    """Every fine-tuning run: body × task (IMDB once per length) × seed, one recipe for all."""
    r, out = cfg.race, Path(cfg.output_dir)
    n_train = task_counts(r.max_train_examples, "race.max_train_examples")
    n_eval = task_counts(r.max_eval_examples, "race.max_eval_examples")
    jobs = []
    for body, init in inits.items():
        for task in r.tasks:
            lengths = r.imdb_lengths if task == "imdb" else [None]
            for length in lengths:
                key = task if length is None else f"{task}-{length}"
                for seed in range(r.seeds):
                    run_dir = out / "finetune" / body / key / f"seed-{seed}"
                    extra = [f"task={task}", f"init={init}", f"output_dir={run_dir}", f"train.seed={seed}",
                             "train.resume=never", "train.progress=false",
                             f"glue.data_dir={r.imdb_dir if task == 'imdb' else r.glue_dir}"]
                    if length is not None:
                        extra += [f"glue.max_length={length}", "glue.truncation=head+tail",
                                  f"glue.head_tokens={length // 4}"]
                    if task in n_train:
                        extra.append(f"glue.max_train_examples={n_train[task]}")
                    if task in n_eval:
                        extra.append(f"glue.max_eval_examples={n_eval[task]}")
                    c = load_config(r.finetune_config, [*r.finetune_overrides, *extra])
                    jobs.append(Job(body, key, seed, run_dir, c))
    return jobs

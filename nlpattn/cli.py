"""The `nlpattn` command: parse `--flags` and `key=value` overrides, dispatch to the API.

Each subcommand lives in the module that owns the concept and is imported only when used,
so `nlpattn --help` stays fast. Any `NlpattnError` becomes one line on stderr and exit 2.
Before dispatching, the process keeps freed memory for reuse (`nlpattn.allocator`).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand → (module:function, help). The function takes the parsed argparse namespace.
COMMANDS: dict[str, tuple[str, str]] = {
    "tokenizer": ("nlpattn.tokenizer:cli_main", "train a tokenizer: `nlpattn tokenizer train --config ...`"),
    "pretrain": ("nlpattn.train.pretrain:cli_main", "pretrain (mlm | clm | seq2seq)"),
    "finetune": ("nlpattn.train.finetune:cli_main", "fine-tune on one GLUE task"),
    "glue": ("nlpattn.train.finetune:cli_glue", "fine-tune on every GLUE task → scoreboard"),
    "curve": ("nlpattn.train.curve:cli_main", "downstream score against pretraining minutes (one run)"),
    "generate": ("nlpattn.generate:cli_main", "sample text from a causal-LM run"),
    "attention-map": ("nlpattn.viz:cli_main", "draw attention maps of a run for a text"),
    "cost": ("nlpattn.cost.report:cli_main", "measure Table 1 (cost per layer) / compare bodies"),
    "race": ("nlpattn.race.stages:cli_main", "bodies at equal budget: MLM pretraining, then real tasks"),
    "export-hf": ("nlpattn.interop.hf:cli_export", "export a run as a transformers model directory"),
    "info": ("nlpattn.demo:cli_info", "build a model from a config; print params and FLOPs"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: `nlpattn <command> [positional] [--flags] [key=value ...]`."""
    parser = argparse.ArgumentParser(prog="nlpattn", description="Build, train and measure attention models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("action", nargs="?", default=None, help="sub-action, e.g. `train` or `compare`")
        p.add_argument("--config", default=None, help="YAML config file")
        p.add_argument("--init", default=None, help="run directory to start from")
        p.add_argument("--run", default=None, help="run directory to read")
        p.add_argument("--out", default=None, help="output path")
        p.add_argument("--force", action="store_true", help="replace an earlier output of the same kind")
        p.add_argument("overrides", nargs="*", default=[], help="key=value overrides")
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse argv; `key=value` items may come before or after the flags (argparse alone stops
    collecting positionals at the first flag); an `action` that is key=value is an override."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    unknown = [r for r in rest if r.startswith("-") or "=" not in r]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *rest]
    if args.action is not None and "=" in args.action:
        args.overrides = [args.action, *args.overrides]
        args.action = None
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    from nlpattn.allocator import apply_from_environment
    from nlpattn.errors import NlpattnError

    args = parse(sys.argv[1:] if argv is None else argv)
    apply_from_environment()  # a step's freed memory stays in the heap for the next step
    module_name, func_name = COMMANDS[args.command][0].split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        result = func(args)
    except NlpattnError as e:
        print(f"nlpattn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nlpattn {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

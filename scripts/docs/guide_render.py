"""make docs, stage 3: docs/guide.md.in → docs/guide.md.

`{{ a.b.c }}` is replaced by that value of docs/results/guide.json (a number or markdown as
stored, nothing formatted here). A python block preceded by `<!-- run: fast -->` or
`<!-- run: slow -->` (slow: needs make docs' trained runs) is executed and what it prints is
inserted after it as a ```text block; tests/test_guide.py runs the same blocks."""
from __future__ import annotations

import contextlib
import io
import re

import torch

PLACEHOLDER = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")
BLOCK = re.compile(r"<!-- run: (fast|slow) -->\n```python\n(.*?)```\n", re.S)
OUTPUT = re.compile(r"(<!-- run: (?:fast|slow) -->\n```python\n.*?```\n)```text\n.*?```\n", re.S)


def lookup(values: dict, key: str):
    """values['a']['b'] for 'a.b'; KeyError naming the whole key when any part is missing."""
    node = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"docs/guide.md.in: no value '{key}' in docs/results/guide.json")
        node = node[part]
    return node


def fill(template: str, values: dict) -> str:
    """Replace every {{ key }} by its stored value."""
    return PLACEHOLDER.sub(lambda m: str(lookup(values, m.group(1))), template)


def blocks(markdown: str) -> list[tuple[str, str]]:
    """Every tagged python block as (speed, code), speed 'fast' or 'slow', in order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(markdown)]


def run_block(code: str, name: str = "<guide block>") -> str:
    """Execute one block in a fresh namespace (seeded) and return what it printed."""
    torch.manual_seed(0)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, name, "exec"), {"__name__": "__guide__"})
    return buffer.getvalue()


def strip_outputs(markdown: str) -> str:
    """The guide without the printed outputs that render() inserted after the blocks."""
    return OUTPUT.sub(r"\1", markdown)


def render(template: str, values: dict, execute: bool = True) -> str:
    """Fill the placeholders; with execute, run each tagged block and insert its output."""
    text = fill(template, values)
    if not execute:
        return text
    count = iter(range(1, 1000))

    def with_output(m: re.Match) -> str:
        out = run_block(m.group(2), f"<guide block {next(count)}>")
        return m.group(0) + (f"```text\n{out.rstrip()}\n```\n" if out.strip() else "")

    return BLOCK.sub(with_output, text)

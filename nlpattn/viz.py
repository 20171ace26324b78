"""Attention maps of a run for one input: the interactive explorer (`out=x.html`, one
self-contained page), a static PNG grid (`out=x.png`) or the raw weights and statistics
(`out=x.json`). The data come from `nlpattn.explorer`; this module writes the files."""
from __future__ import annotations

from pathlib import Path

import torch

from nlpattn.errors import ConfigError

SUFFIXES = (".html", ".htm", ".png", ".json")
KEYS = ("text", "text_pair", "source", "target", "out", "truncate")


def attention_maps(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Self-attention weights of one sequence (1, T): per layer a (H, T, T) tensor."""
    if not getattr(getattr(model, "body", None), "returns_attention", False):
        raise ConfigError(f"model.body: '{model.cfg.body}' has no attention weights to draw")
    model.eval()
    with torch.no_grad():
        out = model(input_ids, output_attentions=True)
    return [a[0].float() for a in out.attentions]


def save_png(sections: list[dict], path: str | Path) -> Path:
    """A static grid (each section's layers × heads) of heatmaps with token labels, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlpattn.fileio import atomic_path

    n_rows = sum(len(s["layers"]) for s in sections)
    n_cols = max(len(s["layers"][0]) for s in sections)
    size = max(2.0, 0.22 * max(len(s["keys"]) for s in sections))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows), squeeze=False)
    row = 0
    for sec in sections:
        for layer, heads in enumerate(sec["layers"]):
            for h in range(n_cols):
                ax = axes[row][h]
                if h >= len(heads):
                    ax.axis("off")
                    continue
                _heatmap(ax, heads[h], sec, f"{sec['id']} · layer {layer + 1} · head {h + 1}")
            row += 1
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def _heatmap(ax, weights: list, sec: dict, title: str) -> None:
    ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_title(title, fontsize=8)
    ax.set_xticks(range(len(sec["keys"])), sec["keys"], rotation=90, fontsize=6)
    ax.set_yticks(range(len(sec["queries"])), sec["queries"], fontsize=6)
    ax.set_xlabel("attended-to token (key)", fontsize=7)
    ax.set_ylabel("attending token (query)", fontsize=7)


def page_data(maps: list[torch.Tensor], tokens: list[str], title: str = "attention") -> dict:
    """Explorer data for bare self-attention maps (per layer (H, T, T)) and token labels."""
    from nlpattn.explorer import label_groups, make_section

    sec = make_section("self", "Self-attention", maps, tokens, tokens, label_groups(tokens))
    return {"title": title, "run": "", "task": "", "model": f"{len(maps)} layers × {maps[0].shape[0]} heads",
            "inputs": {}, "notes": [], "prediction": None, "highlight": None, "sections": [sec]}


def render_html(maps: list[torch.Tensor], tokens: list[str], title: str = "attention") -> str:
    """The explorer page for bare self-attention maps and token labels."""
    from nlpattn.explorer import render_page

    return render_page(page_data(maps, tokens, title))


def check_out(out: str | Path) -> Path:
    """`out` as a Path, or a ConfigError naming the setting when its suffix is not known."""
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"out: '{out}' must end in .html, .png or .json")
    if out.is_dir():
        raise ConfigError(f"out: '{out}' is a directory")
    return out


def draw(run_dir: str | Path, out: str | Path, text: str | None = None, **inputs) -> Path:
    """Load a run, run it on the input, write the explorer (.html), the grid (.png) or data (.json)."""
    from nlpattn.explorer import explorer_data, render_page
    from nlpattn.fileio import atomic_write_json, atomic_write_text

    out = check_out(out)
    data = explorer_data(run_dir, text=text, **inputs)
    suffix = out.suffix.lower()
    if suffix == ".png":
        return save_png(data["sections"], out)
    if suffix == ".json":
        atomic_write_json(out, data)
    else:
        atomic_write_text(out, render_page(data))
    return out


def parse_options(overrides: list[str]) -> dict:
    """`key=value` items of attention-map as keyword arguments (strict keys, truncate a bool)."""
    opts = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"attention-map: unknown key '{key}' (keys: {', '.join(KEYS)})")
        opts[key] = value
    if "truncate" in opts:
        flag = opts["truncate"].strip().lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"truncate: '{opts['truncate']}' is not true or false")
        opts["truncate"] = flag in ("true", "1", "yes")
    return opts


def cli_main(args) -> int:
    """`nlpattn attention-map --run RUN text="..." [text_pair=...|source=... target=...] out=x.html`."""
    opts = parse_options(args.overrides)
    run = args.run or args.init
    if not run:
        raise ConfigError('attention-map needs --run RUN_DIR and text="..." (out=attn.html)')
    out = check_out(args.out or opts.pop("out", "attention.html"))
    opts.pop("out", None)
    path = draw(run, out, **opts)
    print(f"wrote {path}")
    return 0

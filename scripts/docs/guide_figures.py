"""make docs, stage 2a: the guide's figures (docs/img/guide/*.png) from the runs of stage 1."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from nlpattn.attention import build_attention_mask  # noqa: E402
from nlpattn.explorer import explorer_data  # noqa: E402
from nlpattn.viz import draw  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IMG = REPO / "docs/img/guide"
SENTENCE = "a gorgeous , witty and seductive movie , but the ending is a dull mess ."
SOURCE = "The cathedral was built in <extra_id_0> century and was rebuilt after <extra_id_1> in 1836 ."
TARGET = "<extra_id_0> the 12th <extra_id_1> a fire <extra_id_2>"
VERSE = "ROMEO: But soft, what light through yonder window breaks?"


def _save(fig, name: str) -> str:
    """Save a figure under docs/img/guide and return its path relative to docs/."""
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"img/guide/{name}"


def gates_figure(run: str = "runs/docs/gates", text: str = SENTENCE) -> tuple[str, dict]:
    """Section 1: the CNN's spatial gates (layer × token) and channel gates (layer × channel)."""
    data = explorer_data(REPO / run, text=text)
    spatial = next(s for s in data["sections"] if s["id"] == "spatial")
    channel = next(s for s in data["sections"] if s["id"] == "channel")
    sp, ch = spatial["layers"][0][0], channel["layers"][0][0]  # (L, T), (L, d)
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.5), layout="constrained")
    im = axes[0].imshow(sp, cmap="viridis", aspect="auto")  # colours span the gates' own range
    axes[0].set_xticks(range(len(spatial["keys"])), spatial["keys"], rotation=90, fontsize=8)
    axes[0].set_yticks(range(len(sp)), spatial["queries"], fontsize=8)
    axes[0].set_title("spatial gate: where to look (one weight per token and layer)", fontsize=9)
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="gate")
    im = axes[1].imshow(ch, cmap="viridis", aspect="auto")
    axes[1].set_yticks(range(len(ch)), channel["queries"], fontsize=8)
    axes[1].set_xlabel("channel (feature)", fontsize=8)
    axes[1].set_title("channel gate (squeeze-and-excitation): which features matter, per layer", fontsize=9)
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="gate")
    return _save(fig, "gates.png"), {"tokens": spatial["keys"], "spatial": sp, "channel": ch,
                                      "prediction": data["prediction"]}


def masks_figure(n: int = 6, pad: int = 2) -> str:
    """Section 3: the encoder's padding mask and the decoder's causal mask as images."""
    key_pad = torch.ones(1, n, dtype=torch.bool)
    key_pad[0, n - pad:] = False
    masks = {f"encoder: bidirectional, last {pad} keys padding": build_attention_mask(n, n, key_padding_mask=key_pad, causal=False),
             "decoder: causal (key j ≤ query i)": build_attention_mask(n, n, key_padding_mask=None, causal=True)}
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, (title, m) in zip(axes, masks.items()):
        ax.imshow(m[0, 0].expand(n, n).int(), cmap="Greys", vmin=0, vmax=1)  # padding masks broadcast over queries
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key j (attended to)", fontsize=8)
        ax.set_ylabel("query i (attending)", fontsize=8)
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
    fig.suptitle("black = may attend (True), white = masked (−∞ before the softmax)", fontsize=9)
    return _save(fig, "masks.png")


def cross_figure(run: str = "runs/docs/seq2seq") -> tuple[str, dict]:
    """Section 4: the seq2seq run's cross-attention (target → source), heads averaged, per layer."""
    data = explorer_data(REPO / run, source=SOURCE, target=TARGET)
    cross = next(s for s in data["sections"] if s["id"] == "cross")
    layers = [torch.tensor(w).mean(0) for w in cross["layers"]]  # each (T, S)
    fig, axes = plt.subplots(1, len(layers), figsize=(6.5 * len(layers), 4.2), squeeze=False)
    for i, (ax, w) in enumerate(zip(axes[0], layers)):
        im = ax.imshow(w, cmap="viridis", aspect="auto")  # colours span this map's own range
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_xticks(range(len(cross["keys"])), cross["keys"], rotation=90, fontsize=7)
        ax.set_yticks(range(len(cross["queries"])), cross["queries"], fontsize=7)
        ax.set_title(f"cross-attention, layer {i + 1} (mean of heads)", fontsize=9)
        ax.set_xlabel("source token (keys, values: encoder output)", fontsize=8)
        ax.set_ylabel("target token (queries: decoder)", fontsize=8)
    flat = torch.stack(layers)
    return _save(fig, "cross-attention.png"), {"source_tokens": len(cross["keys"]),
                                                "cross_max": round(float(flat.max()), 3),
                                                "cross_uniform": round(1 / len(cross["keys"]), 3)}


def heads_figure(run: str = "runs/docs/char", text: str = VERSE) -> tuple[str, list[dict], int]:
    """Section 8: every head of the char-level GPT on one line (`nlpattn attention-map ... out=x.png`),
    the head statistics the explorer shows, and the number of tokens."""
    draw(REPO / run, IMG / "heads-char.png", text=text)
    section = explorer_data(REPO / run, text=text)["sections"][0]
    return "img/guide/heads-char.png", section["stats"], len(section["keys"])


def curves_figure(runs: dict[str, str]) -> str:
    """Section 6: validation loss against step for the pretraining runs (metrics.jsonl)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, run in runs.items():
        events = [json.loads(line) for line in (REPO / run / "metrics.jsonl").read_text().splitlines()]
        val = [(e["step"], e["loss"]) for e in events if e.get("split") == "val" and "loss" in e]
        ax.plot([s for s, _ in val], [v for _, v in val], marker="o", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/token)")
    ax.legend(fontsize=8)
    ax.set_title("make docs' pretraining runs on WikiText-2", fontsize=9)
    return _save(fig, "pretrain-curves.png")


def cost_figures(run: str = "runs/docs/cost") -> list[str]:
    """Section 7: copy `nlpattn cost`'s plots into docs/img/guide as cost-*.png."""
    IMG.mkdir(parents=True, exist_ok=True)
    out = []
    for png in sorted((REPO / run).glob("*.png")):
        shutil.copyfile(png, IMG / f"cost-{png.name}")
        out.append(f"img/guide/cost-{png.name}")
    return out

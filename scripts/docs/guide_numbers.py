"""make docs, stage 2b: every number the guide quotes, read from the runs' own result files and
rounded once here (the guide prints them as they are stored in docs/results/guide.json)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nlpattn.attention_stats import entropy, mean_distance
from nlpattn.cost.markdown import crossover_table, side_by_side

REPO = Path(__file__).resolve().parents[2]


def _json(path: str | Path) -> dict:
    return json.loads((REPO / path).read_text(encoding="utf-8"))


def pretrain_numbers(run: str) -> dict:
    """A pretraining run's summary.json: steps, minutes, validation loss, perplexity, size."""
    s = _json(f"{run}/summary.json")
    out = {"steps": s["steps"], "minutes": round(s["wall_s"] / 60, 1), "val_loss": round(s["final_val_loss"], 3),
           "ppl": round(s["final_ppl"], 1), "params": f"{s['params']:,}",
           "tokens": f"{s['tokens']:,}", "tokens_per_s": f"{s['tokens_per_s']:,.0f}"}
    if s.get("final_val_accuracy") is not None:
        out["accuracy_pct"] = round(100 * s["final_val_accuracy"], 1)
    return out


def finetune_numbers(run: str, task: str = "sst2") -> dict:
    """A fine-tuning run's eval/<task>.json: dev accuracy (%), steps, minutes, examples seen."""
    e = _json(f"{run}/eval/{task}.json")
    return {"accuracy_pct": round(100 * e["metrics"][task]["accuracy"], 1), "steps": e["steps"],
            "minutes": round(e["wall_s"] / 60, 1)}


def cost_numbers(run: str = "runs/docs/cost") -> dict:
    """`nlpattn cost`'s table1.json: the side-by-side and crossover tables and the sweep's settings."""
    r = _json(f"{run}/table1.json")
    return {"d_model": r["config"]["d_model"], "lengths": ", ".join(map(str, r["config"]["lengths"])),
            "wall_s": round(r["wall_s"]), "side_by_side": "\n".join(side_by_side(r)[2:]).strip(),
            "crossover_table": "\n".join(crossover_table(r)[2:]).strip()}


def gates_numbers(info: dict) -> dict:
    """Section 1: the prediction, and the tokens the most selective layer's spatial gate opens
    and closes most (the layer whose gates span the widest range)."""
    tokens, channel = info["tokens"], info["channel"]
    layer = max(range(len(info["spatial"])), key=lambda i: max(info["spatial"][i]) - min(info["spatial"][i]))
    spatial = info["spatial"][layer]
    order = sorted(range(len(tokens)), key=lambda i: spatial[i])
    pred = info["prediction"]
    return {"label": pred["label"], "probability": pred["probability"], "layer": layer + 1,
            "open_tokens": ", ".join(f"`{tokens[i]}` ({spatial[i]:.2f})" for i in order[::-1][:3]),
            "closed_tokens": ", ".join(f"`{tokens[i]}` ({spatial[i]:.2f})" for i in order[:3]),
            "spatial_min": round(min(spatial), 2), "spatial_max": round(max(spatial), 2),
            "channel_min": round(min(map(min, channel)), 3), "channel_max": round(max(map(max, channel)), 3),
            "n_layers": len(info["spatial"]), "d_model": len(channel[0])}


def uniform_reference(n_tokens: int, causal: bool = False) -> dict:
    """Entropy and mean distance of attention spread evenly over the n tokens each query may see
    (all of them, or those up to itself when causal): what a head that learned nothing gives."""
    allowed = torch.ones(n_tokens, n_tokens)
    if causal:
        allowed = allowed.tril()
    w = allowed / allowed.sum(-1, keepdim=True)
    return {"tokens": n_tokens, "uniform_entropy": round(float(entropy(w)), 2),
            "uniform_distance": round(float(mean_distance(w)), 2)}


def head_numbers(stats: list[dict], n_tokens: int, causal: bool = False) -> dict:
    """Section 8: the head-statistics table, the most local / most diffuse heads, and what
    uniform attention would give."""
    groups = [k for k in stats[0] if k not in ("layer", "head", "entropy", "distance")]
    head = ["layer", "head", "entropy (nats)", "mean distance (tokens)", *[f"share on {g}" for g in groups]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in stats:
        cells = [s["layer"] + 1, s["head"] + 1, f"{s['entropy']:.2f}", f"{s['distance']:.2f}",
                 *[f"{s[g]:.2f}" for g in groups]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    local = min(stats, key=lambda s: s["distance"])
    wide = max(stats, key=lambda s: s["entropy"])
    name = lambda s: f"layer {s['layer'] + 1}, head {s['head'] + 1}"  # noqa: E731
    return {**uniform_reference(n_tokens, causal), "table": "\n".join(lines), "local": name(local),
            "local_distance": round(local["distance"], 2), "wide": name(wide), "wide_entropy": round(wide["entropy"], 2)}

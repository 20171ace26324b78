"""Attention maps: what each head of each layer attends to, as a PNG grid or a self-contained
HTML page (hover a token to see its attention row)."""
from __future__ import annotations

import html
import json
from pathlib import Path

import torch

from nlpattn.errors import ConfigError


def attention_maps(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Self-attention weights of one sequence (1, T): per layer a (H, T, T) tensor."""
    if not getattr(getattr(model, "body", None), "returns_attention", False):
        raise ConfigError(f"model.body: '{model.cfg.body}' has no attention weights to draw")
    model.eval()
    with torch.no_grad():
        out = model(input_ids, output_attentions=True)
    return [a[0].float() for a in out.attentions]


def save_png(maps: list[torch.Tensor], tokens: list[str], path: str | Path) -> Path:
    """A grid (layers × heads) of attention heatmaps with token labels, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlpattn.fileio import atomic_path

    n_layers, n_heads = len(maps), maps[0].shape[0]
    size = max(2.0, 0.22 * len(tokens))
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(size * n_heads, size * n_layers), squeeze=False)
    for layer, heads in enumerate(maps):
        for h in range(n_heads):
            ax = axes[layer][h]
            ax.imshow(heads[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer + 1} · head {h + 1}", fontsize=8)
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
            ax.set_xlabel("attended-to token (key)", fontsize=7)
            ax.set_ylabel("attending token (query)", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def render_html(maps: list[torch.Tensor], tokens: list[str], title: str = "attention") -> str:
    """A self-contained HTML page: choose layer/head; hovering a token shades what it attends to."""
    data = json.dumps([[h.tolist() for h in layer] for layer in maps])
    token_spans = "".join(f'<span class="tok" data-i="{i}">{html.escape(t)}</span> '
                          for i, t in enumerate(tokens))
    return _HTML.replace("__TITLE__", html.escape(title)).replace("__DATA__", data) \
        .replace("__TOKENS__", token_spans).replace("__LAYERS__", str(len(maps))) \
        .replace("__HEADS__", str(maps[0].shape[0]))


def draw(run_dir: str | Path, text: str, out: str | Path) -> Path:
    """Load a run, encode `text`, write its attention maps to `out` (.png or .html)."""
    from nlpattn.fileio import atomic_write_text
    from nlpattn.models import load_model
    from nlpattn.tokenizer import load_tokenizer

    model, tok = load_model(run_dir), load_tokenizer(run_dir)
    ids = tok.encode(text)[: model.cfg.max_len]
    if not ids:
        raise ConfigError("text: encodes to no tokens")
    tokens = [tok.decode([i], skip_special_tokens=False) or "·" for i in ids]
    maps = attention_maps(model, torch.tensor([ids]))
    out = Path(out)
    if out.suffix == ".png":
        return save_png(maps, tokens, out)
    if out.suffix in (".html", ".htm"):
        atomic_write_text(out, render_html(maps, tokens, title=f"{run_dir}: {text[:60]}"))
        return out
    raise ConfigError(f"out: '{out}' must end in .png or .html")


def cli_main(args) -> int:
    """`nlpattn attention-map --run RUN text="..." out=attn.html`."""
    opts = dict(o.split("=", 1) for o in args.overrides if "=" in o)
    unknown = set(opts) - {"text", "out"}
    if unknown:
        raise ConfigError(f"attention-map: unknown key '{sorted(unknown)[0]}' (keys: text, out)")
    run = args.run or args.init
    if not run or "text" not in opts:
        raise ConfigError('attention-map needs --run RUN_DIR and text="..." (out=attn.html)')
    path = draw(run, opts["text"], args.out or opts.get("out", "attention.html"))
    print(f"wrote {path}")
    return 0


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>__TITLE__</title><style>
body{font-family:sans-serif;margin:2em;max-width:60em}
.tok{padding:2px 3px;border-radius:3px;cursor:pointer;display:inline-block;margin:2px 0}
.sel{outline:2px solid #c00}
</style></head><body><h2>__TITLE__</h2>
<p>Layer <select id="layer"></select> Head <select id="head"></select> —
hover a token: the others are shaded by how much it attends to them.</p>
<div id="text">__TOKENS__</div>
<script>
const A=__DATA__, L=__LAYERS__, H=__HEADS__;
const ls=document.getElementById('layer'), hs=document.getElementById('head');
for(let i=0;i<L;i++) ls.add(new Option(i+1,i)); for(let i=0;i<H;i++) hs.add(new Option(i+1,i));
const toks=[...document.querySelectorAll('.tok')];
function show(q){const row=A[ls.value][hs.value][q];
 toks.forEach((t,j)=>{t.style.background=`rgba(30,90,200,${row[j]})`;t.classList.toggle('sel',j==q);
 t.title=(row[j]*100).toFixed(1)+'%';});}
toks.forEach((t,i)=>t.addEventListener('mouseenter',()=>show(i)));
ls.onchange=hs.onchange=()=>show(0); show(0);
</script></body></html>
"""

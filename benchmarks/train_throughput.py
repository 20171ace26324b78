"""Training and inference throughput of our MaskedLM / CausalLM against transformers' BertForMaskedLM
and GPT2LMHeadModel (SDPA attention) and a minimal nanoGPT-style GPT, same shape, one run.

Every model is built from a config of the same shape (random init, nothing downloaded) and runs
in its own subprocess, so its peak RSS is its own. A training step is forward + backward + fused
AdamW step on one random batch (MLM: 15% of positions labelled; CLM: labels = inputs); train
tokens/s is batch·seq ÷ the median step time after warm-up; inference tokens/s is one forward
(all logits, no labels, inference mode) likewise, in a second fresh process. fp32 runs plain; bf16 runs every model under
the same `torch.autocast`. MFU = tokens/s × model FLOPs per token ÷ the peak of an n×n matmul
measured in this run for the same dtype and threads; the FLOPs per token are the same for every
model of an objective (`nlpattn.cost.analytic` at this shape: the MLM head counts the masked
positions only, as useful work), so MFU ratios equal tokens/s ratios. Absolute numbers on a
shared machine are noise; the ratios of one run are the figures to quote.

    python benchmarks/train_throughput.py                     # d 256, 4 layers, seq 128, batch 16; fp32 + bf16
    python benchmarks/train_throughput.py --steps 3 --warmup 1 --d 32 --layers 1 --vocab 128 --seq 16 --batch 2
    python benchmarks/train_throughput.py --device cuda --d 768 --layers 12 --heads 12 --ffn 3072 --seq 512 --dtypes bf16
    python benchmarks/train_throughput.py --models "nlpattn-clm,nlpattn-clm[compile],nanogpt" --rounds 3

A model name may carry options in brackets: `[compile]` wraps it in torch.compile (its first
steps' extra time is reported as compile_s, and the break-even training time against the same
model uncompiled in this run). Any other `key=value` (ours only) sets that `ModelConfig` field;
our models otherwise take the shipped defaults (`attention=auto`). `[attention=math]` spells
attention out instead of calling SDPA; `[bias=false,activation=gelu]` is the nanoGPT-style
model's layout (no linear biases, exact GELU; our LayerNorm keeps its shift, nanoGPT drops it).
`--rounds N` runs the whole set N times, interleaved, and reports each figure's median over the
rounds, so that a slow minute of a shared host does not land on one model only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nlpattn.allocator import TORCH_HUGE_PAGES_ENV, keep_freed_memory, kernel_huge_page_mode, memory_settings
from nlpattn.config import ModelConfig

MODELS = {"nlpattn-mlm": "mlm", "bert": "mlm", "nlpattn-clm": "clm", "gpt2": "clm", "nanogpt": "clm"}
REFERENCE = {"nlpattn-mlm": ("bert",), "nlpattn-clm": ("gpt2", "nanogpt")}  # ours → the models we compare with
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


# --- a minimal nanoGPT-style GPT (Karpathy's model.py, no biases, SDPA is_causal, tied head) -----

class NanoBlock(nn.Module):
    """x + attn(ln(x)); x + mlp(ln(x)) — GPT-2's pre-LN block without biases."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.proj = nn.Linear(d, ffn, bias=False), nn.Linear(ffn, d, bias=False)
        self.drop = nn.Dropout(dropout)

    def attn(self, x: torch.Tensor) -> torch.Tensor:
        """Causal self-attention through SDPA."""
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.drop(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) → (B, T, d)."""
        x = x + self.attn(self.ln_1(x))
        return x + self.drop(self.proj(F.gelu(self.fc(self.ln_2(x)))))


class NanoGPT(nn.Module):
    """Token + position embeddings, blocks, final LayerNorm, tied head; loss on next tokens."""

    def __init__(self, vocab: int, max_len: int, d: int, layers: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(NanoBlock(d, heads, ffn, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for p in self.parameters():
            nn.init.normal_(p, std=0.02) if p.dim() > 1 else None

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None):
        """Logits (B, T, V) and, with labels, the mean next-token cross-entropy."""
        T = input_ids.shape[1]
        x = self.drop(self.wte(input_ids) + self.wpe(torch.arange(T, device=input_ids.device)))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        return _Out(loss, logits)


class _Out:
    def __init__(self, loss, logits):
        self.loss, self.logits = loss, logits


# --- building the models --------------------------------------------------------------------

def parse_variant(name: str) -> tuple[str, dict]:
    """'nlpattn-clm[compile,attention=math]' → ('nlpattn-clm', {'compile': True, 'attention': 'math'})."""
    base, _, rest = name.partition("[")
    if base not in MODELS or (rest and not rest.endswith("]")):
        raise ValueError(f"unknown model '{name}' (one of {', '.join(MODELS)}, optionally with [compile] "
                         "or, for ours, [field=value] of ModelConfig)")
    options: dict = {}
    for item in filter(None, rest[:-1].split(",")):
        key, eq, value = item.partition("=")
        options[key] = value if eq else True
    fields = {"compile"} | ({f.name for f in dataclasses.fields(ModelConfig)} if base.startswith("nlpattn") else set())
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"model '{name}': unknown option(s) {unknown} for {base}")
    model_options(options)  # a value of the wrong type fails here, before any measurement
    return base, options


def split_models(text: str) -> list[str]:
    """'a,b[x=1,y=2],c' → ['a', 'b[x=1,y=2]', 'c']: commas inside brackets separate options."""
    return [m for m in re.split(r",(?![^\[]*\])", text) if m]


def model_options(options: dict) -> dict:
    """The ModelConfig fields of a variant's options, typed like the defaults ('false' → False)."""
    typed = {}
    for key, value in options.items():
        if key == "compile":
            continue
        default = getattr(ModelConfig(), key)
        if isinstance(default, bool):
            if value not in ("true", "false"):
                raise ValueError(f"option {key}={value}: expected true or false")
            typed[key] = value == "true"
        else:
            typed[key] = type(default)(value) if isinstance(default, (int, float)) else value
    return typed


def variant_name(base: str, options: dict) -> str:
    """The inverse of parse_variant: ('nlpattn-clm', {'compile': True}) → 'nlpattn-clm[compile]'."""
    items = [key if value is True else f"{key}={value}" for key, value in options.items()]
    return f"{base}[{','.join(items)}]" if items else base


def objective_of(name: str) -> str:
    """'mlm' or 'clm' for a model name with or without options."""
    return MODELS[parse_variant(name)[0]]


def build(name: str, a: argparse.Namespace) -> nn.Module:
    """The model `name` at the benchmark's shape (random init; options as parse_variant reads them)."""
    name, options = parse_variant(name)
    max_len = max(512, a.seq)
    if name.startswith("nlpattn"):
        from nlpattn.models import build_model

        mlm = name == "nlpattn-mlm"  # BERT's layout for MLM, GPT-2's for CLM
        cfg = ModelConfig(arch="encoder" if mlm else "decoder", vocab_size=a.vocab, d_model=a.d, n_layers=a.layers,
                          n_heads=a.heads, d_ff=a.ffn, max_len=max_len, dropout=a.dropout,
                          norm="post" if mlm else "pre", activation="gelu" if mlm else "gelu_tanh")
        return build_model(dataclasses.replace(cfg, **model_options(options)), MODELS[name])
    import transformers

    if name == "bert":
        cfg = transformers.BertConfig(vocab_size=a.vocab, hidden_size=a.d, num_hidden_layers=a.layers,
                                      num_attention_heads=a.heads, intermediate_size=a.ffn,
                                      max_position_embeddings=max_len, hidden_dropout_prob=a.dropout,
                                      attention_probs_dropout_prob=a.dropout)
        return transformers.BertForMaskedLM._from_config(cfg, attn_implementation="sdpa")
    if name == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=a.vocab, n_embd=a.d, n_layer=a.layers, n_head=a.heads,
                                      n_inner=a.ffn, n_positions=max_len, resid_pdrop=a.dropout,
                                      embd_pdrop=a.dropout, attn_pdrop=a.dropout, bos_token_id=None, eos_token_id=None)
        return transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa")
    return NanoGPT(a.vocab, max_len, a.d, a.layers, a.heads, a.ffn, a.dropout)


def make_batch(objective: str, a: argparse.Namespace, device: torch.device) -> dict:
    """Random ids; MLM labels 15% of positions, CLM labels = inputs (shifted inside the model)."""
    ids = torch.randint(5, a.vocab, (a.batch, a.seq), device=device)
    if objective == "mlm":
        return {"input_ids": ids, "labels": torch.where(torch.rand(ids.shape, device=device) < 0.15, ids, -100)}
    return {"input_ids": ids, "labels": ids}


# --- the worker: one model, one dtype -----------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, steps: int, warmup: int, device: torch.device) -> list[float]:
    """Wall times of `steps` calls of fn() after `warmup` untimed calls."""
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def peak_rss_mib(device: torch.device) -> float:
    """Peak resident memory of this process (CPU) or peak CUDA memory, MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where getrusage does not count them)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure_training(model, batch: dict, autocast, a: argparse.Namespace, device: torch.device) -> dict:
    """Forward + backward + fused AdamW: step time, tokens/s, first and last loss, peak RSS."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    losses = []

    def train_step() -> None:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    model.train()
    warm_start = time.perf_counter()
    train = timed(train_step, a.steps, a.warmup, device)
    warmup_s = time.perf_counter() - warm_start - sum(train)
    return {"params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
            "train_step_ms": statistics.median(train) * 1e3, "train_tok_s": a.batch * a.seq / statistics.median(train),
            "peak_rss_mib": peak_rss_mib(device), "loss_first": float(losses[0]), "loss_last": float(losses[-1]),
            "warmup_extra_s": max(0.0, warmup_s - a.warmup * statistics.median(train))}


def measure_inference(model, batch: dict, autocast, a: argparse.Namespace, device: torch.device) -> dict:
    """One forward to all logits in inference mode: tokens/s and page faults per pass."""
    model.eval()

    def infer() -> None:
        with torch.inference_mode(), autocast:
            model(input_ids=batch["input_ids"])

    faults = minor_faults()
    times = timed(infer, a.steps, a.warmup, device)
    return {"infer_tok_s": a.batch * a.seq / statistics.median(times),
            "infer_faults_per_pass": (minor_faults() - faults) / (a.steps + a.warmup)}


def worker(a: argparse.Namespace) -> dict:
    """One model in one dtype, a.phase: "train", "infer", or "train+infer" (inference after training,
    in the same process); returns the measurements."""
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = build(a.worker, a).to(device)
    if parse_variant(a.worker)[1].get("compile"):
        model = torch.compile(model)
    objective = objective_of(a.worker)
    autocast = torch.autocast(device.type, dtype=DTYPES[a.dtype], enabled=a.dtype != "fp32")
    batch = make_batch(objective, a, device)
    row = {"model": a.worker, "dtype": a.dtype, "objective": objective, "memory": memory_settings()}
    if "train" in a.phase:
        row.update(measure_training(model, batch, autocast, a, device))
    if "infer" in a.phase:
        row.update(measure_inference(model, batch, autocast, a, device))
    return row


# --- the parent: peaks, subprocesses, table --------------------------------------------------

def machine(device: str) -> dict:
    """CPU model and its relevant flags (and the GPU's name when there is one)."""
    from nlpattn.train.runtime import cpu_flags, cpu_model

    flags = cpu_flags()
    info = {"cpu": cpu_model(), "flags": {f: f in flags for f in FLAGS}, "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def model_flops_per_token(objective: str, a: argparse.Namespace, inference: bool = False) -> float:
    """Useful FLOPs per token of one training step (or one forward) of the objective at this shape."""
    from nlpattn.cost.analytic import model_forward_flops

    cfg = ModelConfig(vocab_size=a.vocab, d_model=a.d, n_layers=a.layers, n_heads=a.heads, d_ff=a.ffn,
                      mlm_transform=True)
    rows = None if inference or objective == "clm" else round(0.15 * a.batch * a.seq)
    forward = model_forward_flops(cfg, objective, a.batch, a.seq, head_rows=rows)
    return (forward if inference else 3 * forward) / (a.batch * a.seq)


def run_worker(name: str, dtype: str, argv: list[str], huge_pages: bool = False,
               after_training: bool = False) -> dict:
    """One model's training, then its inference, each in a fresh process (or both in one process
    with after_training): its JSON result (or the error).

    Inference gets a process of its own because what a training run leaves in the heap decides
    whether the logits' 32-64 MiB block is reused or mapped and page-faulted afresh each pass (a
    third of the pass in bf16, measured): measured after training, inference would rank each
    model's training memory, not its forward."""
    # PyTorch reads its huge-page switch at its first allocation: it must be in the worker's environment
    env = {**os.environ, TORCH_HUGE_PAGES_ENV: "1"} if huge_pages else None
    row = {}
    for phase in (("train+infer",) if after_training else ("train", "infer")):
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", name, "--dtype", dtype,
               "--phase", phase]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return {"model": name, "dtype": dtype, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return row


def add_ratios(rows: list[dict]) -> None:
    """ours ÷ each reference (same dtype), each model's bf16 ÷ fp32, and a compiled variant's
    break-even training time against the same model uncompiled, in place."""
    by = {(r["model"], r["dtype"]): r for r in rows if "error" not in r}
    for (name, dtype), r in by.items():
        base, options = parse_variant(name)
        for ref in REFERENCE.get(base, ()):
            if (ref, dtype) in by:
                for key in ("train_tok_s", "infer_tok_s", "peak_rss_mib"):
                    r[f"{key}_vs_{ref}"] = r[key] / by[ref, dtype][key]
        if dtype != "fp32" and (name, "fp32") in by:
            r["train_vs_fp32"] = r["train_tok_s"] / by[name, "fp32"]["train_tok_s"]
        plain = by.get((variant_name(base, {k: v for k, v in options.items() if k != "compile"}), dtype))
        if options.get("compile") and plain is not None and plain is not r:
            r["compile_s"] = r["warmup_extra_s"]
            r["train_vs_eager"] = r["train_tok_s"] / plain["train_tok_s"]
            gain = 1 - plain["train_tok_s"] / r["train_tok_s"]  # share of each eager second saved
            r["break_even_min"] = r["compile_s"] / gain / 60 if gain > 0 else math.inf


def median_rows(rounds: list[list[dict]]) -> list[dict]:
    """One row per (model, dtype): each measured figure's median over the rounds."""
    keys = ("train_step_ms", "train_tok_s", "infer_tok_s", "peak_rss_mib", "warmup_extra_s",
            "infer_faults_per_pass")
    out = []
    for i, first in enumerate(rounds[0]):
        same = [r[i] for r in rounds if "error" not in r[i]]
        if "error" in first or len(same) < len(rounds):
            out.append(first if "error" in first else next(r[i] for r in rounds if "error" in r[i]))
            continue
        row = dict(first)
        for key in keys:
            row[key] = statistics.median(r[key] for r in same)
        if len(rounds) > 1:
            row["rounds_train_tok_s"] = [r["train_tok_s"] for r in same]
            row["rounds_infer_tok_s"] = [r["infer_tok_s"] for r in same]
        out.append(row)
    return out


def _vs(row: dict, key: str, wrap: str = "{}") -> str:
    """'1.23× gpt2, 1.10× nanogpt' for the references measured, else ''."""
    refs = REFERENCE.get(parse_variant(row["model"])[0], ())
    parts = [f"{row[f'{key}_vs_{ref}']:.2f}× {ref}" for ref in refs if f"{key}_vs_{ref}" in row]
    return wrap.format(", ".join(parts)) if parts else ""


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(result: dict) -> str:
    """The table, with the machine it ran on."""
    m, a = result["machine"], result["args"]
    flags = ", ".join(f for f, on in m["flags"].items() if on) or "none of " + ", ".join(FLAGS)
    lines = [f"CPU: {m['cpu']} ({flags}); {m.get('gpu', 'no GPU')}; torch {m['torch']}, {m['threads']} threads. "
             f"d {a['d']}, {a['layers']} layers, {a['heads']} heads, ffn {a['ffn']}, vocab {a['vocab']}, "
             f"seq {a['seq']}, batch {a['batch']}, dropout {a['dropout']}; median of {a['steps']} steps "
             f"after {a['warmup']}; each model in its own process"
             + ("" if a.get("inference_after_training") else ", inference in another")
             + (f"; median over {a['rounds']} interleaved rounds" if a.get("rounds", 1) > 1 else "")
             + (f"; every process keeps freed memory (glibc mallopt, mmap threshold {a.get('mmap_threshold_mib', 1024)} MiB)"
                if a.get("keep_freed_memory") else "")
             + ("; every process asks PyTorch for huge pages (THP_MEM_ALLOC_ENABLE=1)" if a.get("huge_pages") else "")
             + ".", ""]
    for dtype, peak in result["peaks"].items():
        gflops = peak / 1e9  # two significant digits below 10: bf16 without a native kernel runs at ~0.3
        lines.append(f"- matmul peak {dtype}: {f'{gflops:,.0f}' if gflops >= 10 else f'{gflops:.2g}'} GFLOP/s")
    if len(result["peaks"]) > 1 and "fp32" in result["peaks"]:
        lines.append(f"- matmul bf16 ÷ fp32: {result['peaks'].get('bf16', math.nan) / result['peaks']['fp32']:.3g}")
    meaningless = sorted({r["dtype"] for r in result["rows"] if r.get("train_mfu", 0) > 1})
    if meaningless:  # e.g. bf16 on a CPU without avx512_bf16/AMX: the square matmul falls back to a slow kernel
        lines.append(f"- MFU above 1 in {', '.join(meaningless)}: the square-matmul peak is slower than the model's own "
                     "matmuls (no native kernel for that dtype here), so that MFU is not meaningful")
    lines += ["", "| model | dtype | train tok/s | vs reference | train MFU | bf16 ÷ fp32 | inference tok/s | "
              "vs reference | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['dtype']} | error: {r['error']} | | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['dtype']} | {r['train_tok_s']:,.0f} | {_vs(r, 'train_tok_s')} | "
                     f"{r['train_mfu']:.3f} | {_num(r.get('train_vs_fp32'))} | {r['infer_tok_s']:,.0f} | "
                     f"{_vs(r, 'infer_tok_s')} | {r['peak_rss_mib']:,.0f} {_vs(r, 'peak_rss_mib', '({})')} |")
    compiled = [r for r in result["rows"] if "compile_s" in r]
    if compiled:
        lines += ["", "| compiled model | dtype | compile s | train ÷ uncompiled | break-even training minutes |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['dtype']} | {r['compile_s']:.0f} | {r['train_vs_eager']:.2f} | "
                  f"{'never' if math.isinf(r['break_even_min']) else format(r['break_even_min'], '.1f')} |"
                  for r in compiled]
    return "\n".join(lines) + "\n"


def parent(a: argparse.Namespace, argv: list[str]) -> dict:
    """Peaks, then every model × dtype in its own process; writes JSON and markdown."""
    from nlpattn.train.mfu import matmul_peak_flops

    if a.threads:
        torch.set_num_threads(a.threads)
    result = {"machine": machine(a.device), "args": vars(a), "peaks": {}, "rows": []}
    dtypes, models = a.dtypes.split(","), split_models(a.models)
    for name in models:
        parse_variant(name)  # fail before any measurement
    rounds = []
    for _ in range(a.rounds):
        rows = []
        for dtype in dtypes:
            if dtype not in result["peaks"]:
                result["peaks"][dtype] = matmul_peak_flops(DTYPES[dtype], a.device, n=a.peak_n)
            for name in models:
                row = run_worker(name, dtype, argv, a.huge_pages, a.inference_after_training)
                print(json.dumps(row), flush=True)
                rows.append(row)
        rounds.append(rows)
    result["rows"] = median_rows(rounds)
    for row in result["rows"]:
        if "error" not in row:
            peak = result["peaks"][row["dtype"]]
            row["train_mfu"] = row["train_tok_s"] * model_flops_per_token(row["objective"], a) / peak
            row["infer_mfu"] = row["infer_tok_s"] * model_flops_per_token(row["objective"], a, True) / peak
    add_ratios(result["rows"])
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse flags; run as the parent, or as one model's worker (--worker)."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("d", 256), ("layers", 4), ("heads", 4), ("ffn", 1024), ("vocab", 8192), ("seq", 128),
                          ("batch", 16), ("steps", 12), ("warmup", 3), ("threads", 0), ("peak-n", 2048),
                          ("rounds", 1)):
        p.add_argument(f"--{flag}", type=int, default=default)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32,bf16")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ",".join(MODELS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="every model's process keeps freed memory (nlpattn.allocator), as the nlpattn command does")
    p.add_argument("--mmap-threshold-mib", type=int, default=32,
                   help="with --keep-freed-memory: blocks above this many MiB are still mapped afresh (32: the command's)")
    p.add_argument("--huge-pages", action="store_true",
                   help="every model's process gets PyTorch's huge pages for blocks of 2 MiB and more (THP_MEM_ALLOC_ENABLE=1)")
    p.add_argument("--out", default="runs/bench/train_throughput", help="writes OUT.json and OUT.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--inference-after-training", action="store_true",
                   help="measure inference in the training process, after training (as before 2026-12-05)")
    p.add_argument("--phase", choices=("train", "infer", "train+infer"), default="train", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        if a.threads:
            torch.set_num_threads(a.threads)
        if a.keep_freed_memory and not keep_freed_memory(mmap_threshold=a.mmap_threshold_mib << 20):
            raise SystemExit("--keep-freed-memory: this C library has no glibc mallopt")
        if a.huge_pages and kernel_huge_page_mode() not in ("madvise", "always"):
            raise SystemExit(f"--huge-pages: the kernel's transparent huge pages are {kernel_huge_page_mode()}")
        print(json.dumps(worker(a)), flush=True)
        return 0
    parent(a, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

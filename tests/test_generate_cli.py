"""`nlpattn generate` on a real (tiny) causal-LM run directory."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clm_run(tmp_path_factory):
    from nlpattn.config import load_config
    from nlpattn.train.pretrain import run_pretrain

    run = tmp_path_factory.mktemp("clm")
    cfg = load_config(REPO / "configs/pretrain/clm-shakespeare-char.yaml",
                      [f"output_dir={run}", "train.max_steps=30", "train.progress=false", "model.n_layers=1",
                       "model.d_model=32", "model.d_ff=64", "train.eval_every=1000", "train.eval_batches=2",
                       "train.final_eval_batches=2", "train.save_every=1000",
                       f"data.train_files=[{REPO / 'data/tinyshakespeare/input.txt.gz'}]"])
    run_pretrain(cfg)
    return run


def _generate(*args):
    return subprocess.run([sys.executable, "-m", "nlpattn", "generate", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_generate_prints_continuations_of_the_prompt(clm_run):
    out = _generate("--run", str(clm_run), "prompt=ROMEO:", "max_new_tokens=20", "top_k=5", "seed=1",
                    "num_samples=2")
    assert out.returncode == 0, out.stderr
    samples = out.stdout.split("---\n")[:2]
    assert all(s.startswith("ROMEO:") and len(s.strip()) > len("ROMEO:") for s in samples)


def test_generate_rejects_non_clm_run_and_unknown_keys(clm_run, tmp_path):
    out = _generate("--run", str(clm_run), "promt=x")
    assert out.returncode == 2 and "did you mean 'prompt'" in out.stderr
    out = _generate("--run", str(tmp_path), "prompt=x")
    assert out.returncode == 2 and "no model.json" in out.stderr

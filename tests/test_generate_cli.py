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
                       "train.final_eval_batches=2", "train.save_every=1000", "train.precision=fp32",
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


def _main(capsys, *args):
    from nlpattn.cli import main

    rc = main(["generate", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_generate_batches_prompts_with_stop_strings_and_seeds(clm_run, capsys):
    prompts = ("ROMEO:", "First Citizen:")
    args = ["--run", str(clm_run), f"prompt={prompts[0]}", f"prompt={prompts[1]}", "max_new_tokens=40",
            "top_k=5", "seed=3", "repetition_penalty=1.2"]
    rc, free, err = _main(capsys, *args)
    assert rc == 0, err
    free_samples = free.split("---\n")[:2]
    assert all(s.startswith(p) for s, p in zip(free_samples, prompts))
    assert _main(capsys, *args)[1] == free  # same seed, same samples
    stop = free_samples[0][len(prompts[0]) + 3]  # the 4th character the first prompt continues with
    stopped = _main(capsys, *args, f"stop={stop}")[1].split("---\n")[:2]
    for sample, unstopped, prompt in zip(stopped, free_samples, prompts):
        cut = unstopped[len(prompt):].find(stop)  # the same draws up to the stop string, cut before it
        assert sample.rstrip("\n") == (unstopped.rstrip("\n") if cut < 0 else prompt + unstopped[len(prompt):][:cut])
    assert len(stopped[0]) <= len(prompts[0]) + 4
    rc, greedy, _ = _main(capsys, "--run", str(clm_run), "prompt=ROMEO:", "temperature=0", "max_new_tokens=8",
                          "use_cache=false")
    assert rc == 0 and greedy == _main(capsys, "--run", str(clm_run), "prompt=ROMEO:", "temperature=0",
                                       "max_new_tokens=8")[1]


@pytest.mark.parametrize("option,key", [("max_new_tokens=0", "max_new_tokens"), ("max_new_tokens=-4", "max_new_tokens"),
                                        ("max_new_tokens=ten", "max_new_tokens"), ("top_p=1.5", "top_p"),
                                        ("top_k=0", "top_k"), ("temperature=-1", "temperature"),
                                        ("repetition_penalty=0", "repetition_penalty"), ("use_cache=maybe", "use_cache"),
                                        ("num_samples=0", "num_samples"), ("stop=", "stop")])
def test_bad_generation_settings_exit_2_with_one_line(clm_run, capsys, option, key):
    rc, out, err = _main(capsys, "--run", str(clm_run), "prompt=ROMEO:", option)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and f"'{key}'" in err, err

"""The README's promises: every command in it runs (shrunk to seconds by extra `key=value`
overrides, in a scratch directory that sees the repo's configs/ and data/), its Python block runs,
every relative link and anchor resolves, and it stays short (~12 KB)."""
import re
import shlex
import subprocess
import sys

import pytest

from nlpattn.cli import main
from test_train_utils import REPO

README = REPO / "README.md"
TINY_MODEL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64"]
TINY_TRAIN = ["train.max_steps=2", "train.max_minutes=1", "train.eval_every=1000", "train.eval_batches=1",
              "train.final_eval_batches=1", "train.save_every=1000", "train.progress=false", "train.num_threads=1"]

# How each README command is exercised. "covered" names the test or target that runs it; every
# other entry gives the overrides that shrink it to seconds without changing what it does.
SHRINK = {
    "make demo": "covered: it is the demo itself, run on a fresh clone before every stop",
    "make test": "covered: this test suite",
    "pretrain configs/pretrain/mlm-small.yaml": [*TINY_MODEL, *TINY_TRAIN, "tokenizer.vocab_size=600"],
    "finetune configs/finetune/sst2.yaml": [*TINY_TRAIN, "train.epochs=0.0005", "train.batch_size=8",
                                            "glue.max_length=32"],  # epochs, when set, decide the steps
    "attention-map": [],
    "pretrain configs/pretrain/clm-shakespeare-char.yaml": [*TINY_MODEL, *TINY_TRAIN],
    "generate": ["max_new_tokens=5"],
    "cost configs/cost/quick.yaml": ["cost.lengths=[16,32]", "cost.d_models=[16,32]", "cost.repeats=1"],
    "race configs/race/default.yaml": "covered: tests/test_race.py::test_tiny_race_report_structure runs it, shrunk",
    "pretrain configs/pretrain/mlm-corpus.yaml": "covered: tests/test_mixture.py::test_mlm_corpus_recipe_runs_shrunk "
                                                 "runs it on bundled text (the corpus is not bundled)",
    "curve": "covered: tests/test_curve.py::test_tiny_curve_end_to_end runs it on a tiny run",
}


def fenced_blocks(language: str) -> list[str]:
    """The bodies of the README's ```language blocks."""
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def readme_commands() -> list[list[str]]:
    """Each command line of the README's bash blocks, split, comments dropped."""
    lines = [line.split("  #")[0].strip() for block in fenced_blocks("bash") for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def shrink_key(argv: list[str]) -> str:
    """The SHRINK entry of a command: `make X`, or the subcommand and its --config."""
    if argv[0] == "make":
        return " ".join(argv)
    assert argv[0] == "nlpattn", f"README command {argv} is neither `make` nor `nlpattn`"
    if "--config" in argv:
        return f"{argv[1]} {argv[argv.index('--config') + 1]}"
    return argv[1]


def test_every_readme_command_has_a_way_to_run():
    commands = readme_commands()
    assert len(commands) >= 8, commands
    missing = [" ".join(c) for c in commands if shrink_key(c) not in SHRINK]
    assert not missing, f"README commands no test runs: {missing}"


def test_readme_commands_run_in_order(tmp_path, monkeypatch):
    """The quickstart end to end: each command's outputs feed the next (runs/mlm-small → SST-2 → map)."""
    for name in ("configs", "data"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    ran = []
    for argv in readme_commands():
        extra = SHRINK[shrink_key(argv)]
        if isinstance(extra, str):
            continue
        assert main([*argv[1:], *extra]) == 0, argv
        ran.append(argv[1])
    assert ran.count("pretrain") == 2 and {"finetune", "attention-map", "generate", "cost"} <= set(ran)
    assert (tmp_path / "attn.html").read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html>")
    assert (tmp_path / "runs/finetune-sst2/eval/sst2.json").is_file()


def test_readme_python_block_runs(tmp_path):
    (block,) = fenced_blocks("python")
    done = subprocess.run([sys.executable, "-c", block + "\nprint(out.loss.item(), len(out.attentions))"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loss, layers = done.stdout.split()
    assert float(loss) > 0 and int(layers) >= 1


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces → '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("doc", ["README.md", "docs/usage.md", "docs/results.md", "docs/guide.md"])
def test_relative_links_and_anchors_resolve(doc):
    path = REPO / doc
    if not path.exists():
        pytest.fail(f"{doc} is linked from the README but missing")
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", linked.read_text(encoding="utf-8"), re.M)
            if anchor not in {github_anchor(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{doc}: broken links {broken}"


def test_readme_curve_table_is_the_generated_one():
    """The README's score-against-minutes table is curve.md's, as `nlpattn curve` wrote it."""
    table = [line for line in (REPO / "docs/pretrain-curve/curve.md").read_text(encoding="utf-8").splitlines()
             if line.startswith("|")]
    assert len(table) >= 3 and "\n".join(table) in README.read_text(encoding="utf-8")


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= 12_500, f"README.md is {size} bytes; the long parts belong in docs/"

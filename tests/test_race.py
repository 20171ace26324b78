"""`nlpattn race` (issue 18): a tiny race end to end on bundled data, resuming, pick_best, bad input."""
import gzip
import json
import re
from pathlib import Path

import pytest

from nlpattn.cli import main
from nlpattn.errors import ConfigError
from nlpattn.race.plan import pick_best

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/race/default.yaml")


def write_imdb(root: Path, n: int = 48) -> Path:
    """<root>/imdb/{train,test}.tsv.gz: tiny real-looking reviews, label 1 = positive."""
    (root / "imdb").mkdir(parents=True, exist_ok=True)
    good = "a wonderful moving film , the acting was great and i loved the ending"
    bad = "a dull boring mess , the plot was awful and i hated every minute of it"
    for split in ("train", "test"):
        rows = ["sentence\tlabel"] + [f"{good if i % 2 else bad} {i}\t{i % 2}" for i in range(n)]
        with gzip.open(root / "imdb" / f"{split}.tsv.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
    return root


def tiny(tmp: Path) -> list[str]:
    """Overrides that shrink the default race to seconds: 2 bodies, 2 lrs, 2 seeds, tiny subsets."""
    return [f"output_dir={tmp / 'race'}", f"data.train_files=[{REPO / 'data/wikitext-2/valid.txt.gz'}]",
            "data.train_weights=[]", "data.valid_fraction=0.05", "data.block_size=32", "tokenizer.vocab_size=400",
            "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.max_len=64",
            "train.batch_size=8", "train.max_steps=3", "train.eval_every=2", "train.log_every=1",
            "train.eval_batches=2", "train.final_eval_batches=2", "train.eval_batch_size=8", "train.num_threads=1",
            "race.bodies=transformer,cnn-se", "race.param_tolerance=5",
            "race.body_overrides=transformer model.n_layers=1,cnn-se model.n_layers=2 model.position=none",
            "race.lrs=[1.0e-3, 3.0e-3]", "race.sweep_minutes=0.1", "race.minutes=0.1", "race.seeds=2",
            "race.tasks=sst2,imdb", "race.imdb_lengths=[32, 64]", f"race.glue_dir={REPO / 'data/glue'}",
            f"race.imdb_dir={write_imdb(tmp / 'corpus')}", f"race.finetune_config={REPO / 'configs/finetune/glue.yaml'}",
            "race.finetune_overrides=train.batch_size=16,glue.max_length=64,train.num_threads=1,train.log_every=2",
            "race.max_train_examples=sst2=48,imdb=32", "race.max_eval_examples=sst2=40,imdb=24"]


@pytest.fixture(scope="module")
def race(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("race")
    overrides = tiny(tmp)
    assert main(["race", "--config", CONFIG, *overrides]) == 0
    return tmp / "race", overrides


def finished_files(out: Path) -> dict[str, float]:
    """mtime of every finished-run marker (pretraining summary.json, fine-tuning eval/*.json)."""
    marks = [*out.glob("sweep/*/*/summary.json"), *out.glob("pretrain/*/summary.json"),
             *out.glob("finetune/*/*/*/eval/*.json")]
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in marks}


def test_pick_best_of_known_losses():
    assert pick_best({1e-4: 3.2, 3e-4: 2.9, 1e-3: 3.0}) == 3e-4
    assert pick_best({1e-4: 3.2, 3e-3: float("nan"), 1e-3: None}) == 1e-4  # NaN / missing never win
    assert pick_best({1e-3: float("inf"), 3e-3: 5.0}) == 3e-3
    with pytest.raises(ConfigError, match="race.lrs"):
        pick_best({1e-3: float("nan")})


def test_tiny_race_report_structure(race):
    out, _ = race
    result = json.loads((out / "race.json").read_text())
    assert {"config", "cpu", "wall_seconds", "stage_seconds", "bodies"} <= set(result)
    assert set(result["stage_seconds"]) == {"data", "sweep", "pretrain", "finetune"}
    assert list(result["bodies"]) == ["transformer", "cnn-se"]
    for body, r in result["bodies"].items():
        assert r["params_body"] > 0 and r["params_total"] > r["params_body"]
        assert set(r["sweep"]) == {"0.001", "0.003"} and r["lr"] in (1e-3, 3e-3)
        assert r["lr"] == pick_best({float(k): v for k, v in r["sweep"].items()})
        p = r["pretrain"]
        assert p["val_loss"] > 0 and p["tokens_per_s"] > 0 and p["peak_rss_mb"] > 0 and p["flops_per_token"] > 0
        assert p["curve"] and all(len(point) == 3 for point in p["curve"])
        assert set(r["tasks"]) == {"sst2", "imdb-32", "imdb-64"}
        for key, t in r["tasks"].items():
            assert len(t["scores"]) == 2 and 0 <= t["mean"] <= 1 and t["std"] >= 0
            assert len(t["steps"]) == 2 and t["capped"] == 0
            assert t["train_tokens_per_s"] > 0 and t["peak_rss_mb"] > 0 and t["seconds_per_epoch"] > 0
            assert t["train_examples"] == (48 if key == "sst2" else 32)
            assert t["eval_examples"] == (40 if key == "sst2" else 24)
        assert r["tasks"]["imdb-64"]["seconds_per_epoch_25k_extrapolated"] > r["tasks"]["imdb-64"]["seconds_per_epoch"]
    md = (out / "race.md").read_text()
    for heading in ("## Pretraining", "## Downstream scores", "## Fine-tuning cost"):
        assert heading in md
    assert re.search(r"\| transformer \| [\d.]+ ± [\d.]+ \|", md) and "(extrapolated)" in md
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(figures) == 2 and all((out / f).is_file() and (out / f).stat().st_size > 0 for f in figures)


def test_resumed_race_redoes_only_unfinished_runs(race):
    out, overrides = race
    before = finished_files(out)
    assert len(before) == 4 + 2 + 12
    redo = out / "finetune/cnn-se/imdb-64/seed-1/eval/imdb.json"
    redo.unlink()  # as if interrupted during that run
    assert main(["race", "--config", CONFIG, *overrides]) == 0
    after = finished_files(out)
    assert set(after) == set(before)
    changed = {k for k in before if after[k] != before[k]}
    assert changed == {str(redo.relative_to(out))}


@pytest.mark.parametrize("override, key", [
    ("race.bodies=transformer,mamba", "race.bodies"),
    ("race.tasks=sst2,mnli", "race.tasks"),
    ("race.minutes=0", "race.minutes"),
    ("race.sweep_minutes=0.001", "race.sweep_minutes"),
    ("race.max_train_examples=sst2=lots", "race.max_train_examples"),
    ("data.train_files=[/nonexistent/corpus.txt.gz]", "data.train_files"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, override, key):
    assert main(["race", "--config", CONFIG, *tiny(tmp_path), override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err
    if key == "data.train_files":
        assert "/nonexistent/corpus.txt.gz" in err


def test_body_that_cannot_do_the_objective_names_race_bodies(tmp_path, capsys, monkeypatch):
    from nlpattn.bodies import _import_bodies
    from nlpattn.bodies.cnn import ConvBody

    _import_bodies()
    monkeypatch.setattr(ConvBody, "bidirectional_ok", False)
    assert main(["race", "--config", CONFIG, *tiny(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "race.bodies" in err and "cnn-se" in err


def test_unmatched_body_sizes_are_refused(tmp_path, capsys):
    assert main(["race", "--config", CONFIG, *tiny(tmp_path), "race.param_tolerance=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "race.body_overrides" in err and "transformer" in err and "cnn-se" in err


def test_default_config_matches_body_sizes():
    from nlpattn.config import load_config
    from nlpattn.race.plan import check_bodies, check_race

    cfg = load_config(CONFIG)
    check_race(cfg)
    sizes = check_bodies(cfg, CONFIG, [], 8192)
    assert list(sizes) == ["transformer", "lstm", "gru", "cnn", "cnn-se"]
    low, high = min(v["params_body"] for v in sizes.values()), max(v["params_body"] for v in sizes.values())
    assert high <= 1.1 * low


def test_a_run_stopped_by_a_signal_is_not_finished(tmp_path):
    from nlpattn.race.stages import finished

    done = tmp_path / "summary.json"
    assert not finished(done)
    done.write_text(json.dumps({"steps": 3, "stop_reason": "SIGTERM"}))
    assert not finished(done)  # resumed: redone from scratch, not reported
    done.write_text(json.dumps({"steps": 3, "stop_reason": "max_minutes"}))
    assert finished(done)


def test_an_unfinished_run_holding_foreign_files_is_not_deleted(race, capsys):
    """Resuming removes only what a killed race left; a run directory holding a file our runs do
    not write is refused (one line, exit 2) and left as it is."""
    out, overrides = race
    run = out / "finetune/transformer/sst2/seed-0"
    (run / "eval/sst2.json").unlink()  # unfinished…
    (run / "my-notes.txt").write_text("mine\n")  # …and holding a user's file
    capsys.readouterr()
    assert main(["race", "--config", CONFIG, *overrides]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # besides progress bars
    assert len(err) == 1 and "output_dir" in err[0] and "my-notes.txt" in err[0], err
    assert (run / "my-notes.txt").read_text() == "mine\n" and (run / "config.yaml").is_file()


def test_a_second_race_on_the_same_output_dir_is_refused(race, capsys):
    from nlpattn.rundir import RunDirGuard

    out, overrides = race
    capsys.readouterr()
    with RunDirGuard(out):  # as if another race held it
        assert main(["race", "--config", CONFIG, *overrides]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # besides progress bars
    assert len(err) == 1 and str(out) in err[0], err


def test_race_runs_unchanged_on_two_processes(tmp_path):
    """torchrun → Accelerate MULTI_CPU (gloo): every process runs every stage, only the main
    process writes, and the report comes out as in one process."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.fail("torchrun is not installed next to this python (it comes with torch)")
    overrides = [o for o in tiny(tmp_path) if not o.startswith("race.seeds")] + ["race.seeds=1"]
    script = tmp_path / "race.py"
    script.write_text("import sys\nfrom nlpattn.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), "race", "--config", CONFIG,
                           *overrides], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "race/race.json").read_text())
    assert set(report["bodies"]) == {"transformer", "cnn-se"}
    assert all(len(t["scores"]) == 1 for b in report["bodies"].values() for t in b["tasks"].values())
    assert done.stdout.count("nlpattn race: wrote") == 1  # the main process alone reports

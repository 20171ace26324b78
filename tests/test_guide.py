"""docs/guide.md: every code block runs, every quoted number comes from a results file make docs
wrote, every linked figure exists, the guide is its template rendered with those results, and
section 7's race table reads race.json (or says how to make it, with no numbers)."""
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts/docs"))

from guide_race import COMMAND, race_section, race_table  # noqa: E402
from guide_render import blocks, fill, run_block, strip_outputs  # noqa: E402

GUIDE, TEMPLATE = REPO / "docs/guide.md", REPO / "docs/guide.md.in"
RESULTS = REPO / "docs/results"
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
FENCE = re.compile(r"```.*?```", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
PLACEHOLDER = re.compile(r"\{\{.*?\}\}")


def prose(markdown: str) -> str:
    """The markdown outside code blocks and HTML comments."""
    return COMMENT.sub(" ", FENCE.sub(" ", markdown))


def numbers(text: str) -> set[str]:
    """Every number written in the text, thousands separators removed ('1,234' → '1234')."""
    return {n.replace(",", "") for n in NUMBER.findall(text)}


def unsourced_numbers(guide: str, template: str, results_text: str) -> set[str]:
    """Numbers in the guide's prose that neither the template's prose nor any results file holds."""
    allowed = numbers(PLACEHOLDER.sub(" ", prose(template))) | numbers(results_text)
    return numbers(prose(guide)) - allowed


def results_text() -> str:
    """All results files make docs wrote, as one text."""
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(RESULTS.glob("*.json")))


def fast_blocks() -> list[str]:
    """The guide's python blocks that run on tiny random models (default test run)."""
    return [code for speed, code in blocks(GUIDE.read_text(encoding="utf-8")) if speed == "fast"]


def slow_blocks() -> list[str]:
    """The guide's python blocks that load make docs' trained runs (`-m slow`)."""
    return [code for speed, code in blocks(GUIDE.read_text(encoding="utf-8")) if speed == "slow"]


def test_every_python_block_is_tagged_fast_or_slow():
    text = GUIDE.read_text(encoding="utf-8")
    assert text.count("```python") == len(blocks(text)) >= 8
    assert len(fast_blocks()) >= 4 and len(slow_blocks()) >= 3


@pytest.mark.parametrize("code", fast_blocks(), ids=lambda code: code.splitlines()[-1][:40])
def test_fast_block_runs(code, monkeypatch):
    monkeypatch.chdir(REPO)
    assert run_block(code).strip()  # each block prints what it shows


@pytest.mark.slow
@pytest.mark.parametrize("code", slow_blocks(), ids=lambda code: code.splitlines()[-1][:40])
def test_slow_block_runs_on_make_docs_runs(code, monkeypatch):
    from guide_runs import run_all

    run_all()  # make docs' runs under runs/docs/ (~9 min the first time; each one skipped once done)
    monkeypatch.chdir(REPO)
    assert run_block(code).strip()


def test_a_failing_block_fails():
    with pytest.raises(AssertionError):
        run_block("import torch\ntorch.testing.assert_close(torch.zeros(2), torch.ones(2))")


def test_every_quoted_number_comes_from_a_results_file():
    guide, template = GUIDE.read_text(encoding="utf-8"), TEMPLATE.read_text(encoding="utf-8")
    assert unsourced_numbers(guide, template, results_text()) == set()
    # and the check bites: a number typed into the guide by hand is caught
    tampered = guide.replace("## 8. What trained heads do", "## 8. What trained heads do (97.31% of them)")
    assert unsourced_numbers(tampered, template, results_text()) == {"97.31"}


def test_the_template_types_no_measurements_by_hand():
    text = PLACEHOLDER.sub(" ", prose(TEMPLATE.read_text(encoding="utf-8")))
    text = re.sub(r"§[\d.]+", " ", text)  # the paper's section numbers
    assert not re.findall(r"\d+\.\d+|\d+(?:\.\d+)?\s*%", text.replace("15 %", ""))


def test_the_guide_is_the_template_rendered_with_the_results():
    values = json.loads((RESULTS / "guide.json").read_text(encoding="utf-8"))
    rendered = fill(TEMPLATE.read_text(encoding="utf-8"), values)
    assert strip_outputs(GUIDE.read_text(encoding="utf-8")) == rendered
    assert "{{" not in rendered


def test_every_printed_output_follows_its_block():
    guide = GUIDE.read_text(encoding="utf-8")
    assert guide.count("```text") == len(blocks(guide))  # every block printed something


def test_every_linked_figure_exists():
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", GUIDE.read_text(encoding="utf-8"))
    assert len(links) >= 8
    missing = [link for link in links if not (REPO / "docs" / link).is_file()]
    assert missing == []
    assert {"img/guide/gates.png", "img/guide/masks.png", "img/guide/cross-attention.png",
            "img/guide/heads-char.png", "img/explorer.png"} <= set(links)


def test_the_commands_in_the_guide_are_the_ones_make_docs_ran():
    values = json.loads((RESULTS / "guide.json").read_text(encoding="utf-8"))
    shell = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    lines = [line for block in shell for line in block.splitlines() if line.strip()]
    assert lines and set(lines) <= set(values["commands"].values())
    for command in values["commands"].values():
        config = command.split("--config ")[1].split()[0]
        assert (REPO / config).is_file(), config


RACE = {"cpu": "Test CPU @ 2 cores", "wall_seconds": 5400.0, "bodies": {
    "transformer": {"params_body": 3160000, "params_total": 5260000, "lr": 0.001,
                    "pretrain": {"val_loss": 4.3217, "tokens_per_s": 2100.4, "peak_rss_mb": 1234.5,
                                 "flops_per_token": 3.1e7, "curve": [[10.0, 1e12, 6.1], [600.0, 6e13, 4.3217]]},
                    "tasks": {"sst2": {"metric": "accuracy", "scores": [0.81, 0.83], "mean": 0.82, "std": 0.01,
                                       "train_tokens_per_s": 9000.0, "peak_rss_mb": 900.0, "seconds_per_epoch": 120.0},
                              "cola": {"metric": "mcc", "scores": [0.1, 0.14], "mean": 0.12, "std": 0.02,
                                       "train_tokens_per_s": 9100.0, "peak_rss_mb": 800.0, "seconds_per_epoch": 20.0}}},
    "lstm": {"params_body": 3150000, "params_total": 5250000, "lr": 0.002,
             "pretrain": {"val_loss": 4.9876, "tokens_per_s": 3300.0, "peak_rss_mb": 999.0,
                          "flops_per_token": 2.9e7, "curve": [[10.0, 1e12, 6.3], [600.0, 5e13, 4.9876]]},
             "tasks": {"sst2": {"metric": "accuracy", "scores": [0.79, 0.8], "mean": 0.795, "std": 0.005,
                                "train_tokens_per_s": 8000.0, "peak_rss_mb": 700.0, "seconds_per_epoch": 150.0}}}}}


def test_race_table_reads_race_json(tmp_path):
    from guide_race import load_race, race_figure

    path = tmp_path / "race.json"
    path.write_text(json.dumps(RACE))
    race = load_race(path)
    table = race_table(race)
    rows = table.splitlines()
    assert rows[0].startswith("| body |") and "sst2 (accuracy, %)" in rows[0] and "cola (mcc, %)" in rows[0]
    assert rows[2].split(" | ")[:4] == ["| transformer", "3,160,000", "0.001", "4.322"]
    assert "82.0 ± 1.0" in rows[2] and "12.0 ± 2.0" in rows[2]
    assert "79.5 ± 0.5" in rows[3] and rows[3].rstrip(" |").endswith("–")  # the LSTM ran no CoLA
    section = race_section(race, "img/guide/race-curves.png")
    assert "Test CPU @ 2 cores" in section and "90 minutes" in section and "race-curves.png" in section
    assert race_figure(race, tmp_path / "fig.png").stat().st_size > 1000


def test_without_race_json_the_section_gives_the_command_and_no_numbers(tmp_path):
    from guide_race import load_race

    assert load_race(tmp_path / "race.json") is None
    section = race_section(None)
    assert COMMAND in section and "docs/race/" in section
    assert not re.search(r"\d", section.replace(COMMAND, ""))

"""nlpattn.allocator: with glibc, a step's freed memory stays in the process and is reused without
page faults, until release_free_memory hands it back; the environment switch turns it off;
elsewhere it reports False and changes nothing."""
import json
import subprocess
import sys

import pytest

from nlpattn import allocator

# In a fresh interpreter: "steps", each allocating 40 blocks of 4 MiB (a step's activations) and
# freeing them all; report page faults per step over three after three warm-up ones, the resident memory the
# kept heap adds, and what is left of it after release_free_memory.
PROBE = """
import json, resource, torch
from nlpattn import allocator
torch.set_num_threads(1)
applied = allocator.apply_from_environment()
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    blocks = [torch.ones(1 << 20) for _ in range(40)]
    del blocks
before = rss()
for _ in range(3):
    step()
f0 = faults()
for _ in range(3):
    step()
per_step = (faults() - f0) / 3
kept = rss() - before
allocator.release_free_memory()
print(json.dumps({"applied": applied, "faults_per_step": per_step, "kept_bytes": kept,
                  "kept_after_release": rss() - before}))
"""


def probe(switch: str) -> dict:
    """The probe's report in a new process with NLPATTN_KEEP_FREED_MEMORY=switch."""
    env = {"NLPATTN_KEEP_FREED_MEMORY": switch, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(allocator._glibc() is None, reason="mallopt is glibc's; this C library has none")
def test_a_steps_freed_memory_is_kept_and_reused_without_page_faults_until_released():
    kept, default = probe("1"), probe("0")
    assert kept["applied"] and not default["applied"]
    pages = 40 * (4 << 20) // 4096
    # (glibc's default hands some or all of the freed 160 MiB back, by its adaptive thresholds'
    # history: 40,929 or 341 faults a step in two runs of the same probe, so it is not asserted.)
    # Kept, each step reuses the last one's memory: no faults to speak of, the memory stays resident...
    assert kept["faults_per_step"] < 0.05 * pages and kept["kept_bytes"] > 128 << 20
    # ...until release_free_memory hands it back (a fresh peak-RSS reading must not count it).
    assert kept["kept_after_release"] < 32 << 20


def test_it_sets_the_trim_threshold_and_pins_the_mmap_threshold(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(allocator, "_glibc", lambda: FakeLibc())
    assert allocator.keep_freed_memory() is True
    assert sorted(calls) == [(allocator.M_MMAP_THRESHOLD, 32 << 20), (allocator.M_TRIM_THRESHOLD, 1 << 30)]


@pytest.mark.parametrize("value", ["0", "false", "Off", " no "])
def test_switch_off_leaves_the_allocator_alone(monkeypatch, value):
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda *a: pytest.fail("mallopt called"))
    assert allocator.apply_from_environment({"NLPATTN_KEEP_FREED_MEMORY": value}) is False


def test_without_glibc_it_reports_false(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.keep_freed_memory() is False
    assert allocator.release_free_memory() is False
    assert allocator.apply_from_environment({}) is False


def test_the_command_applies_it(monkeypatch):
    from nlpattn import cli

    calls = []
    monkeypatch.setattr(allocator, "apply_from_environment", lambda: calls.append(1) or True)
    assert cli.main(["info", "--config", "configs/pretrain/mlm-small.yaml"]) == 0
    assert calls == [1]


HUGE_PAGES_POSSIBLE = allocator.kernel_huge_page_mode() in ("madvise", "always")

# In a fresh interpreter whose environment may carry PyTorch's huge-page switch: minor page faults
# while a fresh 64 MiB block (a batch's logits at vocabulary 8192) is written, the huge pages the
# process then holds, and what memory_settings reports.
HUGE_PROBE = """
import json, resource, torch
from nlpattn import allocator
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def huge_kib():
    for line in open('/proc/self/smaps_rollup'):
        if line.startswith('AnonHugePages:'):
            return int(line.split()[1])
f0 = faults()
block = torch.empty(16 << 20).fill_(1.0)
print(json.dumps({"faults": faults() - f0, "huge_kib": huge_kib(), "settings": allocator.memory_settings()}))
"""


def huge_probe(switch: str) -> dict:
    """HUGE_PROBE's report in a new process with THP_MEM_ALLOC_ENABLE=switch."""
    env = {"THP_MEM_ALLOC_ENABLE": switch, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", HUGE_PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_memory_settings_report_huge_pages_exactly_when_pytorch_uses_them():
    asked, plain = huge_probe("1"), huge_probe("0")
    small_pages = (64 << 20) // 4096
    assert plain["settings"] == {"keep_freed_memory": False, "huge_pages": False}
    assert plain["faults"] > 0.9 * small_pages  # one fault per 4 KiB page written
    assert asked["settings"]["huge_pages"] is HUGE_PAGES_POSSIBLE
    if HUGE_PAGES_POSSIBLE:  # 2 MiB pages: a fault each
        assert asked["faults"] < 0.1 * small_pages and asked["huge_kib"] >= 32 << 10
    else:  # kernel mode "never", or no THP: the switch changes nothing
        assert asked["faults"] > 0.9 * small_pages


def test_kernel_huge_page_mode_reads_the_bracketed_word(tmp_path):
    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    assert allocator.kernel_huge_page_mode(mode) == "madvise"
    mode.write_text("[always] madvise never\n")
    assert allocator.kernel_huge_page_mode(mode) == "always"
    assert allocator.kernel_huge_page_mode(tmp_path / "absent") is None


def test_the_run_summary_says_what_memory_settings_it_ran_with(tmp_path):
    from test_train_utils import child_env, run_cli, tiny_overrides

    assert "THP_MEM_ALLOC_ENABLE" not in child_env()
    result = run_cli(["pretrain", *tiny_overrides(tmp_path / "data", tmp_path / "run", max_steps=2)])
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["memory"] == {"keep_freed_memory": allocator._glibc() is not None, "huge_pages": False}
    assert f"keep_freed_memory {'on' if allocator._glibc() else 'off'}, huge_pages off" in result.stdout + result.stderr

"""nlpattn.allocator: with glibc, freed large blocks stay in the process and are reused without
page faults; the environment switch turns it off; elsewhere it reports False and changes nothing."""
import json
import subprocess
import sys

import pytest

from nlpattn import allocator

# In a fresh interpreter: touch a 64 MiB tensor, free it, touch another; report RSS and page faults.
PROBE = """
import json, resource, sys, torch
from nlpattn import allocator
applied = allocator.apply_from_environment()
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
n = 64 << 20
before, f0 = rss(), faults()
a = torch.ones(n // 4); del a
after_free, f1 = rss(), faults()
b = torch.ones(n // 4); del b
f2 = faults()
print(json.dumps({"applied": applied, "kept_bytes": after_free - before, "first_faults": f1 - f0, "second_faults": f2 - f1}))
"""


def probe(switch: str) -> dict:
    """The probe's report in a new process with NLPATTN_KEEP_FREED_MEMORY=switch."""
    env = {"NLPATTN_KEEP_FREED_MEMORY": switch, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(allocator._glibc() is None, reason="mallopt is glibc's; this C library has none")
def test_freed_block_is_kept_and_reused_without_page_faults():
    kept, default = probe("1"), probe("0")
    assert kept["applied"] and not default["applied"]
    # glibc's default hands the 64 MiB block back on free; kept, it stays resident...
    assert default["kept_bytes"] < 16 << 20
    assert kept["kept_bytes"] > 48 << 20
    # ...so touching the next one faults almost no pages (the default faults every page in again).
    assert default["second_faults"] > 0.5 * default["first_faults"]
    assert kept["second_faults"] < 0.1 * kept["first_faults"]


@pytest.mark.parametrize("value", ["0", "false", "Off", " no "])
def test_switch_off_leaves_the_allocator_alone(monkeypatch, value):
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda *a: pytest.fail("mallopt called"))
    assert allocator.apply_from_environment({"NLPATTN_KEEP_FREED_MEMORY": value}) is False


def test_without_glibc_it_reports_false(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.keep_freed_memory() is False
    assert allocator.apply_from_environment({}) is False


def test_the_command_applies_it(monkeypatch):
    from nlpattn import cli

    calls = []
    monkeypatch.setattr(allocator, "apply_from_environment", lambda: calls.append(1) or True)
    assert cli.main(["info", "--config", "configs/pretrain/mlm-small.yaml"]) == 0
    assert calls == [1]

"""The commands keep freed memory for reuse (cli/allocator.py): a freed 64 MB buffer comes back without page faults."""
from __future__ import annotations

import subprocess
import sys

import pytest

# Writes a 64 MB tensor three times, freeing it in between; prints the minor page faults of the last write (glibc
# settles on reusing the freed chunk from the second reuse on).
PROBE = """
import resource, sys, torch
from topreward.cli.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(1)
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_buffer_is_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    assert faults("default") > pages // 2  # glibc unmaps a buffer this large on free: every page faults again
    assert faults("keep") < pages // 20


def test_the_command_sets_it(monkeypatch, tmp_path):
    from topreward import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["score", str(tmp_path / "missing.mp4"), "-i", "x"]) == 2  # fails on its input, after setting it
    assert calls == [1]

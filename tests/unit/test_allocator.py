"""The malloc tuning for training: applied on glibc, skipped where the user chose their own; the
command line's restart with huge pages for large blocks."""

import ctypes
import os
import subprocess
import sys

import pytest

from dens_lightning import allocator
from dens_lightning.allocator import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_on_glibc_and_allocations_still_work():
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("no glibc here")
    assert keep_freed_memory()
    import torch

    for size in (5_000_000, 40_000_000):  # 20 MB blocks from the heap, 160 MB ones still mapped
        for _ in range(3):
            blocks = [torch.ones(size) for _ in range(2)]
            assert all(float(b[::1000].sum()) == size // 1000 for b in blocks)
            del blocks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_still_tuned_after_the_restart_with_huge_pages(monkeypatch):
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("no glibc here")
    monkeypatch.setenv("GLIBC_TUNABLES", allocator.HUGE_PAGES)  # ours: not a choice of the user's
    assert keep_freed_memory()


@pytest.mark.parametrize(
    "variable, value",
    [
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("DENS_LIGHTNING_MALLOC", "system"),
        ("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=0"),
    ],
)
def test_left_alone_when_the_user_chose(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert not keep_freed_memory()


@pytest.fixture
def huge_pages_possible(monkeypatch):
    """A machine where the restart applies: glibc 2.36, huge pages on request, nothing chosen."""
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(allocator, "glibc_version", lambda: (2, 36))
    monkeypatch.setattr(allocator, "transparent_huge_pages", lambda: "madvise")


def test_huge_pages_environment_adds_the_tunable(huge_pages_possible):
    environment = allocator.huge_pages_environment({"PATH": "/bin"})
    assert environment == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


@pytest.mark.parametrize(
    "environ",
    [
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},  # the user's own tunables
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},  # already restarted: no loop
        {"DENS_LIGHTNING_MALLOC": "system"},
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
    ],
)
def test_huge_pages_environment_leaves_the_users_choice(huge_pages_possible, environ):
    assert allocator.huge_pages_environment(environ) is None


@pytest.mark.parametrize("version, mode", [((2, 34), "madvise"), (None, "madvise"), ((2, 36), "never")])
def test_no_restart_where_it_gives_nothing(huge_pages_possible, monkeypatch, version, mode):
    monkeypatch.setattr(allocator, "glibc_version", lambda: version)
    monkeypatch.setattr(allocator, "transparent_huge_pages", lambda: mode)
    assert allocator.huge_pages_environment({}) is None


def test_transparent_huge_pages_reads_the_bracketed_mode(monkeypatch, tmp_path):
    setting = tmp_path / "enabled"
    setting.write_text("always [madvise] never\n")
    monkeypatch.setattr(allocator, "THP_SETTING", setting)
    assert allocator.transparent_huge_pages() == "madvise"
    monkeypatch.setattr(allocator, "THP_SETTING", tmp_path / "missing")
    assert allocator.transparent_huge_pages() is None


RESTARTED = """
import os
from dens_lightning.allocator import restart_with_huge_pages
print("before", os.getpid(), flush=True)
restart_with_huge_pages()
import torch
x = torch.ones(100_000_000)  # 400 MB: a mapped block, as a large system's edge tensors are
huge = [line.split()[1] for line in open("/proc/self/smaps_rollup") if line.startswith("AnonHugePages")]
print("after", os.getpid(), os.environ.get("GLIBC_TUNABLES"), huge[0])
"""


def test_restart_keeps_the_process_and_gets_huge_pages():
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if allocator.huge_pages_environment(environ) is None:
        pytest.skip("no glibc 2.35+ with transparent huge pages here")
    done = subprocess.run(
        [sys.executable, "-c", RESTARTED], env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    before = [line.split()[1] for line in lines if line.startswith("before")]
    after = [line.split()[1:] for line in lines if line.startswith("after")]
    assert len(before) == 2 and len(after) == 1  # one restart, then on: no loop
    pid, tunable, huge_kb = after[0]
    assert before == [pid, pid]  # exec: the same process
    assert tunable == "glibc.malloc.hugetlb=1"
    assert int(huge_kb) > 0  # the large block is backed by huge pages

"""The malloc tuning for training: applied on glibc, skipped where the user chose their own."""

import ctypes
import sys

import pytest

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


@pytest.mark.parametrize(
    "variable, value", [("MALLOC_MMAP_THRESHOLD_", "131072"), ("DENS_LIGHTNING_MALLOC", "system")]
)
def test_left_alone_when_the_user_chose(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert not keep_freed_memory()

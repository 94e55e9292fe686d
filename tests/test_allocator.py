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

    blocks = [torch.ones(5_000_000) for _ in range(3)]  # 20 MB each: below the raised mmap threshold
    assert all(float(b.sum()) == 5_000_000 for b in blocks)


def test_left_alone_when_the_user_set_malloc(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert not keep_freed_memory()

"""The one-line fix that schnetpack 2.1.1 needs on torch >= 2.13, applied to the bench environment.

schnetpack/data/loader.py imports ``T_co`` from ``torch.utils.data.dataloader``, which torch 2.13 no
longer exports; the fix defines the same covariant TypeVar in that line. Idempotent: run by
``make bench-install`` after ``pip install --no-deps schnetpack==2.1.1``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BROKEN = "from torch.utils.data.dataloader import _collate_fn_t, T_co"
FIXED = (
    "from torch.utils.data.dataloader import _collate_fn_t; from typing import TypeVar; "
    'T_co = TypeVar("T_co", covariant=True)  # dens_lightning bench: torch 2.13 no longer exports T_co'
)


def main() -> int:
    spec = importlib.util.find_spec("schnetpack")
    if spec is None or spec.origin is None:
        print("schnetpack is not installed in this environment", file=sys.stderr)
        return 1
    loader = Path(spec.origin).parent / "data" / "loader.py"
    text = loader.read_text()
    if FIXED in text:
        return 0
    if BROKEN not in text:
        print(f"{loader}: the T_co import line was not found; is this schnetpack 2.1.1?", file=sys.stderr)
        return 1
    loader.write_text(text.replace(BROKEN, FIXED))
    print(f"patched {loader}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

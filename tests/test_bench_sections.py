"""BENCHMARKS.md sections as bench/ writes them: each name once, in place, the rest untouched."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from common import with_section  # noqa: E402

DOC = "# Benchmarks\n\n<!-- a -->\nold a\n<!-- /a -->\n\n<!-- b -->\nb\n<!-- /b -->\n"


def test_a_section_is_replaced_in_place():
    assert with_section(DOC, "a", ["new a"]) == DOC.replace("old a", "new a")


def test_a_new_section_goes_at_the_end():
    assert with_section(DOC, "c", ["c"]) == DOC + "\n<!-- c -->\nc\n<!-- /c -->\n"


def test_later_copies_of_a_section_are_dropped():
    doubled = DOC + "\n<!-- a -->\nstale a\n<!-- /a -->\n"
    assert with_section(doubled, "a", ["new a"]) == DOC.replace("old a", "new a")
    between = DOC.replace("<!-- b -->", "<!-- a -->\nstale\n<!-- /a -->\n\n<!-- b -->")
    assert with_section(between, "a", ["new a"]) == DOC.replace("old a", "new a")


def test_an_unclosed_section_is_an_error():
    with pytest.raises(ValueError, match="<!-- /a -->"):
        with_section(DOC.replace("<!-- /a -->", ""), "a", ["new a"])


def test_a_bench_run_keeps_one_copy_of_each_section():
    from run import kept_sections

    doubled = DOC + "\n<!-- a -->\nstale a\n<!-- /a -->\n"
    assert kept_sections(doubled) == ["<!-- a -->\nold a\n<!-- /a -->", "<!-- b -->\nb\n<!-- /b -->"]


def test_make_bench_runs_every_script_that_writes_a_section():
    from run import SCRIPTS

    bench = Path(__file__).resolve().parent.parent / "bench"
    run_by_hand = {"before_after.py"}  # compares two commits named on its command line
    writers = {
        path.name
        for path in bench.glob("*.py")
        if "write_section(" in path.read_text() and path.name not in {"common.py", *run_by_hand}
    }
    assert writers == {Path(command[0]).name for command in SCRIPTS.values()}

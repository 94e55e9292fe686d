"""BENCHMARKS.md sections as bench/ writes them: each name once, in place, the rest untouched."""

import json

import pytest

from bench.common import with_section
from tests.conftest import ROOT

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
    from bench.run import kept_sections

    doubled = DOC + "\n<!-- a -->\nstale a\n<!-- /a -->\n"
    assert kept_sections(doubled) == ["<!-- a -->\nold a\n<!-- /a -->", "<!-- b -->\nb\n<!-- /b -->"]


def test_make_bench_runs_every_script_that_writes_a_section():
    from bench.run import SCRIPTS

    bench = ROOT / "bench"
    # before_after compares two commits named on its command line; accuracy takes hours and stability
    # runs the models it trained (their own target)
    run_by_hand = {"before_after.py", "accuracy.py", "stability.py"}
    writers = {
        f"bench.{path.stem}"
        for path in bench.glob("*.py")
        if "write_section(" in path.read_text() and path.name not in {"common.py", *run_by_hand}
    }
    assert writers == {command[0] for command in SCRIPTS.values()}  # each run as python -m bench.NAME


def test_py_spy_samples_go_to_the_deepest_group():
    from bench.loop_profile import group_samples

    fit = "run (lightning/pytorch/loops/fit_loop.py:217)"
    step = f"{fit};step (torch/optim/adam.py:227)"
    loops = "lightning/pytorch/loops"
    raw = "\n".join(
        [
            f"main (dens_lightning/cli.py:1);{step};backward_fn ({loops}/x.py:1);mm (t.py:1) 5",
            f"{step};_training_step ({loops}/x.py:1);log_parts (dens_lightning/tasks/logging.py:1) 2",
            f"{step};_fused_adamw (torch/optim/adamw.py:1) 3",
            f"{fit};__next__ ({loops}/fetchers.py:134);collate (dens_lightning/data/graph.py:1) 4",
            f"{fit};_find_and_load (<frozen importlib._bootstrap>:1) 1",
            f"{fit};advance ({loops}/fit_loop.py:469) 6",
            "read_structures (dens_lightning/data/readers.py:92) 7",
        ]
    )
    counts = group_samples(raw)
    assert counts["backward"] == 5
    assert counts["logging"] == 2
    assert counts["optimizer update"] == 3
    assert counts["data (reading, collation, neighbour lists)"] == 4
    assert counts["imports"] == 1
    assert counts["rest of the training loop"] == 6
    assert counts["other"] == 7
    assert sum(counts.values()) == 28


def test_alternating_trials_swap_order_and_pass_each_conditions_arguments_and_environment(
    tmp_path, monkeypatch
):
    from bench.common import alternating_trials

    (tmp_path / "bench_trial_probe.py").write_text(
        "import json, os, sys\n"
        "print(json.dumps({'args': sys.argv[2:], 'tunables': os.environ.get('GLIBC_TUNABLES')}))\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # where python -m finds the probe module
    script = "bench_trial_probe"
    conditions = (("a", ("1",), {"GLIBC_TUNABLES": None}), ("b", ("2",), {"GLIBC_TUNABLES": "x=1"}))
    first = alternating_trials(script, conditions, 0, "case")
    assert list(first) == ["a", "b"]
    assert first["a"] == {"args": ["case", "1"], "tunables": None}
    assert first["b"] == {"args": ["case", "2"], "tunables": "x=1"}
    assert list(alternating_trials(script, conditions, 1, "case")) == ["b", "a"]


def test_wall_clock_checkpoints_are_written_at_each_training_time_and_stop_the_run(tmp_path):
    import ase.io
    import lightning

    from bench.accuracy import evaluate_checkpoint
    from bench.md_stability import calculator, langevin_run
    from bench.timed_training import WRITTEN, calculator_errors, wall_clock_callback
    from dens_lightning.artifacts import load_potential
    from dens_lightning.calculator import DensCalculator
    from dens_lightning.config import load_config
    from dens_lightning.data.embedded import embedded_dataset
    from dens_lightning.data.readers import ReadOptions, read_structures
    from dens_lightning.evaluation import evaluate_structures
    from dens_lightning.runner import run_finetune
    from tests.conftest import TINY_EMBEDDED, TINY_MODEL

    clock = wall_clock_callback(lightning.Callback, [0.3, 0.6], tmp_path / "timed")
    overrides = [*TINY_EMBEDDED, *TINY_MODEL, "data.embedded.labeller=mmff", "data.batch_size=4"]
    cfg = load_config("finetune", overrides=[*overrides, "trainer.max_epochs=-1", "task.scheduler=plateau"])
    run_finetune(cfg, tmp_path / "run", progress=False, callbacks=[clock])
    assert [w["seconds"] for w in clock.written] == [0.3, 0.6]
    assert all(w["training_seconds"] >= w["seconds"] for w in clock.written)
    assert 0 < clock.written[0]["step"] < clock.written[1]["step"]
    assert json.loads((tmp_path / "timed" / WRITTEN).read_text()) == clock.written
    assert clock.clock.seconds() < 60  # stopped at the last mark (the epochs are unlimited)
    path = embedded_dataset(cfg.data.embedded)
    frames = ase.io.read(path, ":")
    errors = evaluate_checkpoint(tmp_path / "timed" / "0.6s.ckpt", frames)
    assert errors["n_structures"] == len(frames) and errors["forces_mae_meV_per_A"] > 0
    # the errors every code is scored by are the package's own evaluation of the same model
    model = tmp_path / "run" / "model.safetensors"
    mine = calculator_errors(DensCalculator(model), frames)
    package, _ = evaluate_structures(load_potential(model), read_structures(path, ReadOptions()))
    for key in ("energy_mae_meV", "forces_mae_meV_per_A", "forces_rmse_meV_per_A"):
        assert mine[key] == pytest.approx(package[key], rel=1e-4), key
    # the stability benchmark runs dynamics with the same snapshot
    stability = langevin_run(
        frames[0], calculator("ours-painn", tmp_path / "timed" / "0.6s.ckpt"), 0.005, 500.0, 0
    )
    steps = stability["stable_ps"] * 1000 / 0.5  # whole 0.5 fs steps, all 10 of them when intact
    assert steps == pytest.approx(round(steps)) and 0 <= steps <= 10
    assert (stability["failure"] is None) == (steps == pytest.approx(10))

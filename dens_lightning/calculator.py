"""An ASE calculator around a trained model: energies (eV), forces (eV/Å) and, for periodic cells,
stress (eV/Å³) for dynamics, relaxations and anything else ASE drives.

    from dens_lightning.calculator import DensCalculator
    atoms.calc = DensCalculator("runs/finetune/aspirin")   # a run directory, model file or model
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .allocator import keep_freed_memory
from .data.atoms import atoms_graph
from .errors import InputError
from .models.potential import Potential


class DensCalculator(Calculator):
    """Energies and forces of a dens_lightning model, and the stress of cells periodic in all three
    directions (from the strain derivative; ASE's sign and Voigt order). ``model``: a run directory, a
    ``model.safetensors`` file or a loaded :class:`Potential`; ``device``: where it runs. Or a ``.pt2``
    file from ``export`` (a torch.export program, or an AOTInductor package: compiled, faster for small
    molecules on the CPU; BENCHMARKS.md, sections calculator and export), which runs on the device it
    was exported for.

    ``compile=True`` compiles a model (not a ``.pt2`` file) with AOTInductor on first use: checked
    against the eager model, then kept in a cache (:func:`~dens_lightning.export.compiled`; as long as
    an export the first time, BENCHMARKS.md section export, nothing the next) and run instead of it.

    ``low_memory=True`` recomputes each block's activations in the force backward instead of keeping
    them (:meth:`~dens_lightning.models.potential.Potential.recompute_blocks`), for systems too large
    for memory otherwise: a fraction of the peak memory for slower calls (BENCHMARKS.md, section
    low-memory). Eager models only; set on (or off) the Potential you pass.

    The model runs in its own precision (float64 models give float64 dynamics). ``batch`` evaluates
    many structures in one call (one batched forward). Creating one tunes glibc's malloc for large
    force evaluations (:mod:`dens_lightning.allocator`; ``DENS_LIGHTNING_MALLOC=system`` opts out).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: str | Path | Potential,
        device: str | torch.device = "cpu",
        compile: bool = False,
        low_memory: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        keep_freed_memory()
        self.potential, self.exported = None, None
        exported_file = isinstance(model, (str, Path)) and Path(model).suffix == ".pt2"
        if low_memory and (compile or exported_file):
            raise InputError(
                "DensCalculator: low_memory=True runs the eager model; it cannot be combined "
                "with compile=True or a .pt2 file"
            )
        if exported_file:
            from .export import ExportedModel  # `export` output: it runs where it was exported for

            self.exported = ExportedModel(model)
            self.device, self.dtype = self.exported.device, self.exported.dtype
            return
        if not isinstance(model, Potential):
            from .artifacts import load_model

            model = load_model(model, device=device)
        self.potential = model.to(device).eval().recompute_blocks(low_memory)
        self.device = torch.device(device)
        self.dtype = next(self.potential.parameters()).dtype
        if compile:
            from .export import ExportedModel, compiled

            self.exported = ExportedModel(compiled(self.potential, self.device))

    def batch(self, images: Sequence[Atoms]) -> list[dict[str, float | np.ndarray]]:
        """The results of many structures from one batched forward, one dict per structure as ASE
        keeps them: ``energy`` and ``free_energy`` (eV), ``forces`` [N_b, 3] (eV/Å), and ``stress``
        (Voigt [6], eV/Å³) for cells periodic in all three directions."""
        periodic = [bool(np.all(a.pbc)) for a in images]
        if self.exported is not None:  # builds its own graph and neighbour list
            out = self.exported.predict(images)
        else:
            graph = atoms_graph(images, self.dtype).to(self.device)
            out = self.potential(graph, compute_forces=True, create_graph=False, compute_virial=any(periodic))
        energies = out["energy"].cpu().double().numpy()
        forces = out["forces"].cpu().double().numpy()
        ptr = np.cumsum([0, *(len(a) for a in images)]).tolist()
        results = []
        for i in range(len(images)):
            result = {"energy": float(energies[i]), "free_energy": float(energies[i])}
            result["forces"] = forces[ptr[i] : ptr[i + 1]]
            if periodic[i]:  # stress = -virial / V (ASE's sign: positive under tension)
                virial = out["virial"][i].cpu().double().numpy()
                result["stress"] = full_3x3_to_voigt_6_stress(-virial / images[i].get_volume())
            results.append(result)
        return results

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        (self.results,) = self.batch([self.atoms])

"""Export a model for use outside Python: one ahead-of-time graph of energy, forces and virial.

The exported function takes a batch with its neighbour list already built (as MD codes provide it)::

    energy [B], forces [N, 3], virial [B, 3, 3] = f(z [N] int64, pos [N, 3], cell [B, 3, 3],
                                                   batch [N] int64, edge_index [2, E] int64,
                                                   edge_shift [E, 3])

Units Å and eV; ``edge_index`` holds (neighbour j, centre i) pairs within the cutoff, both directions,
and the vector from i to j is ``pos[j] - pos[i] + edge_shift`` (as in
:class:`~dens_lightning.data.graph.Graph`);
``forces = -dE/dpos``, ``virial = -dE/dε`` (stress = -virial / volume). The number of atoms, edges
and structures is free; dtype and device are the model's.

How: the forward pass and its gradient are traced together into aten operations with symbolic
shapes (``make_fx``; ``torch.export`` cannot yet trace ``autograd.grad`` itself), then that graph is
exported. Formats:

- ``pt2``: a ``torch.export`` program (``torch.export.load(path).module()``); portable, no compiler.
- ``aoti``: AOTInductor, compiled ahead of time into a package that C++ loads with
  ``torch::inductor::AOTIModelPackageLoader`` and Python with ``torch._inductor.aoti_load_package``
  (needs a C++ compiler at export time; CUDA packages need ``--device cuda``).

The model's metadata (cutoff, elements, units, ...) travels inside either file as JSON.
"""

from .packaging import (
    FORMATS,
    cache_directory,
    compiled,
    export_and_check,
    export_model,
    fingerprint,
    has_cxx_compiler,
)
from .runtime import METADATA_FILE, ExportedModel
from .tracing import INPUT_NAMES, ForceField, graph_inputs, trace

__all__ = [
    "FORMATS",
    "INPUT_NAMES",
    "METADATA_FILE",
    "ExportedModel",
    "ForceField",
    "cache_directory",
    "compiled",
    "export_and_check",
    "export_model",
    "fingerprint",
    "graph_inputs",
    "has_cxx_compiler",
    "trace",
]

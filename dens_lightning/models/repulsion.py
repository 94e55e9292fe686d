"""A short-range nuclear repulsion added to a potential's energy: the ZBL universal screened
Coulomb potential (Ziegler, Biersack, Littmark, *The Stopping and Range of Ions in Solids*, 1985),
switched off smoothly below a distance per element pair: a fraction of its shortest distance in the
training data, or of the sum of the two covalent radii.

Training data near equilibrium hold no close contacts, so a network's energy at short range is
unconstrained and molecular dynamics can fall into it (atoms collapsing onto each other). The ZBL
term makes the energy rise like ``Z_i Z_j e² / r`` as two nuclei meet; the network learns the rest.
Where it switches off matters. By default (``model.zbl_data_switch``) each element pair switches
at a fraction (0.9) of its shortest distance in the training data, written to ``model.zbl_reach``
(Å per element pair) when training starts: the term is then zero on every training structure and
reaches as far out as the data allow (H–H beyond 1 Å where hydrogens never come closer). Pairs
without a reach switch at ``model.zbl_switch`` (``s``) times their covalent radii sum, the rule
MACE's and nequip's optional ZBL terms apply to every pair; that sum lies inside bond vibrations
(C–H 1.07 Å, O–H 0.97 Å), where the term is felt at room temperature, and a fraction of it starts
late for pairs that never bond (two hydrogens: s × 0.62 Å). See the dynamics guide for what each costs.

    E_rep = Σ_{pairs i<j} (e² / 4πε₀) Z_i Z_j / r · φ(r / a) · u(r / (s (R_i + R_j)))
    a = 0.8854 a₀ / (Z_i^0.23 + Z_j^0.23)
    φ(x) = 0.18175 e^(-3.19980 x) + 0.50986 e^(-0.94229 x) + 0.28022 e^(-0.40290 x) + 0.02817 e^(-0.20162 x)

``R``: ASE's covalent radii (Å), ``s (R_i + R_j)`` replaced by the pair's ``zbl_reach`` where set;
``u``: the polynomial envelope of Klicpera et al. (DimeNet, 2020) with p = 6, which goes to zero with
its first two derivatives at 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from ase.data import atomic_numbers, chemical_symbols, covalent_radii
from torch import Tensor, nn

from ..data.graph import Graph
from .base import pair_vectors

COULOMB = 14.399645  # e² / 4πε₀ in eV·Å
SCREENING_LENGTH = 0.46850  # 0.8854 a₀ in Å
COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
ENVELOPE_POWER = 6


def polynomial_envelope(x: Tensor, p: int = ENVELOPE_POWER) -> Tensor:
    """1 at x = 0, falling to 0 at x = 1 with its first and second derivatives; 0 beyond (x is
    clamped to 1). DimeNet's 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), evaluated as
    (1 - x)³ Σ_{k<p} C(k+2, 2) x^k, which is never negative in floating point either."""
    x = x.clamp(max=1.0)
    series = torch.full_like(x, (p + 1) * p / 2)
    for k in range(p - 2, -1, -1):
        series = series * x + (k + 2) * (k + 1) / 2
    return (1 - x) ** 3 * series


def zbl_screening(x: Tensor, exponents: Tensor, coefficients: Tensor) -> Tensor:
    """The ZBL universal screening function φ(x), x = r / a (φ(0) = 1), of [P] values, from the
    :data:`EXPONENTS` and :data:`COEFFICIENTS` as [4] tensors."""
    return torch.exp(x[:, None] * -exponents) @ coefficients


def pair_name(z_a: int, z_b: int) -> str:
    """``"C-H"``: the two element symbols, the heavier first."""
    heavy, light = max(z_a, z_b), min(z_a, z_b)
    return f"{chemical_symbols[heavy]}-{chemical_symbols[light]}"


def parse_reach(reach: Mapping[str, float], cutoff: float) -> dict[tuple[int, int], float]:
    """``{"C-H": 0.85, ...}`` (``model.zbl_reach``, Å) as ``{(1, 6): 0.85, ...}`` (atomic numbers,
    smaller first). Refuses a key that is not two element symbols joined by ``-`` and a distance
    outside (0, ``cutoff``] (beyond the cutoff the pair is not in the neighbour list, and the term would
    jump to zero there)."""
    parsed = {}
    for key, distance in reach.items():
        symbols = str(key).split("-")
        if len(symbols) != 2 or not all(atomic_numbers.get(s, 0) > 0 for s in symbols):
            raise ValueError(
                f"model.zbl_reach: {key!r}: expected two element symbols joined by '-', e.g. 'C-H'"
            )
        if not 0.0 < float(distance) <= cutoff:
            raise ValueError(
                f"model.zbl_reach.{key}={distance}: expected a distance in (0, cutoff={cutoff}] Å"
            )
        a, b = sorted(atomic_numbers[s] for s in symbols)
        parsed[(a, b)] = float(distance)
    return parsed


def reach_from_data(
    shortest: Mapping[tuple[int, int], float], fraction: float, cutoff: float
) -> dict[str, float]:
    """``model.zbl_reach`` from each element pair's shortest distance in the training data (Å):
    ``fraction`` of it, at most the ``cutoff``, rounded down to 0.1 mÅ (the value is written to the
    config and model file; rounding down keeps it inside the data)."""
    return {
        pair_name(a, b): min(math.floor(fraction * distance * 1e4) / 1e4, cutoff)
        for (a, b), distance in sorted(shortest.items())
    }


class ZBLRepulsion(nn.Module):
    """Per-structure ZBL energy (eV) of the pairs in a batch's neighbour list, in the dtype of the
    positions, switched off at ``switch`` times each pair's covalent radii sum, or at ``reach[(Z_a,
    Z_b)]`` (Å, Z_a <= Z_b) for the pairs listed there. Has no parameters: what depends on the two
    elements alone (Z_i Z_j e²/4πε₀, a and the switch distance) is a table per element pair, a
    buffer indexed by atomic numbers up to ``max_z``."""

    def __init__(self, max_z: int, switch: float = 1.0, reach: Mapping[tuple[int, int], float] | None = None):
        super().__init__()
        self.max_z, self.switch = max_z, switch
        known = min(max_z + 1, len(covalent_radii))
        radii = torch.zeros(max_z + 1, dtype=torch.float64)
        radii[:known] = torch.as_tensor(covalent_radii[:known])
        z = torch.arange(max_z + 1, dtype=torch.float64)
        zi, zj = z[:, None], z[None, :]
        switch_at = switch * (radii[:, None] + radii[None, :])
        for (a, b), distance in (reach or {}).items():
            if max(a, b) <= max_z:
                switch_at[a, b] = switch_at[b, a] = distance
        pairs = torch.stack([COULOMB * zi * zj, SCREENING_LENGTH / (zi**0.23 + zj**0.23), switch_at], dim=-1)
        self.register_buffer("pairs", pairs.reshape(-1, 3).float(), persistent=False)
        self.register_buffer("exponents", torch.tensor(EXPONENTS), persistent=False)
        self.register_buffer("coefficients", torch.tensor(COEFFICIENTS), persistent=False)

    def forward(self, graph: Graph) -> Tensor:
        _, distance = pair_vectors(graph)
        j, i = graph.edge_index[:, : distance.shape[0]]
        species = graph.z.index_select(0, i) * (self.max_z + 1) + graph.z.index_select(0, j)
        charges, screening, reach = self.pairs.index_select(0, species).to(distance.dtype).unbind(-1)
        screened = zbl_screening(
            distance / screening, self.exponents.to(distance.dtype), self.coefficients.to(distance.dtype)
        )
        pair = charges / distance * screened
        pair = pair * polynomial_envelope(distance / reach)
        if not graph.paired:  # every pair listed in both directions
            pair = 0.5 * pair
        structure = graph.batch.index_select(0, i)
        return pair.new_zeros(graph.num_graphs).index_add(0, structure, pair)

"""Names of the fields a :class:`~dens_lightning.data.graph.Graph` carries."""

Z = "z"  # atomic numbers, int64 [N]
POS = "pos"  # Cartesian positions, Å [N, 3]
BATCH = "batch"  # structure index of each atom, int64 [N]
PTR = "ptr"  # offsets of each structure's first atom, int64 [B + 1]
CELL = "cell"  # lattice vectors as rows, Å [B, 3, 3]
PBC = "pbc"  # periodic directions, bool [B, 3]
ENERGY = "energy"  # total energy, eV [B]
FORCES = "forces"  # eV/Å [N, 3]
EDGE_INDEX = "edge_index"  # (source j, target i), int64 [2, E]
EDGE_SHIFT = "edge_shift"  # Cartesian shift added to pos[j], Å [E, 3]
FIXED = "fixed"  # atoms that must not move, bool [N]

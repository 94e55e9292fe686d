"""The Backbone interface and the registry of backbones.

A backbone maps a batch to per-atom features and declares what it produces; heads turn features
into energies or noise vectors; tasks own the losses. A backbone never knows which stage it is in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..data.graph import Graph


@dataclass
class Features:
    """Per-atom features: invariant ``scalars`` [N, F]; equivariant ``vectors`` [N, 3, F] (polar,
    Cartesian x, y, z) where the backbone has them; all degrees ``irreps`` [N, (lmax+1)^2, C] where
    the backbone has higher ones."""

    scalars: Tensor
    vectors: Tensor | None = None
    irreps: Tensor | None = None


@dataclass
class BackboneConfig:
    """Hyperparameters every backbone has; a backbone's own config subclasses this."""

    cutoff: float = 5.0  # Å
    max_z: int = 100  # embeddings are indexed by atomic number up to this
    zbl: bool = False  # add the ZBL short-range repulsion to the energy (models/repulsion.py)
    zbl_switch: float = 1.0  # pairs without a zbl_reach: the ZBL term is zero from this fraction of R_i + R_j
    # per element pair ("C-H": Å), where the ZBL term reaches zero instead; filled in by zbl_data_switch
    zbl_reach: dict[str, float] = dataclasses.field(default_factory=dict)
    # at training start, set zbl_reach of every element pair in the training split to this fraction of
    # the pair's shortest distance there (null: the pairs not in zbl_reach keep zbl_switch x radii sum)
    zbl_data_switch: float | None = 0.9

    def __post_init__(self) -> None:
        from .repulsion import parse_reach

        if not 0.0 < self.zbl_switch <= 1.0:
            raise ValueError(f"model.zbl_switch={self.zbl_switch}: expected a fraction in (0, 1]")
        if self.zbl_data_switch is not None and not 0.0 < self.zbl_data_switch <= 1.0:
            raise ValueError(
                f"model.zbl_data_switch={self.zbl_data_switch}: expected null or a fraction in (0, 1]"
            )
        parse_reach(self.zbl_reach, self.cutoff)


class Backbone(nn.Module):
    """Subclass, set ``name`` and ``Config``, implement ``forward``, and decorate with
    :func:`register_backbone`."""

    name: ClassVar[str]
    Config: ClassVar[type[BackboneConfig]] = BackboneConfig
    supports_force_encoding: ClassVar[bool] = False  # set for you: whether make_force_encoder is defined
    supports_head_blocks: ClassVar[bool] = False  # set for you: whether make_head_block is defined
    parity: ClassVar[bool] = True  # whether outputs are equivariant under reflections too (E(3), not SE(3))

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.supports_force_encoding = cls.make_force_encoder is not Backbone.make_force_encoder
        cls.supports_head_blocks = cls.make_head_block is not Backbone.make_head_block

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        self.recompute_blocks = False  # see run_block; set by Potential.recompute_blocks

    def run_block(self, block: Callable[..., Any], *args: Any) -> Any:
        """``block(*args)``, one interaction or transformer block. With ``recompute_blocks`` set, the
        block keeps no activations for the backward pass but runs again inside it
        (``torch.utils.checkpoint``): the force backward then holds one block's edge tensors at a
        time instead of all of them, for one more forward pass of compute. For systems too large for
        memory otherwise."""
        if self.recompute_blocks and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    @property
    def cutoff(self) -> float:
        return float(self.config.cutoff)

    @property
    def num_features(self) -> int:
        """Width of ``Features.scalars``."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def forward(self, graph: Graph, node_inputs: dict[str, Tensor] | None = None) -> Features:
        raise NotImplementedError

    def parts(self) -> dict[str, nn.Module]:
        """The parts ``finetune.freeze`` can name: ``embedding`` (what turns atoms, and for some
        backbones their neighbourhoods, into the first features) and ``block0``, ``block1``, ... (the
        interaction or transformer blocks, in the order they run)."""
        raise NotImplementedError(f"{self.name}: parts() is not defined; finetune.freeze needs it")

    def make_force_encoder(self) -> nn.Module | None:
        """The DeNS force encoder producing this backbone's ``node_inputs``
        (:mod:`dens_lightning.models.encoders`), or None where it takes none."""
        return None

    def make_noise_head(self) -> nn.Module | None:
        """A denoising head suited to this backbone's features (e.g. from its vector channel), or
        None for the generic gradient head (:class:`dens_lightning.models.heads.GradientNoiseHead`)."""
        return None

    def make_head_block(self) -> nn.Module | None:
        """A fresh message-passing block of this backbone's kind, ``(Features, graph) -> Features``,
        that a noise head runs before its readout (``task.dens.head_blocks``); None where there is none."""
        return None


def checked_node_inputs(
    backbone: str, node_inputs: dict[str, Tensor], shapes: dict[str, tuple[int, ...]]
) -> dict[str, Tensor]:
    """``node_inputs`` after checking its keys and each tensor's shape against ``shapes``."""
    unknown = set(node_inputs) - set(shapes)
    if unknown:
        raise ValueError(f"{backbone} takes node_inputs {sorted(shapes)}, got {sorted(unknown)}")
    for key, value in node_inputs.items():
        if tuple(value.shape) != tuple(shapes[key]):
            expected, got = tuple(shapes[key]), tuple(value.shape)
            raise ValueError(f"{backbone}: node_inputs[{key!r}] must have shape {expected}, got {got}")
    return node_inputs


BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: make ``cls`` selectable as ``model.name=<cls.name>``."""
    if cls.name in BACKBONES and BACKBONES[cls.name] is not cls:
        raise ValueError(f"backbone name {cls.name!r} is registered twice")
    BACKBONES[cls.name] = cls
    return cls


def build_backbone(name: str, hyperparameters: dict[str, Any]) -> Backbone:
    """Instantiate the registered backbone ``name``; hyperparameters are checked by its Config."""
    cls = BACKBONES[name]
    return cls(cls.Config(**hyperparameters))


def gather(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` along the first axis, as ``index_select``: its backward is a scatter-add,
    several times faster on the CPU than the accumulating ``index_put`` that ``values[index]`` needs."""
    return values.index_select(0, index)


def edge_vectors(graph: Graph, count: int | None = None) -> tuple[Tensor, Tensor]:
    """Vectors from each target atom i to its source neighbour j (Å) and their lengths, of the first
    ``count`` edges (default: all); differentiable in ``graph.pos``."""
    j, i = graph.edge_index[:, :count]
    vec = gather(graph.pos, j) - gather(graph.pos, i) + graph.edge_shift[:count]
    return vec, torch.linalg.vector_norm(vec, dim=-1)


def pair_vectors(graph: Graph) -> tuple[Tensor, Tensor]:
    """:func:`edge_vectors` of each pair once where the list is paired (its first half), else of
    every edge. What depends on the distance alone is computed on these, then spread to both
    directions by :func:`both_directions`: half the work of the radial networks."""
    return edge_vectors(graph, graph.edge_index.shape[1] // 2 if graph.paired else None)


def both_directions(graph: Graph, values: Tensor, sign: Tensor | float = 1.0) -> Tensor:
    """Per-pair ``values`` [P, ...] (from :func:`pair_vectors`) as per-edge values [E, ...]: the
    reversed edge takes ``sign * value`` (1 for functions of the distance, -1 for the edge vector,
    (-1)^l for spherical harmonics of degree l). Unpaired lists are per edge already."""
    if not graph.paired:
        return values
    return torch.cat([values, values if isinstance(sign, float) and sign == 1.0 else values * sign])


def gaussians(values: Tensor, centers: Tensor, width: Tensor | float) -> Tensor:
    """exp(-(x - μ_k)² / 2w²) of every value [...] and centre [K]: [..., K]."""
    return torch.exp(-0.5 * ((values[..., None] - centers) / width) ** 2)


class GaussianRBF(nn.Module):
    """:func:`gaussians` of distances, centres evenly spaced on [0, cutoff] and w their spacing."""

    def __init__(self, num_rbf: int, cutoff: float):
        super().__init__()
        centers = torch.linspace(0.0, cutoff, num_rbf)
        self.register_buffer("centers", centers)
        self.register_buffer("width", (centers[1] - centers[0]).reshape(()))

    def forward(self, distance: Tensor) -> Tensor:
        return gaussians(distance, self.centers, self.width)


def degree_sizes(lmax: int) -> list[int]:
    """Rows of each degree l in a dense irreps layout [N, (lmax+1)^2, C]: 1, 3, 5, ..."""
    return [2 * l + 1 for l in range(lmax + 1)]


def degree_of_row(lmax: int) -> Tensor:
    """The degree l of every row of that layout, int64 [(lmax+1)^2]."""
    return torch.repeat_interleave(torch.arange(lmax + 1), torch.tensor(degree_sizes(lmax)))


def cosine_cutoff(distance: Tensor, cutoff: float) -> Tensor:
    """0.5 (cos(π d / r_c) + 1) inside the cutoff, 0 outside: smooth to first order at r_c."""
    return 0.5 * (torch.cos(distance * (torch.pi / cutoff)) + 1.0) * (distance < cutoff)


def shifted_softplus(x: Tensor) -> Tensor:
    """ln(0.5 e^x + 0.5): softplus shifted so that ssp(0) = 0 (SchNet)."""
    return nn.functional.softplus(x) - 0.6931471805599453


class ShiftedSoftplus(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return shifted_softplus(x)


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear layer (schnetpack's choice; PyTorch's
    default shrinks activations layer by layer and slows early training)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

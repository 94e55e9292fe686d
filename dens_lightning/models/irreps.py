"""Building blocks for features in the dense irreps layout, not specific to one backbone.

Layout: features are one tensor ``[N, (lmax+1)^2, C]``: the ``2l+1`` components of degree ``l`` sit
at rows ``l^2 .. (l+1)^2 - 1`` in e3nn's real spherical-harmonics basis (``1o`` in x, y, z order),
one column per channel. Spherical harmonics and Clebsch-Gordan (Wigner 3j) coefficients come from
e3nn; the layers are written for this dense layout because e3nn's generic ``TensorProduct`` and
``Linear`` slice their inputs path by path, and the backward pass of those slices dominated the
training step (CHANGELOG.md, Performance history).
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import Tensor, nn

from .base import Features, degree_of_row, degree_sizes


def radial_mlp(num_rbf: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(num_rbf, hidden), nn.SiLU(), nn.Linear(hidden, out))


class DegreeLinear(nn.Module):
    """One linear map of the channels per degree (equivariant: it never mixes components), with a
    bias on the scalars only. [N, (lmax+1)^2, C_in] → [N, (lmax+1)^2, C_out]."""

    def __init__(self, lmax: int, channels_in: int, channels_out: int, bias: bool = False):
        super().__init__()
        self.sizes = degree_sizes(lmax)
        self.weight = nn.Parameter(torch.randn(lmax + 1, channels_in, channels_out) / math.sqrt(channels_in))
        self.bias = nn.Parameter(torch.zeros(channels_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        parts = [part @ self.weight[l] for l, part in enumerate(torch.split(x, self.sizes, dim=1))]
        if self.bias is not None:
            parts[0] = parts[0] + self.bias
        return torch.cat(parts, dim=1)


class EquivariantLayerNorm(nn.Module):
    """Equivariant layer norm over all degrees together (as in EquiformerV2): scalars centred over
    channels, then every degree divided by ``sqrt(mean over l of mean over (m, channels) of x_l^2)``,
    a rotation invariant, then scaled per degree and channel (scalars also shifted).

    One norm for all degrees, rather than one per degree: small l > 0 features (an atom whose only
    neighbour sits at the cutoff) are not blown up to unit size, so energies stay smooth."""

    def __init__(self, lmax: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        rows = degree_of_row(lmax)
        self.register_buffer("rows", rows, persistent=False)
        # mean over l of the mean over m: row weights 1 / ((lmax + 1)(2l + 1))
        row_weights = 1.0 / ((lmax + 1) * (2 * rows + 1).to(torch.get_default_dtype()))
        self.register_buffer("row_weights", row_weights, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        scalars = x[:, :1]
        x = torch.cat([scalars - scalars.mean(dim=2, keepdim=True), x[:, 1:]], dim=1)
        mean_square = x.pow(2).mean(dim=2) @ self.row_weights.to(x.dtype)
        x = x * torch.rsqrt(mean_square + self.eps)[:, None, None] * self.weight.index_select(0, self.rows)
        return torch.cat([x[:, :1] + self.bias, x[:, 1:]], dim=1)


def gate(x: Tensor, gates: Tensor) -> Tensor:
    """SiLU on the scalars; every l > 0 channel scaled by the sigmoid of its gate scalar.
    ``gates`` [N, lmax, C] (one per degree above 0 and channel). Broadcast per degree: the backward
    sums over m instead of scattering, as an index_select of the gates would."""
    scalars, *degrees = torch.split(x, degree_sizes(gates.shape[1]), dim=1)
    scaled = [part * g for part, g in zip(degrees, torch.split(torch.sigmoid(gates), 1, dim=1))]
    return torch.cat([nn.functional.silu(scalars), *scaled], dim=1)


class _ContiguousGradient(torch.autograd.Function):
    """Identity whose gradient is made contiguous. A batched product's gradient for its right operand
    comes back with the channels strided (torch computes it transposed), and the broadcast products
    that consume it ran several times slower than on a contiguous copy (the tensor product's
    backward; BENCHMARKS.md, section before-after-c898bee)."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return _ContiguousGradient.apply(grad.contiguous())


class DepthwiseTensorProduct(nn.Module):
    """Channel-wise tensor product of edge features with the edge's spherical harmonics:
    ``out_l3[c] = sum over paths (l1, l2 -> l3) of w_path[c] (x_l1[c] ⊗ Y_l2)_l3``, every path with
    ``l1 + l2 + l3`` even (natural parity) and all degrees ``<= lmax``; ``w`` is given per edge.

    Implemented as one batched matrix product: the harmonics contracted with the Wigner 3j symbols
    give a per-edge matrix K [(lmax+1)^2, R] over rows r = (path, m1); the inputs of degree l1 times
    their path weights are U_l1 [(paths from l1, m1), C], a broadcast product with no gather; the
    output is K U, U the U_l1 stacked. One product rather than one per l1: at lmax 1 the l1 = 0
    product is [4, 2] x [2, C], small enough that torch's CPU ``bmm`` takes its naive loop, several
    times slower than one product over all 8 rows (BENCHMARKS.md, section before-after-e81fb82)."""

    def __init__(self, lmax: int):
        super().__init__()
        paths = [  # sorted by input degree l1, the order of the rows
            (l1, l2, l3)
            for l1 in range(lmax + 1)
            for l2 in range(lmax + 1)
            for l3 in range(abs(l1 - l2), min(l1 + l2, lmax) + 1)
            if (l1 + l2 + l3) % 2 == 0
        ]
        self.num_paths = len(paths)
        self.sizes = degree_sizes(lmax)
        self.paths_from = [sum(1 for p in paths if p[0] == l1) for l1 in range(lmax + 1)]
        self.rows_from = [n * size for n, size in zip(self.paths_from, self.sizes)]
        size = (lmax + 1) ** 2
        paths_into = {l3: sum(1 for p in paths if p[2] == l3) for l3 in range(lmax + 1)}
        coupling = torch.zeros(sum(self.rows_from), size, size, dtype=torch.float64)  # [r, m2, m3]
        r = 0
        for l1, l2, l3 in paths:
            # component normalisation: unit-variance inputs give unit-variance outputs
            w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * math.sqrt((2 * l3 + 1) / paths_into[l3])
            coupling[r : r + 2 * l1 + 1, l2 * l2 : (l2 + 1) ** 2, l3 * l3 : (l3 + 1) ** 2] = w3j
            r += 2 * l1 + 1
        # float64 constants, cast at use, so a float64 model is exact to float64 precision
        coupling = coupling.permute(1, 2, 0).reshape(size, -1)  # [m2, (m3, r)]
        self.register_buffer("coupling", coupling, persistent=False)
        self.size = size
        self.num_rows = sum(self.rows_from)

    def forward(self, x: Tensor, sh: Tensor, weights: Tensor) -> Tensor:
        """x [E, M, C], sh [E, M], weights [E, num_paths, C] → [E, M, C]."""
        num_edges, channels = x.shape[0], x.shape[2]
        kernel = (sh @ self.coupling.to(sh.dtype)).view(num_edges, self.size, self.num_rows)
        x_by_degree = torch.split(x, self.sizes, dim=1)
        weights_by_degree = torch.split(weights, self.paths_from, dim=1)
        parts = []  # U_l1 [E, paths from l1, 2 l1 + 1, C] as rows (path, m1)
        for rows, x_l1, weights_l1 in zip(self.rows_from, x_by_degree, weights_by_degree):
            parts.append((weights_l1[:, :, None, :] * x_l1[:, None, :, :]).view(num_edges, rows, channels))
        inputs = torch.cat(parts, dim=1)
        return kernel @ _ContiguousGradient.apply(inputs)


def irreps_features(x: Tensor) -> Features:
    """Features of the dense irreps layout: ``0e`` scalars, ``1o`` vectors and all degrees."""
    return Features(scalars=x[:, 0], vectors=x[:, 1:4], irreps=x)

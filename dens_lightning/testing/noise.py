"""Conformance checks of the noise heads and of per-atom inputs (DeNS force encoding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ..models.heads import build_noise_head
from .base import ConformanceBase
from .molecules import molecule_graph
from .potentials import DTYPES


def predict_noise(task, z, pos, dtype):
    graph = molecule_graph(z, pos, dtype)
    return task.predict_noise(graph, graph.pos).detach()


class NoiseChecks(ConformanceBase):
    """The pretraining noise head, as a plain readout and with a message-passing block before it
    (where the backbone has head blocks: ``supports_head_blocks``)."""

    __test__ = False

    @pytest.fixture(params=[0, 1], ids=["readout", "message-passing head"])
    def head_blocks(self, request):
        if request.param and not self.backbone_class.supports_head_blocks:
            pytest.skip(f"{self.backbone} has no head blocks (make_head_block)")
        return request.param

    def test_noise_prediction_is_equivariant(self, dtype, head_blocks, molecules):
        """The noise head's output is a vector per atom: it rotates (and reflects, where the backbone
        claims parity) with the molecule, ignores translations and follows a permutation of the atoms;
        with a message-passing block before its readout too."""
        task = self.make_noise_predictor(dtype, head_blocks)
        assert len(task.noise_head.message_blocks) == head_blocks
        tol = DTYPES[dtype]
        for z, pos in molecules:
            n0 = predict_noise(task, z, pos, dtype)
            assert n0.abs().max() > 1e-4  # the checks are not vacuous
            transforms = [Rotation.random(random_state=seed).as_matrix() for seed in range(2)]
            if self.backbone_class.parity:
                transforms.append(-Rotation.random(random_state=9).as_matrix())
            for k, matrix in enumerate(transforms):
                shift = np.random.default_rng(k).normal(0, 5, 3)
                n1 = predict_noise(task, z, pos @ matrix.T + shift, dtype)
                torch.testing.assert_close(n1, n0 @ torch.as_tensor(matrix.T, dtype=dtype), **tol)
            perm = np.random.default_rng(2).permutation(len(z))
            torch.testing.assert_close(predict_noise(task, z[perm], pos[perm], dtype), n0[perm], **tol)

    def test_noise_prediction_of_a_batch_equals_molecules_one_by_one(
        self, dtype, head_blocks, batch_of, molecules
    ):
        task = self.make_noise_predictor(dtype, head_blocks)
        graph = batch_of(dtype)
        batched = task.predict_noise(graph, graph.pos).detach()
        one_by_one = torch.cat([predict_noise(task, z, pos, dtype) for z, pos in molecules])
        torch.testing.assert_close(batched, one_by_one, **DTYPES[dtype])


class ForceEncodingChecks(ConformanceBase):
    """Per-atom inputs: refused by a backbone without a force encoder, equivariant where it has one
    (``supports_force_encoding``)."""

    __test__ = False

    def test_backbones_without_force_encoding_refuse_node_inputs(self, molecules):
        if self.backbone_class.supports_force_encoding:
            pytest.skip(f"{self.backbone} takes per-atom inputs")
        potential = self.make_potential(torch.float64)
        graph = molecule_graph(*molecules[0])
        with pytest.raises(ValueError, match="per-atom inputs"):
            potential(graph, node_inputs={"irreps": torch.zeros(len(molecules[0][0]), 4)})

    def test_encoded_forces_enter_equivariantly_and_only_where_masked(self, molecules):
        """DeNS force encoding through the backbone's own encoder: inputs are exactly zero outside the
        mask (an empty mask is the same as no inputs); encoded forces change the output; rotating (and
        reflecting) the molecule and the given forces together rotates forces and noise predictions and
        leaves the energy unchanged; a wrong shape is refused."""
        if not self.backbone_class.supports_force_encoding:
            pytest.skip(f"{self.backbone} takes no per-atom inputs (make_force_encoder)")
        potential = self.make_potential(torch.float64)
        encoder = potential.backbone.make_force_encoder().double()
        encoder.set_force_scale(0.7)
        head = build_noise_head(potential.backbone, differentiate=False, blocks=1).double()  # as DeNS does
        z, pos = molecules[1]
        given = torch.as_tensor(np.random.default_rng(4).normal(size=(len(z), 3)))
        mask = torch.zeros(len(z), dtype=torch.bool)
        mask[::2] = True

        def run(positions, forces, atoms, encode=True):
            graph = molecule_graph(z, positions)
            graph = potential.prepare(graph.with_positions(graph.pos.requires_grad_(True)))
            inputs = encoder(graph, forces, atoms) if encode else None
            out = potential(graph, node_inputs=inputs, create_graph=True)
            noise = head(out["features"], graph)
            return inputs, [out["energy"].detach(), out["forces"].detach(), noise.detach()]

        _, plain = run(pos, given, torch.zeros_like(mask))
        _, no_inputs = run(pos, given, mask, encode=False)
        for a, b in zip(plain, no_inputs):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

        inputs, encoded = run(pos, given, mask)
        for value in inputs.values():
            assert torch.all(value[~mask] == 0) and value[mask].abs().max() > 0
        assert (encoded[1] - plain[1]).abs().max() > 1e-4

        matrix = -Rotation.random(random_state=3).as_matrix() if self.backbone_class.parity else None
        matrix = Rotation.random(random_state=3).as_matrix() if matrix is None else matrix
        rotation = torch.as_tensor(matrix)
        _, turned = run(pos @ matrix.T, given @ rotation.T, mask)
        tol = DTYPES[torch.float64]
        torch.testing.assert_close(turned[0], encoded[0], **tol)
        torch.testing.assert_close(turned[1], encoded[1] @ rotation.T, **tol)
        torch.testing.assert_close(turned[2], encoded[2] @ rotation.T, **tol)

        key, value = next(iter(inputs.items()))
        with pytest.raises(ValueError, match="must have shape"):
            potential(molecule_graph(z, pos), node_inputs={key: value[:, :1]})

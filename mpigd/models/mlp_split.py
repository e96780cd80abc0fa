"""The MLP split across the M ranks of a model group (tensor parallelism).

Every hidden layer's units are divided into M contiguous blocks; rank m of the group
holds, for each layer producing hidden units, the rows of W (and entries of b) of its
block of units, and of the output layer the columns of W that read its block of the
last hidden layer (the output bias is replicated). A layer pair thus needs one sum
inside the group: the output layer's partial logits are summed (one Allreduce), and
where two hidden layers follow each other the next layer's full input is gathered
(one Allgather) forward and its gradient summed (one Allreduce) backward.

The local flat vector holds this rank's blocks in layer order; :attr:`index` maps each
local entry to its place in the full, unsplit MLP vector, so checkpoints and model.h5
hold the full model and any split can resume or evaluate it. The group's collectives
come in as ``ops`` (``sum(array)`` in place, ``gather_columns(block, widths)``): this
module computes, the strategy layer communicates. The collectives take host arrays: with
a device backend the blocks they exchange are copied to the host and back (``to_host`` /
``to_device``; no-ops for numpy), as :class:`~mpigd.models.mlp.MLP` does for gradients.

The passes themselves, dropout included, are :class:`~mpigd.models.mlp.MLP`'s: this
class only says which block of each layer the local vector holds
(:attr:`~mpigd.models.mlp.MLP.blocks`) and supplies the three steps where the blocks
meet, each a group collective. Every rank of a group therefore calls the same
collectives in the same order; an empty batch calls none, on every rank of the group
alike, since those ranks hold the same rows and take the same batches.
"""

from __future__ import annotations

import numpy as np

from mpigd.models.mlp import MLP


class SplitMLP(MLP):
    """Part ``part`` of ``parts`` of an MLP (see the module docstring)."""

    def __init__(self, backend, n_features, n_classes, hidden, dropout, dropout_seed,
                 parts: int, part: int, ops) -> None:  # fmt: skip
        super().__init__(backend, n_features, n_classes, hidden, dropout, dropout_seed)
        for width in hidden:
            if width < parts:
                raise ValueError(f"a hidden layer of {width} units cannot be split {parts} ways")
        self.parts, self.part, self.ops = parts, part, ops
        #: Per hidden layer: the [lo, hi) of units this rank holds (np.array_split bounds).
        self.units = [_block(width, parts, part) for width in hidden]
        #: Per hidden layer: the unit counts of every rank's block (for gathering).
        self.block_widths = [np.diff(_bounds(width, parts)).tolist() for width in hidden]
        self.index = self._local_index()
        self.blocks = self._local_blocks()

    @property
    def n_params(self) -> int:
        return len(self.index)

    @property
    def full_size(self) -> int:
        return self._n_params

    @property
    def reg_mask(self) -> np.ndarray:
        return super().reg_mask[self.index]

    def touched_params(self, features: np.ndarray) -> np.ndarray:
        """This rank's first-layer block ``W_0[lo:hi, features]`` and all of its part
        after it (the local vector starts with that block, row-major)."""
        lo, hi = self.units[0]
        width, d = hi - lo, self.n_features
        weights = (np.arange(width, dtype=np.int64)[:, None] * d + features).ravel()
        return np.concatenate((weights, np.arange(width * d, self.n_params, dtype=np.int64)))

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """The unsplit MLP's initial parameters, this rank's part of them."""
        return super().init_params(rng)[self.index]

    def _local_index(self) -> np.ndarray:
        pieces = []
        last = len(self.offsets) - 1
        for layer, (w_start, b_start, end) in enumerate(self.offsets):
            n_in, n_out = self.sizes[layer], self.sizes[layer + 1]
            if layer < last:
                lo, hi = self.units[layer]
                pieces += [np.arange(w_start + lo * n_in, w_start + hi * n_in),
                           np.arange(b_start + lo, b_start + hi)]  # fmt: skip
            else:
                lo, hi = self.units[layer - 1]
                rows = w_start + n_in * np.arange(n_out)
                pieces += [np.add.outer(rows, np.arange(lo, hi)).ravel(),
                           np.arange(b_start, end)]  # fmt: skip
        return np.concatenate(pieces).astype(np.int64)

    def _local_blocks(self) -> list[tuple[int, int, int, tuple[int, int]]]:
        """:attr:`~mpigd.models.mlp.MLP.blocks` of the local vector: this rank's rows of
        each hidden layer's W (and its entries of b), its columns of the output W (and
        all of the output b), in :meth:`_local_index`'s order."""
        blocks, start, last = [], 0, len(self.offsets) - 1
        for layer in range(last + 1):
            n_in, n_out = self.sizes[layer], self.sizes[layer + 1]
            if layer < last:
                lo, hi = self.units[layer]
                shape, b_size = (hi - lo, n_in), hi - lo
            else:
                lo, hi = self.units[layer - 1]
                shape, b_size = (n_out, hi - lo), n_out
            b_start = start + shape[0] * shape[1]
            blocks.append((start, b_start, b_start + b_size, shape))
            start = b_start + b_size
        return blocks

    def _next_input(self, layer: int, A):
        """Between two hidden layers, the next one's full input: every rank's block of
        activations, gathered; into the output layer, this rank's block ``A`` itself (its
        columns of the output W read only those units)."""
        if layer == len(self.units) - 1:
            return A
        to_device, to_host = self.backend.to_device, self.backend.to_host
        return to_device(self.ops.gather_columns(to_host(A), self.block_widths[layer]))

    def _logits(self, A, W, b):
        """This rank's partial logits (its block of units through its columns of W),
        summed over the group, plus the replicated bias."""
        to_device, to_host = self.backend.to_device, self.backend.to_host
        partial = self.backend.dense_forward(
            A, W, None, self.backend.xp.empty((A.shape[0], W.shape[0]), A.dtype)
        )
        logits = to_device(self.ops.sum(to_host(partial)))
        logits += b
        return logits

    def _activation_grad(self, layer: int, dA):
        """The backward of :meth:`_next_input`: between two hidden layers, ``dA`` is this
        rank's share of the gradient of the whole gathered input, and the gradient of its
        block ``A`` is that block's columns of the sum over the group; into the output
        layer, ``dA`` itself."""
        if layer == len(self.units) - 1:
            return dA
        to_device, to_host = self.backend.to_device, self.backend.to_host
        lo, hi = self.units[layer]
        return self.backend.xp.ascontiguousarray(to_device(self.ops.sum(to_host(dA)))[:, lo:hi])


def _bounds(width: int, parts: int) -> np.ndarray:
    return np.array([0, *np.cumsum([len(b) for b in np.array_split(np.arange(width), parts)])])


def _block(width: int, parts: int, part: int) -> tuple[int, int]:
    bounds = _bounds(width, parts)
    return int(bounds[part]), int(bounds[part + 1])

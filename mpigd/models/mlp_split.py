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
come in as ``ops`` (``sum(array)`` in place, ``gather_columns(block)``): this module
computes, the strategy layer communicates. The collectives take host arrays: with a
device backend the blocks they exchange are copied to the host and back (``to_host`` /
``to_device``; no-ops for numpy), as :class:`~mpigd.models.mlp.MLP` does for gradients.
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
        self.local_offsets = self._local_offsets()

    @property
    def n_params(self) -> int:
        return len(self.index)

    @property
    def full_size(self) -> int:
        return self._n_params

    @property
    def reg_mask(self) -> np.ndarray:
        return super().reg_mask[self.index]

    def layer_ranges(self) -> list[tuple[int, int]]:
        return [(w_start, end) for w_start, _, end in self.local_offsets]

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

    def _local_offsets(self) -> list[tuple[int, int, int]]:
        offsets, start = [], 0
        for W_shape, b_size in self._local_shapes():
            w_size = W_shape[0] * W_shape[1]
            offsets.append((start, start + w_size, start + w_size + b_size))
            start += w_size + b_size
        return offsets

    def _local_shapes(self) -> list[tuple[tuple[int, int], int]]:
        shapes, last = [], len(self.offsets) - 1
        for layer in range(last + 1):
            n_in, n_out = self.sizes[layer], self.sizes[layer + 1]
            if layer < last:
                lo, hi = self.units[layer]
                shapes.append(((hi - lo, n_in), hi - lo))
            else:
                lo, hi = self.units[layer - 1]
                shapes.append(((n_out, hi - lo), n_out))
        return shapes

    def _weights(self, params, dtype):
        params = self.backend.to_device(params)
        layers = []
        for (w_start, b_start, end), (shape, _) in zip(self.local_offsets, self._local_shapes(),
                                                       strict=True):  # fmt: skip
            W = params[w_start:b_start].reshape(shape).astype(dtype, copy=False)
            layers.append((W, params[b_start:end].astype(dtype, copy=False)))
        return layers

    def _forward(self, X, layers, train: bool):
        """Pre-activations and activations of this rank's units; the full input of each
        layer in ``inputs``; the (replicated) full logits last in ``pre``."""
        kernels, dtype, xp = self.backend, X.dtype, self.backend.xp
        to_device, to_host = kernels.to_device, kernels.to_host
        inputs, pre, blocks, masks = [X], [], [], []
        for layer, (W, b) in enumerate(layers[:-1]):
            Z = kernels.dense_forward(inputs[-1], W, b, xp.empty((len(X), W.shape[0]), dtype))
            mask = None
            if train and self.dropout > 0:
                keep = self.rng.random(Z.shape) >= self.dropout
                mask = to_device(keep.astype(dtype) / dtype.type(1.0 - self.dropout))
            A = kernels.relu_forward(Z, mask, xp.empty_like(Z))
            pre.append(Z)
            masks.append(mask)
            blocks.append(A)
            if layer < len(layers) - 2:
                gathered = self.ops.gather_columns(to_host(A), self.block_widths[layer])
                inputs.append(to_device(gathered))
        W_out, b_out = layers[-1]
        partial = kernels.dense_forward(
            blocks[-1], W_out, None, xp.empty((len(X), W_out.shape[0]), dtype)
        )
        logits = to_device(self.ops.sum(to_host(partial)))
        logits += b_out
        pre.append(logits)
        return pre, inputs, blocks, masks

    def loss_grad(self, X, y, sample_weight, params, grad_out, rows=None, on_ready=None,
                  train=True) -> float:  # fmt: skip
        kernels, xp = self.backend, self.backend.xp
        to_device, to_host = kernels.to_device, kernels.to_host
        X, y, sample_weight = to_device(X), to_device(y), to_device(sample_weight)
        if rows is not None:
            rows = to_device(rows)
            X, y = X[rows], y[rows]
            sample_weight = None if sample_weight is None else sample_weight[rows]
        layers = self._weights(params, X.dtype)
        pre, inputs, blocks, masks = self._forward(X, layers, train)
        dZ = xp.empty_like(pre[-1])
        if self.n_classes is None:
            loss = kernels.half_squared_error(pre[-1], y, sample_weight, dZ)
        else:
            loss = kernels.softmax_xent(pre[-1], y, sample_weight, dZ)
        if grad_out is None:  # a loss-only pass (the epoch's train_loss)
            return loss
        last = len(layers) - 1
        for layer in reversed(range(last + 1)):
            W, b = layers[layer]
            w_start, b_start, end = self.local_offsets[layer]
            gW, gb = xp.empty_like(W), xp.empty_like(b)
            source = blocks[-1] if layer == last else inputs[layer]
            kernels.dense_backward(dZ, source, W, gW, gb, None)
            to_host(gW.ravel(), out=grad_out[w_start:b_start])
            to_host(gb, out=grad_out[b_start:end])
            if on_ready is not None:
                on_ready(w_start, end)
            if layer == 0:
                break
            if layer == last:
                dA = dZ @ W  # the gradient of this rank's block of the last hidden layer
            else:
                lo, hi = self.units[layer - 1]
                dA = xp.ascontiguousarray(to_device(self.ops.sum(to_host(dZ @ W)))[:, lo:hi])
            dZ = kernels.relu_backward(dA, pre[layer - 1], masks[layer - 1], out=dA)
        return loss

    def predict(self, X, params) -> np.ndarray:
        """Predictions as a host array (class ids or values)."""
        X = self.backend.to_device(X)
        pre, *_ = self._forward(X, self._weights(params, X.dtype), train=False)
        if self.n_classes is None:
            return self.backend.to_host(pre[-1][:, 0]).astype(np.float64)
        return self.backend.to_host(self.backend.xp.argmax(pre[-1], axis=1))


def _bounds(width: int, parts: int) -> np.ndarray:
    return np.array([0, *np.cumsum([len(b) for b in np.array_split(np.arange(width), parts)])])


def _block(width: int, parts: int, part: int) -> tuple[int, int]:
    bounds = _bounds(width, parts)
    return int(bounds[part]), int(bounds[part + 1])

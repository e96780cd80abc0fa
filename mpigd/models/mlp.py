"""Multi-layer perceptron: dense layers, ReLU, dropout, softmax or squared-error output.

Flat parameter layout, layer by layer from the input: ``W_0 (h_1, d), b_0 (h_1),
W_1 (h_2, h_1), b_1, ..., W_L (C, h_L), b_L (C)`` (each W row-major, one row per output
unit); C = classes, or 1 for regression. Per-row loss: softmax cross-entropy for
classification, ½ (z − y)² for regression. Weights are He-initialised, N(0, 2 / fan_in);
biases start at 0 and are not regularised.

Each layer's gradient is complete as soon as backpropagation passes it, last layer
first; :meth:`MLP.loss_grad` reports each finished range of the flat vector through
``on_ready(lo, hi)``, so a strategy can start communicating it while the earlier layers
are still being computed. Computation runs in the data's dtype (float32 data: float32
GEMMs); the flat parameters and gradient stay float64.

Buffers: a pass's arrays (the gathered batch, each hidden layer's Z, A and dA, the
logits' gradient) are kept and reused by the next passes with the same row count and
dtype, for the two most recent such (row count, dtype) pairs whose buffers fit in
:attr:`MLP.WORKSPACE_BYTES` (the batches; the epoch's full train_loss pass allocates its
own); so are the float32 weights cast from the float64 parameters and the layer
gradients before they are cast into the float64 ``grad_out`` (a float64 host pass
writes them into ``grad_out`` directly). The values are those of fresh arrays, bit for
bit; only the allocations go (at batch 512, float32, 784-512-512-10, bench_mlp's step
part on the 2-core machine: an Adam step 1.78 x its GEMMs before, 1.49-1.58 x in three
runs after; the pass alone 18.2 -> 15.3 ms in an interleaved comparison).

Sparse input: ``X`` may be a canonical CSR matrix (``scipy.sparse``, or
``cupyx.scipy.sparse`` on the GPU). Only the first layer sees it: its forward is the
backend's sparse-times-dense product ``X @ W_0.T`` and its weight gradient
``(X.T @ dZ_0).T``, over the nonzeros (:mod:`kernels.dense`); a ``rows=`` batch is
gathered as CSR (``X[rows]``); the layers after it are dense as before. ``X`` is never
densified. This is the fastText-style text classifier: a bag of words into a dense
hidden layer.

Dropout (``--dropout p``, inverted: kept units scaled by 1/(1−p)) draws its masks from
a generator of its own per rank, seeded from (seed, rank), so runs are reproducible;
it is active in training passes only, never in evaluation.

Backends: arrays are allocated with the backend's array module (``backend.xp``), so with
``--backend cupy`` the activations live on the GPU; the flat parameters come in as a host
vector and are copied to the device once per pass (``backend.to_device``), each layer's
gradient is copied back into the host ``grad_out`` as soon as it is final
(``backend.to_host``), and predictions are returned as host arrays. Dropout masks are
drawn on the host (the same masks as with numpy) and copied to the device.
"""

from __future__ import annotations

import numpy as np

from mpigd.models.base import Model


class MLP(Model):
    """``--model mlp --hidden 128[,64...]``: any number of hidden ReLU layers.

    The passes are written once, here. A model that holds only part of each layer
    (:class:`~mpigd.models.mlp_split.SplitMLP`) sets :attr:`blocks` to its part and
    overrides the three steps where the parts meet: :meth:`_next_input` and
    :meth:`_logits` forward, :meth:`_activation_grad` backward.
    """

    name = "mlp"
    #: How many (n_rows, dtype) sets of pass buffers are kept (a batch size and the
    #: epoch's last, shorter batch), and the most bytes one set may hold: a larger pass
    #: (the epoch's full-batch train_loss) allocates its buffers and drops them.
    WORKSPACES = 2
    WORKSPACE_BYTES = 64 << 20
    tasks = ("regression", "binary", "multiclass")
    loss_without_gradient = True

    def __init__(self, backend, n_features, n_classes, hidden=(128,), dropout=0.0,
                 dropout_seed=(0,)) -> None:  # fmt: skip
        super().__init__(backend, n_features, n_classes)
        self.sizes = [n_features, *hidden, n_classes or 1]
        self.dropout = dropout
        self.rng = np.random.default_rng(dropout_seed)
        offsets, blocks, offset = [], [], 0
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            offsets.append((offset, offset + n_out * n_in, offset + n_out * (n_in + 1)))
            blocks.append((*offsets[-1], (n_out, n_in)))
            offset += n_out * (n_in + 1)
        #: Per layer: (start of W, start of b, end of b) in the flat vector.
        self.offsets = offsets
        #: Per layer: (start of W, start of b, end of b, shape of W) of the part of the layer
        #: that the ``params`` of :meth:`loss_grad` and :meth:`predict` hold: all of it.
        self.blocks = blocks
        self._n_params = offset
        #: Buffers reused from pass to pass (:meth:`_buffer`), by (n_rows, dtype) of the
        #: pass: at most :attr:`WORKSPACES` such sets, each of at most
        #: :attr:`WORKSPACE_BYTES`; the cast weights, and the layer gradients before
        #: they reach ``grad_out``, by dtype.
        self._workspaces: dict = {}
        self._weight_spaces: dict = {}
        self._grad_spaces: dict = {}

    @property
    def n_params(self) -> int:
        return self._n_params

    @property
    def reg_mask(self) -> np.ndarray:
        mask = np.zeros(self._n_params)
        for w_start, b_start, _ in self.offsets:
            mask[w_start:b_start] = 1.0
        return mask

    def layout(self) -> dict:
        layout = {}
        for layer, (w_start, b_start, _) in enumerate(self.offsets):
            n_in, n_out = self.sizes[layer], self.sizes[layer + 1]
            layout[f"W{layer}"] = [w_start, [n_out, n_in]]
            layout[f"b{layer}"] = [b_start, [n_out]]
        return layout

    def weights_of_columns(self, values: np.ndarray, fill: float) -> np.ndarray:
        """The first layer's weights of column j get ``values[j]``; the rest ``fill``."""
        out = np.full(self.n_params, float(fill))
        width, d = self.sizes[1], self.n_features
        out[: width * d] = np.tile(np.asarray(values, dtype=np.float64), width)
        return out

    def touched_params(self, features: np.ndarray) -> np.ndarray:
        """The first layer's weights of ``features`` and everything from ``b_0`` on."""
        width, d = self.sizes[1], self.n_features
        weights = (np.arange(width, dtype=np.int64)[:, None] * d + features).ravel()
        return np.concatenate((weights, np.arange(width * d, self.n_params, dtype=np.int64)))

    def layer_ranges(self) -> list[tuple[int, int]]:
        """``(lo, hi)`` of each layer's [W, b] block in the flat vector, input layer first."""
        return [(w_start, end) for w_start, _, end, _ in self.blocks]

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        params = np.zeros(self._n_params)
        for layer, (w_start, b_start, _) in enumerate(self.offsets):
            fan_in = self.sizes[layer]
            params[w_start:b_start] = rng.normal(0.0, np.sqrt(2.0 / fan_in), b_start - w_start)
        return params

    def targets(self, y: np.ndarray) -> np.ndarray:
        if self.n_classes is None:
            return np.ascontiguousarray(y, dtype=np.float64)
        return np.ascontiguousarray(y, dtype=np.int64)

    def rng_state(self) -> dict:
        """The dropout generator's state (JSON-able), for checkpoints."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    # -- passes ----------------------------------------------------------------------

    def _pass_space(self, n_rows: int, dtype) -> dict | None:
        """The buffers reused by passes over ``n_rows`` rows in ``dtype`` (name -> array,
        filled by :meth:`_buffer`), or None when such a pass is too large to keep its
        buffers (:attr:`WORKSPACE_BYTES`): the batch's rows, each hidden layer's Z, A and
        dA, the logits' gradient. The least recently used set goes beyond
        :attr:`WORKSPACES`."""
        dtype = np.dtype(dtype)
        per_row = self.sizes[0] + 3 * sum(self.sizes[1:-1]) + 2 * self.sizes[-1]
        if n_rows * per_row * dtype.itemsize > self.WORKSPACE_BYTES:
            return None
        key = (n_rows, dtype.str)
        space = self._workspaces.pop(key, None)
        self._workspaces[key] = space = {} if space is None else space  # most recent last
        while len(self._workspaces) > self.WORKSPACES:
            del self._workspaces[next(iter(self._workspaces))]
        return space

    def _buffer(self, space: dict | None, name: str, shape: tuple, dtype):
        """An uninitialised ``shape`` array in ``dtype``: ``space``'s ``name`` (made on
        first use, remade if its shape or dtype changed), or a fresh one without a space.
        A buffer's contents live until the next pass that uses the same space."""
        if space is None:
            return self.backend.xp.empty(shape, dtype)
        buffer = space.get(name)
        if buffer is None or buffer.shape != tuple(shape) or buffer.dtype != dtype:
            buffer = space[name] = self.backend.xp.empty(shape, dtype)
        return buffer

    def _weights(self, params: np.ndarray, dtype) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W, b) per layer as views of ``params`` (on the backend's device), laid out as
        :attr:`blocks` says, or in another compute dtype copies cast into buffers reused
        from pass to pass (the same values as ``astype``, without its allocations)."""
        params = self.backend.to_device(params)
        dtype = np.dtype(dtype)
        layers = []
        if dtype == params.dtype:
            for w_start, b_start, end, shape in self.blocks:
                layers.append((params[w_start:b_start].reshape(shape), params[b_start:end]))
            return layers
        space = self._weight_spaces.setdefault(dtype.str, {})
        for layer, (w_start, b_start, end, shape) in enumerate(self.blocks):
            W = self._buffer(space, f"W{layer}", shape, dtype)
            b = self._buffer(space, f"b{layer}", (end - b_start,), dtype)
            W[...] = params[w_start:b_start].reshape(shape)
            b[...] = params[b_start:end]
            layers.append((W, b))
        return layers

    def _forward(self, X, layers, train: bool, space: dict | None = None):
        """Pre-activations Z_l (the logits last), the input A_l that each layer's W
        multiplies (A_0 = X) and the dropout masks of a pass; Z_l and A_l in ``space``'s
        buffers (:meth:`_buffer`)."""
        kernels, dtype = self.backend, X.dtype
        activations, pre, masks = [X], [], []
        for layer, (W, b) in enumerate(layers[:-1]):
            out = self._buffer(space, f"Z{layer}", (X.shape[0], W.shape[0]), dtype)
            Z = kernels.dense_forward(activations[-1], W, b, out)
            pre.append(Z)
            mask = None
            if train and self.dropout > 0:
                keep = self.rng.random(Z.shape) >= self.dropout
                mask = kernels.to_device(keep.astype(dtype) / dtype.type(1.0 - self.dropout))
            masks.append(mask)
            A = kernels.relu_forward(Z, mask, self._buffer(space, f"A{layer}", Z.shape, dtype))
            activations.append(self._next_input(layer, A))
        pre.append(self._logits(activations[-1], *layers[-1]))
        return pre, activations, masks

    def _next_input(self, layer: int, A):
        """The input of layer ``layer + 1``, given the activations ``A`` of hidden layer
        ``layer``: ``A`` itself."""
        del layer
        return A

    def _logits(self, A, W, b):
        """The output layer's pre-activations, given its input ``A`` and its (W, b)."""
        out = self.backend.xp.empty((A.shape[0], W.shape[0]), A.dtype)
        return self.backend.dense_forward(A, W, b, out)

    def _activation_grad(self, layer: int, dA):
        """The backward of :meth:`_next_input`: the loss's gradient with respect to the
        activations of hidden layer ``layer``, given ``dA``, its gradient with respect to
        the input of layer ``layer + 1``: ``dA`` itself."""
        del layer
        return dA

    def loss_grad(self, X, y, sample_weight, params, grad_out, rows=None, on_ready=None,
                  train=True, accumulate=False) -> float:  # fmt: skip
        """See :meth:`Model.loss_grad`. With ``accumulate`` each layer's gradient is
        added to ``grad_out``: the MLP's gradient is dense, so that costs O(n_params)
        either way. A row index outside ``0 .. n-1`` raises IndexError on every backend."""
        to_device, xp = self.backend.to_device, self.backend.xp
        if (
            rows is not None
            and len(rows)
            and (int(rows.min()) < 0 or int(rows.max()) >= X.shape[0])
        ):
            # Checked before the gather (on the host when rows come from there, as the
            # batches do: one min and max per batch): CuPy's X[rows] wraps an index out of
            # range instead of raising, and numpy's takes a negative one from the end.
            raise IndexError("rows holds an index outside 0 .. n-1")
        X, y, sample_weight = to_device(X), to_device(y), to_device(sample_weight)
        space = self._pass_space(X.shape[0] if rows is None else len(rows), X.dtype)
        if rows is not None:
            rows = to_device(rows)
            if space is not None and xp is np and isinstance(X, np.ndarray) and X.ndim == 2:
                shape = (len(rows), X.shape[1])
                X = xp.take(X, rows, axis=0, out=self._buffer(space, "X", shape, X.dtype))
            else:
                X = X[rows]  # a CSR X stays CSR: the batch's rows only
            y = y[rows]
            sample_weight = None if sample_weight is None else sample_weight[rows]
        if X.shape[0] == 0:
            # No rows, no pass. A SplitMLP thereby skips its model group's collectives,
            # which is safe: the ranks of a model group hold the same rows and take the
            # same batches, so the batch is empty on all of them at once.
            if grad_out is not None and not accumulate:
                grad_out[:] = 0.0
            if on_ready is not None:
                on_ready(0, self.n_params)
            return 0.0
        kernels = self.backend
        layers = self._weights(params, X.dtype)
        pre, activations, masks = self._forward(X, layers, train, space)
        logits = pre[-1]
        dZ = self._buffer(space, "dZ", logits.shape, logits.dtype)
        if self.n_classes is None:
            loss = kernels.half_squared_error(logits, y, sample_weight, dZ)
        else:
            loss = kernels.softmax_xent(logits, y, sample_weight, dZ)
        if grad_out is None:  # a loss-only pass (the epoch's train_loss)
            return loss
        # Host float64 passes write the gradients straight into grad_out; others into
        # reused buffers, then copied (cast to float64, or to the host) or added.
        direct = (
            not accumulate
            and xp is np
            and grad_out.dtype == logits.dtype
            and grad_out.flags.c_contiguous
        )
        grads = self._grad_spaces.setdefault(logits.dtype.str, {})
        for layer in reversed(range(len(layers))):
            W, b = layers[layer]
            w_start, b_start, end, _ = self.blocks[layer]
            if direct:
                gW, gb = grad_out[w_start:b_start].reshape(W.shape), grad_out[b_start:end]
            else:
                gW = self._buffer(grads, f"W{layer}", W.shape, W.dtype)
                gb = self._buffer(grads, f"b{layer}", b.shape, b.dtype)
            A = activations[layer]
            dA = self._buffer(space, f"dA{layer}", A.shape, A.dtype) if layer else None
            kernels.dense_backward(dZ, A, W, gW, gb, dA)
            if not direct:
                self._store(gW.ravel(), grad_out[w_start:b_start], accumulate)
                self._store(gb, grad_out[b_start:end], accumulate)
            if on_ready is not None:
                on_ready(w_start, end)
            if layer:
                dA = self._activation_grad(layer - 1, dA)
                dZ = kernels.relu_backward(dA, pre[layer - 1], masks[layer - 1], out=dA)
        return loss

    def _store(self, values, out: np.ndarray, accumulate: bool) -> None:
        """A finished gradient block (backend array) into the host ``out``, copied, or
        with ``accumulate`` added."""
        if accumulate:
            out += self.backend.to_host(values)
        else:
            self.backend.to_host(values, out=out)

    def predict(self, X, params) -> np.ndarray:
        """Predictions as a host array (class ids or values)."""
        X = self.backend.to_device(X)
        space = self._pass_space(X.shape[0], X.dtype)
        pre, _, _ = self._forward(X, self._weights(params, X.dtype), train=False, space=space)
        if self.n_classes is None:
            return self.backend.to_host(pre[-1][:, 0]).astype(np.float64)
        return self.backend.to_host(self.backend.xp.argmax(pre[-1], axis=1))

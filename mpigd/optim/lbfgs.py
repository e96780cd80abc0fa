"""Full-batch L-BFGS with a line search satisfying the strong Wolfe conditions.

One :meth:`LBFGS.step` is one quasi-Newton iteration. The search direction comes from
the two-loop recursion over the last ``memory`` pairs (s, y) (Nocedal & Wright, Alg.
7.4); the step length from SciPy's strong-Wolfe line search (``scipy.optimize.
line_search``: Alg. 3.5/3.6 with cubic interpolation), so we do not hand-write it.
Every function or gradient the line search asks for is one collective closure call, i.e.
one distributed pass over the data; a small cache makes the line search's separate
value and gradient requests at the same point share that one pass. All ranks run the
same deterministic iteration on the same reduced numbers, so they stay in lockstep.

Preconditioning (:meth:`LBFGS.precondition`, ``--lbfgs-precondition diagonal``): the
recursion's initial inverse Hessian is ``gamma * M`` with a fixed positive diagonal
``M`` instead of ``gamma * I``, ``gamma = s.y / (y . M y)``. That is exactly L-BFGS run
in the variables ``u = M^(-1/2) w``, so with ``M_j = 1 / (mean x_j^2 + l2)`` (the inverse
of the Hessian's diagonal for least squares: a Jacobi preconditioner) every weight
moves at the scale of its column. On sparse data, whose column norms span orders of
magnitude (a rare feature against a frequent one), this is what Spark MLlib's L-BFGS
gets from working in standardised feature space even with ``standardization=False``;
the objective, and so its optimum, is unchanged.
"""

from __future__ import annotations

import warnings
from collections import deque

import numpy as np
from scipy.optimize import line_search

from mpigd.optim.base import Closure, Optimizer


class _EvaluationCache:
    """Remembers the closure's value and gradient at the most recent points."""

    def __init__(self, closure: Closure, size: int = 2) -> None:
        self.closure = closure
        self.entries: deque = deque(maxlen=size)
        self.evaluations = 0

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        key = x.tobytes()
        for entry_key, value, grad in self.entries:
            if entry_key == key:
                return value, grad
        grad = np.empty_like(x)
        value = float(self.closure(x, grad))
        self.evaluations += 1
        self.entries.append((key, value, grad))
        return value, grad


class LBFGS(Optimizer):
    """Limited-memory BFGS; stops with ``stop_reason`` set once it has converged.

    Parameters
    ----------
    memory : number of (s, y) correction pairs kept.
    tol : gradient infinity-norm tolerance (see :class:`Optimizer`).
    c1, c2 : the Wolfe sufficient-decrease and curvature constants.
    max_line_search : most trial steps per line search.
    """

    def __init__(self, n_params, memory=10, tol=1e-6, c1=1e-4, c2=0.9, max_line_search=20):
        super().__init__(n_params, tol=tol, full_batch=True)
        self.memory = memory
        self.c1, self.c2 = c1, c2
        self.max_line_search = max_line_search
        self.pairs: deque = deque(maxlen=memory)
        self.previous_loss: float | None = None
        self.evaluations = 0
        #: The diagonal ``M`` of the initial inverse Hessian (n_params,), or None for I.
        self.diagonal: np.ndarray | None = None

    def precondition(self, diagonal: np.ndarray) -> None:
        """Use ``gamma * diag(diagonal)`` (all entries > 0) as the initial inverse
        Hessian (see the module docstring); the same on every rank."""
        diagonal = np.asarray(diagonal, dtype=np.float64)
        if diagonal.shape != self.grad.shape or not np.all(diagonal > 0):
            raise ValueError("the preconditioner must be n_params positive values")
        self.diagonal = diagonal

    def step(self, params: np.ndarray, closure: Closure) -> float:
        cache = _EvaluationCache(closure)
        loss, grad = cache(params)
        self.grad[:] = grad
        if self.converged(grad):
            self.evaluations += cache.evaluations
            return loss
        direction = self._direction(grad)
        # Before any curvature is known, aim the first trial step at a change of the
        # objective of about |g| (SciPy's BFGS does the same), not at a unit step.
        previous = self.previous_loss
        if previous is None:  # |g| in the preconditioner's metric, as in the variables u
            scaled = grad if self.diagonal is None else self.diagonal * grad
            previous = loss + float(np.sqrt(grad @ scaled)) / 2
        with warnings.catch_warnings():
            # SciPy's LineSearchWarning (a RuntimeWarning) for a failed search: we report
            # the failure ourselves through stop_reason.
            warnings.simplefilter("ignore", RuntimeWarning)
            alpha, *_ = line_search(
                lambda x: cache(x)[0],
                lambda x: cache(x)[1],
                params,
                direction,
                gfk=grad,
                old_fval=loss,
                old_old_fval=previous,
                c1=self.c1,
                c2=self.c2,
                maxiter=self.max_line_search,
            )
        if alpha is None:
            self.evaluations += cache.evaluations
            self.stop_reason = (
                "stopped: the Wolfe line search found no acceptable step "
                "(no further progress at floating-point precision)"
            )
            return loss
        new_params = params + alpha * direction
        _, new_grad = cache(new_params)
        s = new_params - params
        y = new_grad - grad
        if float(s @ y) > 1e-12 * float(y @ y):
            self.pairs.append((s, y, 1.0 / float(s @ y)))
        params[:] = new_params
        self.grad[:] = new_grad
        self.previous_loss = loss
        self.steps += 1
        self.evaluations += cache.evaluations
        self.converged(new_grad)
        return loss

    def state_dict(self) -> dict:
        """Steps, evaluations, the last objective and the (s, y) pairs as (k, n) arrays."""
        n = self.grad.size
        return {
            "steps": self.steps,
            "evaluations": self.evaluations,
            "previous_loss": np.nan if self.previous_loss is None else self.previous_loss,
            "s": np.array([s for s, _, _ in self.pairs]).reshape(-1, n),
            "y": np.array([y for _, y, _ in self.pairs]).reshape(-1, n),
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.evaluations = int(state["evaluations"])
        previous = float(state["previous_loss"])
        self.previous_loss = None if np.isnan(previous) else previous
        self.pairs.clear()
        for s, y in zip(np.asarray(state["s"]), np.asarray(state["y"]), strict=True):
            self.pairs.append((s.copy(), y.copy(), 1.0 / float(s @ y)))

    def _direction(self, grad: np.ndarray) -> np.ndarray:
        """−H g by the two-loop recursion, H the L-BFGS inverse-Hessian estimate."""
        q = -grad.copy()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * float(s @ q)
            alphas.append(a)
            q -= a * y
        if self.diagonal is not None:
            q *= self.diagonal
        if self.pairs:
            s, y, _ = self.pairs[-1]
            scaled = y if self.diagonal is None else self.diagonal * y
            q *= float(s @ y) / float(y @ scaled)
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            b = rho * float(y @ q)
            q += (a - b) * s
        return q

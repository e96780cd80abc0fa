"""Exceptions that end a run with a clear message instead of a traceback.

A :class:`CollectiveError` is known to be raised on every rank at the same point
(after :func:`mpigd.comm.agree`, or from numbers every rank shares), so one rank
prints it and every rank exits 2. Any other :class:`MpigdError` may have struck one
rank only; :func:`mpigd.comm.run_guarded` then ends the whole job with ``MPI_Abort``.
"""


class MpigdError(Exception):
    """A user-facing error: bad input, bad configuration. Printed as one line."""


class DataError(MpigdError):
    """The dataset is missing, unreadable or violates the dataset contract."""


class ConfigError(MpigdError):
    """The command line or config file asks for something impossible."""


class CollectiveError(MpigdError):
    """An error raised on every rank together."""


class AgreedError(CollectiveError):
    """Raised by :func:`mpigd.comm.agree` on every rank when any rank failed."""


class DivergenceError(CollectiveError):
    """The global loss or gradient became NaN or Inf: the learning rate is too large."""

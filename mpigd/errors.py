"""Exceptions that end a run with a clear message instead of a traceback."""


class MpigdError(Exception):
    """A user-facing error: bad input, bad configuration. Printed as one line."""


class DataError(MpigdError):
    """The dataset is missing, unreadable or violates the dataset contract."""


class ConfigError(MpigdError):
    """The command line or config file asks for something impossible."""


class DivergenceError(MpigdError):
    """The loss or gradient became NaN or Inf: the learning rate is too large."""

"""The training configuration: every option of ``mpigd train``, with its default.

The CLI fills it from flags and an optional TOML config file (flags win); ``run.json``
stores it whole, and ``eval`` reads the model part back from ``model.h5``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields

from mpigd.errors import ConfigError
from mpigd.models import MODELS
from mpigd.optim import OPTIMIZERS, SCHEDULES
from mpigd.strategies import DEFAULT_STRATEGY, STRATEGIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

BACKENDS = ("numpy", "reference", "cupy")

#: Python types each annotated field accepts (an int is fine where a float is wanted).
_TYPES = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "int | None": (int, type(None)),
    "float": (float, int),
    "float | None": (float, int, type(None)),
    "bool": (bool,),
    "list[int]": (list,),
}
PROGRESS_MODES = ("bar", "quiet", "json")


@dataclass
class TrainConfig:
    """Options of one training run. Units: learning rates per step, tolerances absolute."""

    data: str
    out: str
    model: str
    test_data: str | None = None
    strategy: str = DEFAULT_STRATEGY
    optimizer: str = "gd"
    lr: float = 0.1
    lr_schedule: str = "constant"
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    batch_size: int | None = None
    epochs: int = 10
    tol: float | None = None
    lbfgs_memory: int = 10
    l2: float = 0.0
    class_weight: str = "none"
    svm_loss: str = "hinge"
    seed: int = 0
    backend: str = "numpy"
    progress: str = "bar"
    checkpoint_every: int = 0
    checkpoint_every_steps: int = 0
    resume: bool = False
    force_resume: bool = False
    overwrite: bool = False
    hidden: list[int] = field(default_factory=lambda: [128])
    dropout: float = 0.0
    overlap: bool = True
    bucket_mb: float = 1.0
    accumulate: int = 1
    model_parallel: int = 1
    server_computes: bool = False
    sync_every: int = 8
    max_staleness: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for values no run can use (wrong type, out of range)."""
        self._check_types()
        choices = {
            "model": tuple(MODELS),
            "strategy": tuple(STRATEGIES),
            "optimizer": OPTIMIZERS,
            "lr_schedule": SCHEDULES,
            "class_weight": ("none", "balanced"),
            "svm_loss": ("hinge", "squared-hinge"),
            "backend": BACKENDS,
            "progress": PROGRESS_MODES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"--{key.replace('_', '-')} {getattr(self, key)!r} is not one of "
                    f"{', '.join(allowed)}"
                )
        if not self.hidden or not all(
            isinstance(width, int) and not isinstance(width, bool) and width >= 1
            for width in self.hidden
        ):
            raise ConfigError(f"--hidden must list positive layer widths, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not self.bucket_mb > 0:
            raise ConfigError(f"--bucket-mb must be positive, got {self.bucket_mb}")
        positive = {
            "model_parallel": self.model_parallel,
            "accumulate": self.accumulate,
            "sync_every": self.sync_every,
            "epochs": self.epochs,
            "lbfgs_memory": self.lbfgs_memory,
            "lr_step_epochs": self.lr_step_epochs,
        }
        if self.batch_size is not None:
            positive["batch_size"] = self.batch_size
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ConfigError(f"--max-staleness must be >= 0, got {self.max_staleness}")
        for key in ("checkpoint_every", "checkpoint_every_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"--{key.replace('_', '-')} must be >= 0 (0: only at the end)")
        for key in ("l2", "tol"):
            value = getattr(self, key)
            if value is not None and not value >= 0:
                raise ConfigError(f"--{key} must be non-negative, got {value}")

    def _check_types(self) -> None:
        """Values from a config file arrive untyped: check each against its field."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            allowed = _TYPES[spec.type]
            if isinstance(value, bool) and bool not in allowed:
                allowed = ()  # True is an int to Python, not to a user
            if not isinstance(value, allowed):
                kinds = " or ".join(t.__name__ for t in _TYPES[spec.type] if t is not type(None))
                raise ConfigError(f"{spec.name.replace('_', '-')} must be {kinds}, got {value!r}")
            if float in allowed and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, spec.name, float(value))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def read_toml(path, what: str, error: type[Exception] = ConfigError) -> dict:
    """The TOML file at ``path`` as a dict; ``error`` naming ``what`` if it is unreadable."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from exc

"""The named outcomes of evaluating one generated child (Algorithm 3, FILTERANDEVAL).

Every child gets exactly one status. Statuses before ``TRAINED`` say at which stage of the
cascade the child was dropped; the reason string says why, for a person to read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Optional

class Status(str, Enum):
    """A child's status: a ``str``, so it is stored in SQLite, written to JSON and compared as its value
    (``Status.OK == "ok"``); an archive made before this enum existed holds the same strings."""

    PENDING = "pending"            # generated, not yet evaluated
    DUPLICATE = "duplicate"        # same normalised AST as an earlier program: evaluated once only
    SYNTAX_ERROR = "syntax_error"  # ast.parse or compile() rejected it
    FORBIDDEN = "forbidden"        # imports or names outside the allowlist
    BUILD_ERROR = "build_error"    # module definition or Model.init raised
    SHAPE_ERROR = "shape_error"    # output has the wrong shape or is not finite (the task contract)
    BATCH_DEPENDENCE = "batch_dependence"  # an output row depends on another row of the batch
    TIMEOUT = "timeout"            # wall-clock or CPU-time limit of the sandbox
    MEMORY = "memory"              # memory limit of the sandbox
    CRASHED = "crashed"            # died or raised during training for another reason
    NAN = "nan"                    # loss or logits became NaN/inf during training
    FILTERED = "filtered"          # trained, but validation error >= alpha
    OK = "ok"                      # trained, error < alpha: scored and enters the history G
    SKIPPED = "skipped_by_surrogate"  # not trained: the surrogate (surrogate=cole) predicted it among the worst

    def __str__(self) -> str:   # "ok", not "Status.OK" (as enum.StrEnum, which Python 3.10 lacks)
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


# The members by name, as ``outcome.OK``: how the code and the task harnesses write them.
PENDING = Status.PENDING
DUPLICATE = Status.DUPLICATE
SYNTAX_ERROR = Status.SYNTAX_ERROR
FORBIDDEN = Status.FORBIDDEN
BUILD_ERROR = Status.BUILD_ERROR
SHAPE_ERROR = Status.SHAPE_ERROR
BATCH_DEPENDENCE = Status.BATCH_DEPENDENCE
TIMEOUT = Status.TIMEOUT
MEMORY = Status.MEMORY
CRASHED = Status.CRASHED
NAN = Status.NAN
FILTERED = Status.FILTERED
OK = Status.OK
SKIPPED = Status.SKIPPED

# Trained to the end (ok, or filtered only by the alpha threshold): the child "works".
WORKING = (OK, FILTERED)
FAILED = (SYNTAX_ERROR, FORBIDDEN, BUILD_ERROR, SHAPE_ERROR, BATCH_DEPENDENCE,
          TIMEOUT, MEMORY, CRASHED, NAN)


class ChildFailure(Exception):
    """Raised inside the sandbox by a task harness when a child fails a check.

    ``status`` is a :class:`Status`; ``reason`` is a one-line explanation.
    """

    def __init__(self, status: str, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass
class Evaluation:
    """What evaluating one child gave (FILTERANDEVAL's result). Its fields are the result columns of the
    archive's ``children`` table (``evo.archive.database.RESULT_COLUMNS`` is read from them), so a new field
    needs a column there (and a migration for older archives)."""
    status: str
    reason: str = ""
    num_params: Optional[int] = None
    val_accuracy: Optional[float] = None
    test_accuracy: Optional[float] = None
    fitness: Optional[float] = None
    eval_seconds: Optional[float] = None
    train_seconds: Optional[float] = None
    compile_seconds: Optional[float] = None
    device: Optional[str] = None       # what the child trained on: cpu | gpu | tpu
    isolation: Optional[str] = None
    log_tail: Optional[str] = None

    def as_dict(self) -> dict:
        return asdict(self)

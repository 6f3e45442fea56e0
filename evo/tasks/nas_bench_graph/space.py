"""The NAS-Bench-Graph space and tables, through the ``nas-bench-graph`` package.

An architecture is ``(link, ops)``: ``link[i]`` in ``0..i`` is node i's input (0: the cell input,
j > 0: node j - 1's output), ``ops[i]`` its operation. Many listings are one network (two
parallel branches listed in either order, skips that only relabel nodes); the package's
``Arch(link, ops).valid_hash()`` maps every listing to its table key, and its ``all_archs()``
lists one canonical listing per architecture (26,206). The tables are what the benchmark's authors
measured; we only read them.
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np

DATASETS = ("cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv", "proteins")
NODES = 4


class SpaceError(ValueError):
    """An architecture outside the space, or an unknown dataset: the message says why and the fix."""


def package():
    """The ``nas_bench_graph`` module, or an ImportError that says how to install it."""
    try:
        import nas_bench_graph   # optional (the 'nasbench' extra): the error below says how to install it
    except ImportError as exc:
        raise ImportError("task=nas_bench_graph needs the NAS-Bench-Graph tables: pip install nas-bench-graph "
                          "(or pip install -e '.[nasbench]'; scripts/setup.sh installs it)") from exc
    return nas_bench_graph


def operations() -> tuple[str, ...]:
    """The package's operation names, in its order (gat, gcn, gin, cheb, sage, arma, graph, fc, skip)."""
    return tuple(package().gnn_list)


@dataclass(frozen=True)
class Architecture:
    link: tuple[int, ...]
    ops: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "link", tuple(int(v) for v in self.link))
        object.__setattr__(self, "ops", tuple(str(v) for v in self.ops))

    def check(self) -> "Architecture":
        """Raise SpaceError unless this listing is an architecture of the space."""
        known = operations()
        if len(self.link) != NODES or len(self.ops) != NODES:
            raise SpaceError(f"an architecture has {NODES} nodes, this one {len(self.ops)} operations and "
                             f"{len(self.link)} inputs")
        for i, src in enumerate(self.link):
            if not 0 <= src <= i:
                raise SpaceError(f"node {i + 1} reads {'node ' + str(src) if src else 'the input'}: a node reads "
                                 "the cell input or an earlier node")
        unknown = [op for op in self.ops if op not in known]
        if unknown:
            raise SpaceError(f"unknown operation(s) {unknown}: the space's operations are {', '.join(known)}")
        if all(op == "skip" for op in self.ops):
            raise SpaceError("all four operations are skip: the space has no identity network")
        return self

    def key(self) -> int:
        """The table key (the package's ``valid_hash``): equal for every listing of one network."""
        self.check()
        return int(package().Arch(list(self.link), list(self.ops)).valid_hash())

    def leaves(self) -> tuple[int, ...]:
        """0-based nodes that no other node reads: the cell's output is their sum."""
        read = {src - 1 for src in self.link if src > 0}
        return tuple(i for i in range(NODES) if i not in read)


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise SpaceError(f"unknown NAS-Bench-Graph dataset {dataset!r}: choose one of {', '.join(DATASETS)} "
                         "(e.g. task.dataset=cora)")
    return dataset


@functools.lru_cache(maxsize=None)
def table(dataset: str) -> dict:
    """The package's light table of ``dataset``: key -> {valid_perf, perf (test), latency, para (millions)}."""
    check_dataset(dataset)
    return package().light_read(dataset)


@functools.lru_cache(maxsize=None)
def _all_canonical() -> tuple[Architecture, ...]:
    with contextlib.redirect_stdout(io.StringIO()):   # all_archs() prints its count
        archs = package().all_archs()
    return tuple(Architecture(a.link, a.ops) for a in archs)


@functools.lru_cache(maxsize=None)
def space(dataset: str) -> tuple[Architecture, ...]:
    """One canonical listing per architecture the table of ``dataset`` holds (26,206; proteins, which
    the benchmark trained with 5 operations only, 2,021), in the package's order."""
    held = table(dataset)
    return tuple(a for a in _all_canonical() if a.key() in held)


@dataclass(frozen=True)
class Record:
    """What the table says of one architecture on one dataset."""
    key: int
    val_accuracy: float     # the table's valid_perf (accuracy; ROC-AUC on proteins)
    test_accuracy: float    # perf
    num_params: int         # para is in millions
    latency_s: float


def lookup(arch: Architecture, dataset: str) -> Record:
    key = arch.key()
    row = table(dataset).get(key)
    if row is None:
        raise SpaceError(f"{arch} is not in the {dataset} table (proteins holds only gcn/sage/arma/fc/skip "
                         "networks)" if dataset == "proteins" else f"{arch} (key {key}) is not in the {dataset} table")
    return Record(key=key, val_accuracy=float(row["valid_perf"]), test_accuracy=float(row["perf"]),
                  num_params=int(round(float(row["para"]) * 1e6)), latency_s=float(row["latency"]))


def arrays(dataset: str, archs: Sequence[Architecture] = None):
    """(archs, validation, test) of a whole space as numpy arrays, in ``space(dataset)`` order."""
    archs = list(space(dataset) if archs is None else archs)
    rows = [table(dataset)[a.key()] for a in archs]
    return archs, np.array([float(r["valid_perf"]) for r in rows]), np.array([float(r["perf"]) for r in rows])

"""Shared fixtures: the real config tree composed with Hydra, shrunk for tests."""

from __future__ import annotations

import atexit
import os
import pickle
import shutil
import tempfile

# Two shared cores: one thread per library, set before jax/torch are imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# `python -m pytest` runs one pytest-xdist worker per core (addopts in pyproject.toml). Each worker, and every search,
# child and server it starts, is pinned to a core of its own, so two workers never share one: a search inside a test
# sees one core, keeps it for its LM and pins its children to it (evo.search.evaluators), as on a 1-core machine.
# (Ask for more workers than cores, -n 8 on 2, and they share cores round-robin.)
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")   # gw0, gw1, ...; unset in one process (-n 0)
if _WORKER and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cores[int(_WORKER.removeprefix("gw")) % len(_cores)]})

# One XLA compilation cache for every search and evaluation a test starts (sandbox.compile_cache in conf/config.yaml):
# many tests train the same seeds at the same sizes, and a program trained again loads its compiled steps
# (tests/test_compile_cache.py shows it, and that the scores stay the same).
# Made by the first process that imports this file (xdist's controller), so the workers it starts inherit the
# variable and share one cache; the controller removes it at exit.
if "EVO_COMPILE_CACHE" not in os.environ:
    os.environ["EVO_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="evo-test-xla-")
    atexit.register(shutil.rmtree, os.environ["EVO_COMPILE_CACHE"], True)

import pytest
from filelock import FileLock

from evo.config import compose_config
from runs import run_ablation_sweep, run_search


def second_mode_slow(modes, bwrap_ok: bool):
    """``modes`` (isolation modes as pytest params, bwrap first) for the fast tier (-m "not slow") to run one of:
    the second is marked slow where bwrap works, so the whole suite runs both and the fast tier the first."""
    bwrap, other = modes
    return [bwrap, pytest.param(*other.values, id=other.id, marks=(*other.marks, *([pytest.mark.slow] if bwrap_ok else [])))]


@pytest.fixture
def cfg_factory(tmp_path):
    def make(*overrides):
        return compose_config([f"run_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}", *overrides])
    return make


def once_per_run(tmp_path_factory, name: str, make):
    """``make(folder)``, once per test run: without xdist, in a fresh temporary folder; under xdist, the first worker
    to ask makes it in the run's shared temporary root while the others wait on a file lock, then all read the
    result it pickled. A failure is recorded too (the first worker raises it), so no second worker repeats a
    failing search."""
    if not _WORKER:
        return make(tmp_path_factory.mktemp(name))
    folder = tmp_path_factory.getbasetemp().parent / name
    result = folder / "once_per_run.pickle"
    with FileLock(f"{folder}.lock"):
        if not result.exists():
            folder.mkdir()
            try:
                value = make(folder)
            except (Exception, pytest.fail.Exception) as e:   # a failed assert or pytest.fail, not a Ctrl-C
                result.write_bytes(pickle.dumps(("error", f"{type(e).__name__}: {e}")))
                raise
            result.write_bytes(pickle.dumps(("value", value)))
            return value
        kind, value = pickle.loads(result.read_bytes())
    if kind == "error":
        pytest.fail(f"{name} failed in the worker that made it for this run: {value}")
    return value


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    """The tiny real LM of tests/tiny_lm.py, built once per test run (~20 s). Read-only: copy
    it before changing its files."""
    from tiny_lm import build_tiny_lm
    return once_per_run(tmp_path_factory, "tiny_lm", build_tiny_lm)


# Real tiny searches that several test files read, each run once per test run instead of once per file
# (the same command gives the same archive: the tiny LM, the sampling and the training are all seeded).
# Read-only: a test that resumes, changes or kills a run works on a copy (shutil.copytree) of its folder.

@pytest.fixture(scope="session")
def tiny_search(tiny_lm_dir, tmp_path_factory):
    """runs.TINY with the paper's alpha (0.5): the end-to-end test and the reference of the resume test."""
    return once_per_run(tmp_path_factory, "tiny_search", lambda folder: run_search(folder, tiny_lm_dir))


@pytest.fixture(scope="session")
def tiny_search_alpha1(tiny_lm_dir, tmp_path_factory):
    """runs.TINY keeping every child that trains (alpha=1): the dataset export and the lineage page."""
    return once_per_run(tmp_path_factory, "tiny_search_alpha1",
                        lambda folder: run_search(folder, tiny_lm_dir, "search.alpha=1.0"))


@pytest.fixture(scope="session")
def ablation_sweep(tiny_lm_dir, tmp_path_factory):
    """One real --multirun of the four ablation presets with runs.TUNABLE: test_ablations compares the four runs;
    its ablation=none run is the plain TUNABLE search (none is the default), the tuning tests' reference."""
    return once_per_run(tmp_path_factory, "ablation_sweep", lambda folder: run_ablation_sweep(folder, tiny_lm_dir))

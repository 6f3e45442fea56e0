"""Shared fixtures: the real config tree composed with Hydra, shrunk for tests."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Two shared cores: one thread per library, set before jax/torch are imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# One XLA compilation cache for every search and evaluation a test starts (sandbox.compile_cache in conf/config.yaml):
# many tests train the same seeds at the same sizes, and a program trained again loads its compiled steps
# (tests/test_compile_cache.py shows it, and that the scores stay the same).
_XLA_CACHE = tempfile.mkdtemp(prefix="evo-test-xla-")
atexit.register(shutil.rmtree, _XLA_CACHE, True)
os.environ.setdefault("EVO_COMPILE_CACHE", _XLA_CACHE)

import pytest

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


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    """The tiny real LM of tests/tiny_lm.py, built once per test session (~20 s). Read-only: copy
    it before changing its files."""
    from tiny_lm import build_tiny_lm
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


# Real tiny searches that several test files read, each run once per test session instead of once per file
# (the same command gives the same archive: the tiny LM, the sampling and the training are all seeded).
# Read-only: a test that resumes, changes or kills a run works on a copy (shutil.copytree) of its folder.

@pytest.fixture(scope="session")
def tiny_search(tiny_lm_dir, tmp_path_factory):
    """runs.TINY with the paper's alpha (0.5): the end-to-end test and the reference of the resume test."""
    return run_search(tmp_path_factory.mktemp("tiny_search"), tiny_lm_dir)


@pytest.fixture(scope="session")
def tiny_search_alpha1(tiny_lm_dir, tmp_path_factory):
    """runs.TINY keeping every child that trains (alpha=1): the dataset export and the lineage page."""
    return run_search(tmp_path_factory.mktemp("tiny_search_alpha1"), tiny_lm_dir, "search.alpha=1.0")


@pytest.fixture(scope="session")
def ablation_sweep(tiny_lm_dir, tmp_path_factory):
    """One real --multirun of the four ablation presets with runs.TUNABLE: test_ablations compares the four runs;
    its ablation=none run is the plain TUNABLE search (none is the default), the tuning tests' reference."""
    return run_ablation_sweep(tmp_path_factory.mktemp("ablation_sweep"), tiny_lm_dir)

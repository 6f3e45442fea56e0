"""The trusted stages' persistent XLA compilation cache (``sandbox.compile_cache``): a program trained again, in a
fresh trusted worker, loads its compiled steps instead of compiling them and scores the same; no child can write the
cache (a trusted worker would load and run an executable planted there), in each isolation mode available here; and
where nothing stops a child from writing it, it is off and the run log says so.

Real sandboxed MNIST-1D evaluations (a few training steps), real jax cache files; no mocks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evo import outcome
from evo.sandbox.runner import (SandboxLimits, _bwrap_usable, _landlock_abi, close_trusted_pool, compile_cache_for,
                                run_in_sandbox)
from evo.tasks.mnist1d.data import make_splits, save_splits
from evo.tasks.mnist1d.harness import CHILD_ENV
from conftest import second_mode_slow

ENTRY = "evo.tasks.mnist1d.harness:evaluate_source"
TRAIN = {"steps": 20, "eval_every": 10}
BWRAP_OK, BWRAP_WHY = _bwrap_usable()
MODES = [pytest.param("bwrap", id="bwrap", marks=pytest.mark.skipif(not BWRAP_OK, reason=f"needs bubblewrap: {BWRAP_WHY}")),
         pytest.param("none", id="none-landlock", marks=pytest.mark.skipif(
             not _landlock_abi(), reason="needs Landlock (kernel >= 5.13 and landlockpy): without it the cache is off"))]
SLOW_NONE = second_mode_slow(MODES, BWRAP_OK)   # the fast tier: bwrap where it works, else none
MODEL = '''
import flax.linen as nn


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(16)(x)))
'''


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("mnist1d") / "splits.npz"
    save_splits(make_splits(), path)
    return str(path)


def evaluate(code: str, data_path: str, cache: Path, isolation: str = "auto", landlock: bool = True):
    limits = SandboxLimits(timeout_s=300, isolation=isolation, landlock=landlock, compile_cache=str(cache))
    return run_in_sandbox(ENTRY, {"data_path": data_path, **TRAIN}, code, limits, readonly_paths=[data_path],
                          extra_env=CHILD_ENV)


def entries(cache: Path) -> dict[str, int]:
    """jax's cache files: an executable per ``*-cache`` file, its last use (ns) in the ``*-atime`` file beside it."""
    return {p.name: int.from_bytes((cache / p.name.replace("-cache", "-atime")).read_bytes(), "little")
            for p in cache.glob("*-cache")}


@pytest.mark.parametrize("isolation", SLOW_NONE)
def test_a_program_trained_again_loads_its_compilations_and_scores_the_same(isolation, data_path, tmp_path):
    cache = tmp_path / "xla"
    first = evaluate(MODEL, data_path, cache, isolation)
    assert first.status == outcome.OK, first.reason
    made = entries(cache)
    assert made, "the trusted stage stored no compilation"
    close_trusted_pool()   # the second evaluation gets a fresh trusted worker: nothing of the first's memory
    second = evaluate(MODEL, data_path, cache, isolation)
    assert second.status == outcome.OK, second.reason
    again = entries(cache)
    assert again.keys() == made.keys()   # nothing was compiled anew (a miss stores a new entry)...
    assert all(again[k] > made[k] for k in made)   # ...and every entry was read (a hit stamps its last use)
    for key in ("num_params", "val_accuracy", "test_accuracy", "final_train_loss", "best_step"):
        assert second.payload[key] == first.payload[key], key


PLANTER = '''
import os
for name in ("planted-cache", "planted-atime", "planted-dir/x-cache"):
    path = os.path.join(CACHE, name)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"native code for the trusted worker")
        print("PLANTED", name)
    except OSError as exc:
        print("refused", name, type(exc).__name__)
''' + MODEL


@pytest.mark.parametrize("isolation", SLOW_NONE)
def test_a_child_cannot_plant_anything_in_the_cache(isolation, data_path, tmp_path):
    cache = tmp_path / "xla"
    res = evaluate(f"CACHE = {str(cache)!r}\n" + PLANTER, data_path, cache, isolation)
    assert res.status == outcome.OK, res.reason   # it trained honestly after the attempt, so its log is whole
    # it tried all three (under bwrap a path beneath /tmp, as here, lands in the child's own private /tmp)
    assert sum(line.split()[:1] in (["PLANTED"], ["refused"]) for line in res.log_tail.splitlines()) == 3
    assert cache.is_dir() and not any(p.name.startswith("planted") for p in cache.rglob("*"))
    assert entries(cache)   # the trusted stage, and only it, wrote there


def test_without_bwrap_or_landlock_the_cache_is_off_and_said_so(data_path, tmp_path):
    cache = tmp_path / "xla"
    limits = SandboxLimits(isolation="none", landlock=False, compile_cache=str(cache))
    path, note = compile_cache_for(limits)
    assert path is None and note.startswith("off:") and "could write" in note
    res = evaluate(MODEL, data_path, cache, "none", landlock=False)
    assert res.status == outcome.OK, res.reason
    assert not cache.exists() or not entries(cache)
    assert compile_cache_for(SandboxLimits(compile_cache=None)) == (None, "off (sandbox.compile_cache=null)")


def test_a_search_keeps_its_cache_in_cache_dir_unless_told_otherwise(cfg_factory, monkeypatch, tmp_path):
    monkeypatch.delenv("EVO_COMPILE_CACHE", raising=False)
    cfg = cfg_factory()
    assert cfg.sandbox.compile_cache == os.path.join(cfg.cache_dir, "xla")
    monkeypatch.setenv("EVO_COMPILE_CACHE", str(tmp_path / "shared"))
    assert cfg_factory().sandbox.compile_cache == str(tmp_path / "shared")
    assert cfg_factory("sandbox.compile_cache=null").sandbox.compile_cache is None


def test_a_search_trains_its_children_through_the_cache(tiny_search):
    """A real search (the shared tiny one): its run log names the folder, and its trusted stages stored there."""
    cache = Path(os.environ["EVO_COMPILE_CACHE"])   # tests/conftest.py: one folder for the whole test session
    log = (tiny_search.run_dir / "run.log").read_text()
    assert f"trusted stages: XLA compilation cache in {cache} (trusted stages only)" in log
    assert any(name.startswith("jit_") for name in entries(cache))

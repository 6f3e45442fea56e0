"""Selection rules are pure functions of the scored history."""

from __future__ import annotations

import random

from evo.archive import Child
from evo.selection import PaperTopK, RandomParents


def history(n=12):
    rng = random.Random(0)
    return [Child(id=i, round=i // 4, code="", code_hash=str(i), status="ok", fitness=-rng.uniform(100, 1000))
            for i in range(n)]


def test_gettop_takes_the_fittest_unretired():
    h = history()
    top = PaperTopK(survivors=3)(h, retired=set(), rng=random.Random(0))
    best = sorted(h, key=lambda c: -c.fitness)
    assert [c.id for c in top] == [c.id for c in best[:3]]
    again = PaperTopK(survivors=3)(h, retired={c.id for c in top}, rng=random.Random(0))
    assert [c.id for c in again] == [c.id for c in best[3:6]]  # retired parents never come back
    assert PaperTopK(survivors=3, retire=False)(h, retired={c.id for c in top}, rng=random.Random(0)) == top


def test_gettop_ignores_unscored_and_handles_small_pools():
    h = history(2) + [Child(id=99, round=0, code="", code_hash="x", status="filtered", fitness=None)]
    assert {c.id for c in PaperTopK(survivors=10)(h, set(), random.Random(0))} == {0, 1}
    assert PaperTopK(survivors=10)([], set(), random.Random(0)) == []


def test_random_parents_differ_from_gettop_and_are_reproducible():
    h = history(40)
    sel = RandomParents(survivors=5)
    a, b = sel(h, set(), random.Random(1)), sel(h, set(), random.Random(1))
    assert a == b
    tops = {c.id for c in PaperTopK(survivors=5)(h, set(), random.Random(1))}
    assert any({c.id for c in sel(h, set(), random.Random(s))} != tops for s in range(5))

"""Selection rules are pure functions of the scored history."""

from __future__ import annotations

import random

from evo.archive import Child
import pytest

from evo.search.selection import Pareto, PaperTopK, RandomParents, Tournament, crowding_distance, dominates, non_dominated_sort


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


def mixed_history(n=30, seed=0):
    """Scored children plus unscored ones (failed, filtered, pending) scattered through the ids."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 5 == 3:
            out.append(Child(id=i, round=i // 4, code="", code_hash=str(i), status="filtered", fitness=None))
        else:
            p, acc = rng.randint(1_000, 100_000), rng.uniform(0.5, 0.99)
            out.append(Child(id=i, round=i // 4, code="", code_hash=str(i), status="ok", num_params=p,
                             val_accuracy=acc, fitness=-p * (1 - acc)))
    return out


def test_tournament_never_returns_retired_unscored_or_repeated_children():
    h = mixed_history(40)
    retired = {0, 1, 2, 4, 5, 6}
    unscored = {c.id for c in h if c.fitness is None}
    for seed in range(20):
        for size in (1, 2, 3, 7):
            chosen = Tournament(survivors=10, size=size)(h, retired, random.Random(seed))
            ids = [c.id for c in chosen]
            assert len(ids) == 10 and len(set(ids)) == 10
            assert not set(ids) & retired and not set(ids) & unscored
    # a pool smaller than survivors is returned whole, once each
    small = Tournament(survivors=50, size=3)(h, retired, random.Random(0))
    pool = {c.id for c in h if c.fitness is not None} - retired
    assert sorted(c.id for c in small) == sorted(pool)
    assert Tournament(survivors=5)([], set(), random.Random(0)) == []


def test_tournament_of_the_whole_pool_is_gettop():
    h = mixed_history(30)
    retired = {0, 7}
    pool_size = sum(1 for c in h if c.fitness is not None and c.id not in retired)
    top = PaperTopK(survivors=8)(h, retired, random.Random(0))
    for seed in range(5):
        assert Tournament(survivors=8, size=pool_size)(h, retired, random.Random(seed)) == top
        # a larger size than the pool is clipped, not an error
        assert Tournament(survivors=8, size=pool_size + 10)(h, retired, random.Random(seed)) == top


def test_tournament_breaks_fitness_ties_by_lower_id():
    h = [Child(id=i, round=0, code="", code_hash=str(i), status="ok", fitness=-5.0) for i in (9, 3, 6)]
    assert [c.id for c in Tournament(survivors=3, size=3)(h, set(), random.Random(0))] == [3, 6, 9]


def test_tournament_is_reproducible_and_depends_on_the_rng():
    h = mixed_history(60)
    sel = Tournament(survivors=10, size=3)
    a = [c.id for c in sel(h, set(), random.Random(4))]
    assert a == [c.id for c in sel(h, set(), random.Random(4))]
    assert a == [c.id for c in sel(list(reversed(h)), set(), random.Random(4))]  # history order is irrelevant
    assert len({tuple(c.id for c in sel(h, set(), random.Random(s))) for s in range(6)}) > 1
    top = [c.id for c in PaperTopK(survivors=10)(h, set(), random.Random(0))]
    assert any([c.id for c in sel(h, set(), random.Random(s))] != top for s in range(6))


def test_tournament_rejects_an_empty_tournament():
    with pytest.raises(ValueError, match="size"):
        Tournament(size=0)


def brute_force_front(points):
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


@pytest.mark.parametrize("seed", range(10))
def test_non_dominated_sort_matches_brute_force(seed):
    rng = random.Random(seed)
    # small integer grid: many ties and duplicate points
    points = [(rng.randint(0, 6), rng.randint(0, 6)) for _ in range(rng.randint(1, 40))]
    fronts = non_dominated_sort(points)
    assert fronts[0] == brute_force_front(points)
    assert sorted(i for f in fronts for i in f) == list(range(len(points)))  # a partition
    remaining = list(range(len(points)))
    for front in fronts:  # each front is the non-dominated set of what the earlier fronts left
        sub = [points[i] for i in remaining]
        assert front == [remaining[k] for k in brute_force_front(sub)]
        remaining = [i for i in remaining if i not in front]
    for k, front in enumerate(fronts[1:], 1):  # everything in front k is dominated by something in front k-1
        assert all(any(dominates(points[j], points[i]) for j in fronts[k - 1]) for i in front)
    assert non_dominated_sort([]) == []


def test_dominance_is_strict():
    assert dominates((1, 1), (1, 2)) and not dominates((1, 2), (1, 1))
    assert not dominates((1, 1), (1, 1)) and not dominates((0, 2), (2, 0))


def scored(i, params, acc):
    return Child(id=i, round=0, code="", code_hash=str(i), status="ok", num_params=params,
                 val_accuracy=acc, fitness=-params * (1 - acc))


@pytest.mark.parametrize("seed", range(10))
def test_pareto_never_prefers_a_dominated_child(seed):
    h = mixed_history(40, seed=seed)
    retired = {1, 2} if seed % 2 else set()
    for survivors in (1, 3, 8, 20, 100):
        chosen = Pareto(survivors=survivors)(h, retired, random.Random(seed))
        pool = [c for c in h if c.fitness is not None and c.id not in retired]
        ids = {c.id for c in chosen}
        assert len(chosen) == min(survivors, len(pool)) and len(ids) == len(chosen)
        assert not ids & retired and all(c.fitness is not None for c in chosen)
        pt = lambda c: (c.num_params, 1 - c.val_accuracy)
        non_dominated = {c.id for c in pool if not any(dominates(pt(o), pt(c)) for o in pool)}
        if any(dominates(pt(a), pt(b)) for a in chosen for b in chosen):
            assert non_dominated <= ids  # a dominated pick only once the whole first front is in
        # more generally: no unchosen child has a better (lower) front than a chosen one
        fronts = non_dominated_sort([pt(c) for c in pool])
        rank = {pool[i].id: k for k, f in enumerate(fronts) for i in f}
        unchosen = [rank[c.id] for c in pool if c.id not in ids]
        if unchosen:
            assert max(rank[i] for i in ids) <= min(unchosen)


def test_pareto_cut_by_crowding_keeps_the_extremes():
    # one front of six trade-offs (more params, less error); ids deliberately not in front order
    front = [scored(10, 100, 0.50), scored(4, 200, 0.70), scored(7, 210, 0.71),
             scored(2, 400, 0.80), scored(11, 800, 0.90), scored(5, 1600, 0.95)]
    dominated = [scored(1, 1700, 0.40), scored(3, 900, 0.60)]
    h = front + dominated
    two = Pareto(survivors=2)(h, set(), random.Random(0))
    assert {c.id for c in two} == {10, 5}  # smallest model and lowest error
    three = Pareto(survivors=3)(h, set(), random.Random(0))
    # then the least crowded interior point: crowding of 4, 7, 2, 11 is about 0.54, 0.36, 0.82, 1.13
    assert {c.id for c in three} == {10, 5, 11}
    assert {c.id for c in Pareto(survivors=4)(h, set(), random.Random(0))} == {10, 5, 11, 2}
    assert {c.id for c in Pareto(survivors=6)(h, set(), random.Random(0))} == {10, 4, 7, 2, 11, 5}
    assert {c.id for c in Pareto(survivors=7)(h, set(), random.Random(0))} == {10, 4, 7, 2, 11, 5, 3}
    # retiring an extreme makes the next point the boundary
    assert {c.id for c in Pareto(survivors=2)(h, {10}, random.Random(0))} == {4, 5}


def test_crowding_distance_boundaries_are_infinite_and_ties_go_by_id():
    points = [(0.0, 1.0), (1.0, 0.5), (3.0, 0.4), (4.0, 0.0)]
    d = crowding_distance(points, [0, 1, 2, 3])
    assert d[0] == d[3] == float("inf") and 0 < d[2] < d[1]
    # identical points share a front; the boundaries (and so the cut) go by id, not by history order
    h = [scored(8, 100, 0.9), scored(3, 100, 0.9), scored(5, 100, 0.9)]
    assert [c.id for c in Pareto(survivors=2)(h, set(), random.Random(0))] == [3, 8]
    assert [c.id for c in Pareto(survivors=2)(h[::-1], set(), random.Random(0))] == [3, 8]
    assert [c.id for c in Pareto(survivors=1)(h[::-1], set(), random.Random(0))] == [3]


def test_pareto_skips_children_without_size_or_accuracy():
    h = [scored(1, 100, 0.9), Child(id=2, round=0, code="", code_hash="2", status="ok", fitness=-1.0),
         Child(id=3, round=0, code="", code_hash="3", status="failed")]
    assert [c.id for c in Pareto(survivors=5)(h, set(), random.Random(0))] == [1]
    assert Pareto(survivors=5)([], set(), random.Random(0)) == []

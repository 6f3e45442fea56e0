"""Parent selection between rounds (GETTOP in Algorithm 1 and its alternatives).

A selection rule is a pure function of the scored history, the retired set and an RNG: it returns
the parents of the next round. Rules never see unscored children.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from evo.archive import Child
from evo.errors import fail


def check_config(node, cfg) -> None:
    """The ``selection`` node, before any compute (evo.config.validate asks the rule's check_config)."""
    if node.survivors < 1:
        fail("selection.survivors", node.survivors, "It counts something and must be at least 1.",
             "pass selection.survivors=1 or more.")


@dataclass(frozen=True)
class PaperTopK:
    """GETTOP: the ``survivors`` fittest children of the whole history, best first. With ``retire``
    (the paper), a child chosen once is never chosen again."""
    survivors: int = 10
    retire: bool = True
    name: str = "paper_topk"
    check_config = staticmethod(check_config)   # every rule's node has survivors (and retire)

    def __call__(self, history: Sequence[Child], retired: set[int], rng: random.Random) -> list[Child]:
        # Ties broken by id: the earlier child wins, so the choice is reproducible on resume.
        return sorted(_pool(history, retired, self.retire), key=lambda c: (-c.fitness, c.id))[: self.survivors]


@dataclass(frozen=True)
class RandomParents:
    """The paper's random-parents ablation: ``survivors`` children drawn uniformly from the history."""
    survivors: int = 10
    retire: bool = True
    name: str = "random"
    check_config = staticmethod(check_config)

    def __call__(self, history: Sequence[Child], retired: set[int], rng: random.Random) -> list[Child]:
        pool = _pool(history, retired, self.retire)
        return rng.sample(pool, min(self.survivors, len(pool)))


def _pool(history: Sequence[Child], retired: set[int], retire: bool) -> list[Child]:
    """The scored children a rule may choose from, in id order (so an rng draw does not depend on
    the order the history was read in)."""
    pool = [c for c in history if c.fitness is not None and not (retire and c.id in retired)]
    return sorted(pool, key=lambda c: c.id)


@dataclass(frozen=True)
class Tournament:
    """[not in paper] Tournament selection: until ``survivors`` distinct children are chosen, draw
    ``size`` candidates uniformly (without replacement) from the unretired scored pool; the fittest
    wins (ties: lower id) and leaves the pool. ``size`` = pool size is GETTOP; ``size`` = 1 is random."""
    survivors: int = 10
    retire: bool = True
    size: int = 3
    name: str = "tournament"
    check_config = staticmethod(check_config)

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"selection.size={self.size!r}: a tournament needs at least 1 candidate. "
                             "Fix: pass selection.size=3 or more.")

    def __call__(self, history: Sequence[Child], retired: set[int], rng: random.Random) -> list[Child]:
        pool = _pool(history, retired, self.retire)
        chosen: list[Child] = []
        while pool and len(chosen) < self.survivors:
            entrants = rng.sample(pool, min(self.size, len(pool)))
            winner = min(entrants, key=lambda c: (-c.fitness, c.id))
            chosen.append(winner)
            pool.remove(winner)
        return chosen


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` Pareto-dominates ``b`` (all objectives minimised): no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Non-dominated sorting (Deb et al., NSGA-II) of ``points``, every objective minimised.

    Returns the fronts as lists of indices into ``points``, best front first, each in index order.
    Front 0 is the non-dominated set; front k is non-dominated once fronts 0..k-1 are removed.
    Equal points do not dominate each other, so they share a front.
    """
    n = len(points)
    dominated_by_me: list[list[int]] = [[] for _ in range(n)]
    n_dominating = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominated_by_me[i].append(j)
                n_dominating[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by_me[j].append(i)
                n_dominating[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if n_dominating[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in dominated_by_me[i]:
                n_dominating[j] -= 1
                if n_dominating[j] == 0:
                    nxt.append(j)
        current = sorted(nxt)
    return fronts


def crowding_distance(points: Sequence[Sequence[float]], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II crowding distance of each index in ``front``: the boundary points of every objective
    get infinity, the others the sum over objectives of the normalised gap between their neighbours."""
    dist = {i: 0.0 for i in front}
    if not front:
        return dist
    for m in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda i: (points[i][m], i))
        lo, hi = points[ordered[0]][m], points[ordered[-1]][m]
        dist[ordered[0]] = dist[ordered[-1]] = float("inf")
        if hi == lo:
            continue
        for k in range(1, len(ordered) - 1):
            dist[ordered[k]] += (points[ordered[k + 1]][m] - points[ordered[k - 1]][m]) / (hi - lo)
    return dist


@dataclass(frozen=True)
class Pareto:
    """[not in paper] Multi-objective selection on (num_params, validation error), both minimised,
    as in NSGA-II: whole non-dominated fronts in order; the front that does not fit is cut by crowding
    distance (boundary points first), ties by id. Children without num_params/val_accuracy are skipped."""
    survivors: int = 10
    retire: bool = True
    name: str = "pareto"
    check_config = staticmethod(check_config)

    def __call__(self, history: Sequence[Child], retired: set[int], rng: random.Random) -> list[Child]:
        pool = [c for c in _pool(history, retired, self.retire)
                if c.num_params is not None and c.val_accuracy is not None]
        points = [(float(c.num_params), 1.0 - c.val_accuracy) for c in pool]
        chosen: list[Child] = []
        for front in non_dominated_sort(points):
            room = self.survivors - len(chosen)
            if room <= 0:
                break
            dist = crowding_distance(points, front)
            # pool is in id order, so index order is id order: ties by id.
            ranked = sorted(front, key=lambda i: (-dist[i], i))
            chosen.extend(pool[i] for i in ranked[:room])
        return chosen

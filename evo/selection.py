"""Parent selection between rounds (GETTOP in Algorithm 1 and its alternatives).

A selection rule is a pure function of the scored history, the retired set and an RNG: it returns
the parents of the next round. Rules never see unscored children.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from evo.archive import Child


@dataclass(frozen=True)
class PaperTopK:
    """GETTOP: the ``survivors`` fittest children of the whole history, best first. With ``retire``
    (the paper), a child chosen once is never chosen again."""
    survivors: int = 10
    retire: bool = True
    name: str = "paper_topk"

    def __call__(self, history: Sequence[Child], retired: set[int], rng: random.Random) -> list[Child]:
        pool = [c for c in history if c.fitness is not None and not (self.retire and c.id in retired)]
        # Ties broken by id: the earlier child wins, so the choice is reproducible on resume.
        return sorted(pool, key=lambda c: (-c.fitness, c.id))[: self.survivors]


@dataclass(frozen=True)
class RandomParents:
    """The paper's random-parents ablation: ``survivors`` children drawn uniformly from the history."""
    survivors: int = 10
    retire: bool = True
    name: str = "random"

    def __call__(self, history: Sequence[Child], retired: set[int], rng: random.Random) -> list[Child]:
        pool = [c for c in history if c.fitness is not None and not (self.retire and c.id in retired)]
        return rng.sample(pool, min(self.survivors, len(pool)))

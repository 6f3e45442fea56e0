"""A compact BANANAS (White, Neiswanger & Savani, AAAI 2021) over a finite set of architectures.

Per iteration: fit an ensemble of small MLPs on the encodings of every architecture evaluated so far
(target: validation performance), build candidates by mutating the best evaluated ones, score each
candidate by independent Thompson sampling (ITS: one draw from N(ensemble mean, ensemble std), drawn
independently per candidate) and evaluate the ``batch`` candidates with the highest draws.

As in the paper: an ensemble of 5 MLPs, ITS, candidates from mutations of the best architectures so
far, 10 random architectures to start, 10 evaluations per iteration, 100 candidates. Our choices
(not in the paper): the MLPs are 3 hidden layers of 32 (ReLU; the paper: 10 layers of 20), trained
full-batch with Adam (lr 1e-2, weight decay 1e-4) for 200 steps on the standardised target with MSE
(the paper: MAPE); members differ only by their initial weights; a mutation changes one node's
operation or its input (edit distance 1; the paper also mutates one edge or op at a time); candidates
are the unevaluated edit-distance-1 neighbours, within the search set, of the 10 best evaluated,
topped up with uniformly random unevaluated members of the set when fewer than 100 (a search set
that is a random subset of the space has few neighbours of each member).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from evo.tasks.nas_bench_graph.space import NODES, Architecture, operations


def neighbours(arch: Architecture) -> list[Architecture]:
    """Every listing at edit distance 1: one node's operation or one node's input changed."""
    out = []
    for i in range(NODES):
        for op in operations():
            if op != arch.ops[i]:
                out.append(Architecture(arch.link, arch.ops[:i] + (op,) + arch.ops[i + 1:]))
        for src in range(i + 1):
            if src != arch.link[i]:
                out.append(Architecture(arch.link[:i] + (src,) + arch.link[i + 1:], arch.ops))
    return [a for a in out if not all(op == "skip" for op in a.ops)]


def neighbour_table(archs: Sequence[Architecture]) -> list[np.ndarray]:
    """For each member of ``archs``, the indices of the other members one mutation away (by table key:
    a mutation that only relists a network is no neighbour)."""
    index = {a.key(): i for i, a in enumerate(archs)}
    out = []
    for i, a in enumerate(archs):
        near = {index[k] for k in (n.key() for n in neighbours(a)) if k in index} - {i}
        out.append(np.array(sorted(near), dtype=np.int64))
    return out


class MLPEnsemble:
    """``members`` MLPs trained together as one batched network (torch), so an ensemble fit on a few
    hundred architectures takes a fraction of a second on one CPU thread."""

    def __init__(self, members: int = 5, hidden: int = 32, layers: int = 3, steps: int = 200, lr: float = 1e-2,
                 weight_decay: float = 1e-4, seed: int = 0):
        self.members, self.hidden, self.layers, self.steps = members, hidden, layers, steps
        self.lr, self.weight_decay, self.seed = lr, weight_decay, seed

    def fit(self, X, y):
        import torch   # heavy: only when the BANANAS predictor (benchmarks) is fitted or asked
        X, y = np.asarray(X, np.float32), np.asarray(y, np.float32)
        self._mu, self._sd = X.mean(0), X.std(0) + 1e-6
        self._ym, self._ys = float(y.mean()), float(y.std()) or 1.0
        g = torch.Generator().manual_seed(self.seed)
        dims = [X.shape[1]] + [self.hidden] * self.layers + [1]
        self._w = [torch.nn.Parameter(torch.randn(self.members, a, b, generator=g) * (2.0 / a) ** 0.5)
                   for a, b in zip(dims[:-1], dims[1:])]
        self._b = [torch.nn.Parameter(torch.zeros(self.members, 1, b)) for b in dims[1:]]
        opt = torch.optim.Adam(self._w + self._b, lr=self.lr, weight_decay=self.weight_decay)
        xt = torch.from_numpy((X - self._mu) / self._sd)
        yt = torch.from_numpy((y - self._ym) / self._ys)
        for _ in range(self.steps):
            opt.zero_grad()
            loss = ((self._forward(xt) - yt) ** 2).mean()
            loss.backward()
            opt.step()
        return self

    def _forward(self, xt):
        import torch   # heavy: only when the BANANAS predictor (benchmarks) is fitted or asked
        h = xt.expand(self.members, *xt.shape)
        for k, (w, b) in enumerate(zip(self._w, self._b)):
            h = torch.baddbmm(b, h, w)
            if k < len(self._w) - 1:
                h = torch.relu(h)
        return h[..., 0]   # (members, n)

    def predict_members(self, X) -> np.ndarray:
        import torch   # heavy: only when the BANANAS predictor (benchmarks) is fitted or asked
        with torch.no_grad():
            xt = torch.from_numpy((np.asarray(X, np.float32) - self._mu) / self._sd)
            return self._forward(xt).numpy() * self._ys + self._ym

    def predict(self, X) -> np.ndarray:
        return self.predict_members(X).mean(0)


class Oracle:
    """A predictor that knows the table (for tests): its members all return the true value."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, float)

    def fit(self, X, y):
        return self

    def predict_members(self, X) -> np.ndarray:
        return self.values[np.asarray(X, int)[:, 0]][None, :]


@dataclass
class SearchResult:
    order: list                      # indices of the search set, in evaluation order
    values: list                     # their validation performance, in that order
    seconds: float = 0.0             # predictor fits and acquisition (not the lookups)
    fits: int = 0
    log: list = field(default_factory=list)


def bananas(values: np.ndarray, encode: Callable[[np.ndarray], np.ndarray], neighbours_of: Sequence[np.ndarray],
            budget: int, seed: int, make_predictor: Callable[[int], object] = None, initial: int = 10,
            batch: int = 10, candidates: int = 100, parents: int = 10) -> SearchResult:
    """BANANAS on a search set of ``len(values)`` architectures. ``values[i]``: what evaluating member i
    returns (the table's validation performance); ``encode(indices)``: their feature rows;
    ``neighbours_of[i]``: the members one mutation from i. Evaluates ``budget`` distinct members."""
    rng = np.random.default_rng(seed)
    n = len(values)
    make_predictor = make_predictor or (lambda s: MLPEnsemble(seed=s))
    order = list(rng.choice(n, size=min(initial, budget), replace=False))
    seen = np.zeros(n, bool)
    seen[order] = True
    t0, fits = time.perf_counter(), 0
    while len(order) < min(budget, n):
        done = np.array(order)
        predictor = make_predictor(int(rng.integers(1 << 31))).fit(encode(done), values[done])
        fits += 1
        best = done[np.argsort(-values[done], kind="stable")[:parents]]
        pool = [j for j in dict.fromkeys(np.concatenate([neighbours_of[i] for i in best]).tolist()) if not seen[j]]
        if len(pool) > candidates:
            pool = list(rng.choice(pool, size=candidates, replace=False))
        if len(pool) < candidates:
            rest = np.flatnonzero(~seen)
            rest = rest[~np.isin(rest, pool)]
            pool += list(rng.choice(rest, size=min(len(rest), candidates - len(pool)), replace=False))
        pool = np.array(pool, dtype=np.int64)
        members = predictor.predict_members(encode(pool))
        draw = rng.normal(members.mean(0), members.std(0))          # ITS: one independent draw per candidate
        take = pool[np.argsort(-draw, kind="stable")[:min(batch, budget - len(order))]]
        order += take.tolist()
        seen[take] = True
    return SearchResult(order=[int(i) for i in order], values=[float(values[i]) for i in order],
                        seconds=time.perf_counter() - t0, fits=fits)


def random_search(values: np.ndarray, budget: int, seed: int) -> SearchResult:
    order = np.random.default_rng(seed).permutation(len(values))[:budget]
    return SearchResult(order=order.tolist(), values=[float(values[i]) for i in order])


def evaluations_to_reach(found: Sequence[float], threshold: float) -> Optional[int]:
    """1-based number of evaluations until the first value >= threshold; None if never."""
    hit = np.flatnonzero(np.asarray(found) >= threshold)
    return int(hit[0]) + 1 if len(hit) else None

"""A run's numbers, from its archive alone: per-round statistics, Pareto fronts and
hypervolumes. Shared by the report, lineage.html, evo.compare and the W&B logger (none of them imports another
for these)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Optional, Sequence

from evo import outcome
from evo.archive import Archive


def round_stats(archive: Archive) -> list[dict]:
    rows = archive.rows(("round", "status", "fitness", "duplicate_of", "tokens_out", "lm_seconds", "eval_seconds"),
                        min_round=0)
    parents_of = {r["round"]: set(json.loads(r["parents"])) for r in archive.rounds()}
    best_so_far: Optional[float] = None
    stats = []
    for t in sorted({r["round"] for r in rows}):
        rs = [r for r in rows if r["round"] == t]
        status = Counter(r["status"] for r in rs)
        fits = [r["fitness"] for r in rs if r["status"] == outcome.OK]
        if fits:
            best_so_far = max(fits) if best_so_far is None else max(best_so_far, max(fits))
        working = sum(status[s] for s in outcome.WORKING)
        stats.append({
            "round": t,
            "samples": len(rs),
            # A duplicate is never evaluated again, so every working child is also new and distinct.
            "new_working": working,
            "new_working_rate": working / len(rs) if rs else 0.0,
            "scored": status[outcome.OK],
            "copies_of_parent": sum(1 for r in rs if r["duplicate_of"] in parents_of.get(t, set())),
            "duplicates": status[outcome.DUPLICATE],
            "best_fitness_round": max(fits) if fits else None,
            "median_fitness_round": statistics.median(fits) if fits else None,
            "best_fitness_so_far": best_so_far,
            "status_counts": dict(status),
            "lm_tokens_out": sum(r["tokens_out"] or 0 for r in rs),
            "lm_seconds": sum(r["lm_seconds"] or 0 for r in rs),
            "eval_seconds": sum(r["eval_seconds"] or 0 for r in rs),
        })
        lm_hours = stats[-1]["lm_seconds"] / 3600
        # the operator's yield per unit of LM time (issue 14's measure): None when no LM time was recorded
        stats[-1]["new_working_per_lm_hour"] = working / lm_hours if lm_hours > 0 else None
    return stats


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated points for minimising both coordinates, sorted by the first."""
    front, best = [], float("inf")
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates minimised) and bounded by ``ref``, as a
    fraction of the box from (0, 0) to ``ref``: 0 when no point beats ``ref`` in both, 1 at (0, 0)."""
    inside = [(x, y) for x, y in points if x < ref[0] and y < ref[1]]
    area, prev_x = 0.0, ref[0]
    for x, y in reversed(pareto_front(inside)):   # from the largest size down: each step adds a slab
        area += (prev_x - x) * (ref[1] - y)
        prev_x = x
    return area / (ref[0] * ref[1])


def hypervolume_ref(archive: Archive) -> tuple[float, float]:
    """The reference point of a task's hypervolume: twice the largest seed's size, error 1. Every
    run of a task has the same seeds, so hypervolumes of its runs (and variants) are comparable."""
    return (2.0 * (archive.largest_seed_size() or 1), 1.0)


def run_hypervolume(archive: Archive, upto_round: Optional[int] = None, error: str = "val",
                    ref: Optional[tuple[float, float]] = None) -> float:
    """Hypervolume of the scored children (G, seeds excluded) of rounds 0..upto_round in
    (num_params, ``error`` error) space: ``val`` is what the search sees, ``test`` what the paper plots."""
    column = {"val": "val_accuracy", "test": "test_accuracy"}[error]
    rows = archive.rows(("num_params", column), min_round=0, max_round=upto_round, status=outcome.OK)
    return hypervolume([(r["num_params"], 1.0 - r[column]) for r in rows], ref or hypervolume_ref(archive))


def top_children(runs: Sequence, k: int) -> list[dict]:
    """The ``k`` fittest scored children (round >= 0) pooled over ``runs`` (evo.compare's runs: ``.scored``),
    with a test accuracy."""
    pool = [c for r in runs for c in r.scored if c["fitness"] is not None and c["test_accuracy"] is not None
            and c["num_params"] is not None]
    return sorted(pool, key=lambda c: -c["fitness"])[:k]

"""What the NAS-Bench-Graph benchmarks share: the search sets (a fixed random order of the space, so
a set of N is the first N of it: the architectures benchmarks/nas_bench_graph_embed.py embedded
first) and confidence intervals."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_CACHE = Path(os.environ.get("EVO_CACHE", Path.home() / ".cache" / "evo")) / "nas_bench_graph" / "embeddings.sqlite"


def ordered_space(order_seed: int = 0):
    from evo.tasks.nas_bench_graph.space import space
    archs = list(space("cora"))   # the 8 full tables share the 26,206 architectures
    return [archs[i] for i in np.random.default_rng(order_seed).permutation(len(archs))]


def search_set(dataset: str, size, order_seed: int = 0):
    """The first ``size`` architectures (None: all) of the fixed random order that the dataset's table holds."""
    from evo.tasks.nas_bench_graph.space import table
    held = table(dataset)
    archs = ordered_space(order_seed)[:size]
    return [a for a in archs if a.key() in held]


def bootstrap_ci(values, rng_seed: int = 0, reps: int = 10000, level: float = 0.95):
    """Percentile bootstrap CI of the mean."""
    a = np.asarray(values, float)
    if len(a) < 2:
        return [float(a.mean()), float(a.mean())] if len(a) else [None, None]
    means = np.random.default_rng(rng_seed).choice(a, size=(reps, len(a)), replace=True).mean(1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return [float(lo), float(hi)]


def torch_one_thread():
    import torch
    torch.set_num_threads(1)

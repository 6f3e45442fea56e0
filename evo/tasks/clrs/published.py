"""The paper's CLRS-30 results, as data: Table 3 (Appendix A.6) of Chen, Dohan & So, "EvoPrompting:
Language Models for Code-Level Neural Architecture Search", NeurIPS 2023 (arXiv:2302.14838).

One row per CLRS-30 algorithm (dm-clrs names, the keys of ``clrs.CLRS_30_ALGS_SETTINGS``), values exactly
as printed there (transcribed in /work/shared/paper-notes.md, section "5. CLRS"):

* ``best_model``: the best of the paper's five discovered triplet functions on that task (QUADNODEMINMAX,
  CONCATREP, MAXMEAN, DIV2MEAN, TANHEXPANDTRIPLETS), or "Baseline" where none beat the baseline;
* ``size_best`` / ``size_base``: parameter counts of that model and of the baseline (some "Baseline"
  rows list two different sizes: as printed);
* out-of-distribution accuracy in percent, mean and standard deviation over the paper's runs (how many
  runs, and its OOD protocol details, are not in the paper): ``new_*`` the best model, ``own_base_*``
  the authors' own reimplementation of the Triplet-GMPNN baseline, ``ibarz_*`` Ibarz et al. (2022)'s
  published Triplet-GMPNN numbers.

Their 30-task averages: new 80.88, own baseline 76.54, Ibarz 75.98 (Ibarz et al.'s published average).
Used by ``python -m evo.final_eval`` to put our numbers next to the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from evo.tasks.clrs.task import CLRS30


@dataclass(frozen=True)
class PublishedRow:
    algorithm: str        # dm-clrs name
    paper_name: str       # the row label in the paper's Table 3
    best_model: str       # best model on this task ("Baseline": none of the new models was better)
    size_best: int        # parameters of the best model
    size_base: int        # parameters of the baseline
    new_mean: float       # OOD accuracy (%) of the best model
    new_sd: float
    own_base_mean: float  # OOD accuracy (%) of the authors' own baseline implementation
    own_base_sd: float
    ibarz_mean: float     # OOD accuracy (%) published by Ibarz et al. (2022), Triplet-GMPNN
    ibarz_sd: float


def _row(*values) -> PublishedRow:
    return PublishedRow(*values)


#     dm-clrs name, paper row, best model, size best, size base, new mean, sd, own base mean, sd, Ibarz mean, sd
_ROWS = (
    _row("activity_selector", "ActivitySel", "Baseline", 262204, 262204, 95.05, 0.53, 93.96, 0.29, 95.18, 0.45),
    _row("articulation_points", "ArticulationPts", "QUADNODEMINMAX", 497969, 531913, 93.46, 1.77, 91.40, 1.74, 88.32, 2.01),
    _row("bellman_ford", "BellmanFord", "CONCATREP", 568660, 524604, 97.50, 0.31, 97.08, 0.24, 97.39, 0.19),
    _row("bfs", "BFS", "MAXMEAN", 522931, 523963, 99.99, 0.01, 99.80, 0.04, 99.73, 0.04),
    _row("binary_search", "BinarySearch", "Baseline", 262204, 262204, 77.98, 2.49, 79.57, 1.73, 77.58, 2.35),
    _row("bridges", "Bridges", "CONCATREP", 576612, 532556, 97.57, 1.08, 97.31, 1.11, 93.99, 2.07),
    _row("bubble_sort", "BubbleSort", "CONCATREP", 568533, 524477, 88.87, 2.77, 83.20, 4.27, 67.68, 5.50),
    _row("dag_shortest_paths", "DAGShortestPaths", "Baseline", 793287, 793287, 98.01, 0.22, 97.48, 0.37, 98.19, 0.30),
    _row("dfs", "DFS", "DIV2MEAN", 660158, 661190, 68.14, 1.38, 46.78, 3.85, 47.79, 4.19),
    _row("dijkstra", "Dijkstra", "DIV2MEAN", 524854, 525886, 97.30, 0.28, 95.94, 0.66, 96.05, 0.60),
    _row("find_maximum_subarray_kadane", "FindMaxSubarray", "Baseline", 261290, 264514, 75.35, 0.92, 74.09, 0.83, 76.36, 0.43),
    _row("floyd_warshall", "FloydWarshall", "CONCATREP", 669145, 625089, 61.43, 0.79, 48.95, 0.49, 48.52, 1.04),
    _row("graham_scan", "GrahamScan", "MAXMEAN", 397377, 398409, 93.76, 0.85, 92.72, 2.38, 93.62, 0.91),
    _row("heapsort", "Heapsort", "CONCATREP", 703710, 659654, 69.90, 4.17, 19.45, 5.35, 31.04, 5.82),
    _row("insertion_sort", "InsertionSort", "DIV2MEAN", 523445, 524477, 89.47, 2.57, 86.89, 1.89, 78.14, 4.64),
    _row("jarvis_march", "JarvisMarch", "Baseline", 308954, 264898, 90.36, 0.65, 88.91, 0.91, 91.01, 1.30),
    _row("kmp_matcher", "KMP", "Baseline", 396989, 398021, 16.29, 4.36, 8.88, 1.76, 19.51, 4.57),
    _row("lcs_length", "LCSLength", "Baseline", 270419, 270419, 85.75, 0.80, 86.05, 0.65, 80.51, 1.84),
    _row("matrix_chain_order", "MatrixChainOrder", "Baseline", 624448, 624448, 90.77, 0.75, 91.15, 0.85, 91.68, 0.59),
    _row("minimum", "Minimum", "DIV2MEAN", 260275, 261307, 98.40, 0.16, 98.26, 0.26, 97.78, 0.55),
    _row("mst_kruskal", "MSTKruskal", "CONCATREP", 443747, 399691, 91.47, 0.48, 90.60, 0.32, 89.80, 0.77),
    _row("mst_prim", "MSTPrim", "CONCATREP", 569942, 525886, 88.74, 1.67, 85.18, 2.24, 86.39, 1.33),
    _row("naive_string_matcher", "NaiveStringMatcher", "QUADNODEMINMAX", 259364, 262588, 79.77, 2.88, 73.39, 6.33, 78.67, 4.99),
    _row("optimal_bst", "OptimalBST", "DIV2MEAN", 624955, 625987, 78.66, 0.46, 78.08, 0.96, 73.77, 1.48),
    _row("quickselect", "Quickselect", "QUADNODEMINMAX", 377130, 395714, 0.79, 0.41, 0.13, 0.08, 0.47, 0.25),
    _row("quicksort", "Quicksort", "DIV2MEAN", 524727, 525759, 85.23, 4.26, 84.71, 2.66, 64.64, 5.12),
    _row("segments_intersect", "SegmentsIntersect", "DIV2MEAN", 262327, 263359, 98.15, 0.00, 97.40, 0.00, 97.64, 0.09),
    _row("strongly_connected_components", "SCC", "Baseline", 707299, 663243, 41.86, 3.39, 43.71, 5.94, 43.43, 3.15),
    _row("task_scheduling", "TaskScheduling", "TANHEXPANDTRIPLETS", 262333, 262333, 88.23, 0.44, 88.10, 0.31, 87.25, 0.35),
    _row("topological_sort", "TopologicalSort", "TANHEXPANDTRIPLETS", 660164, 660164, 88.12, 4.71, 76.88, 5.05, 87.27, 2.67),
)

TABLE3: Dict[str, PublishedRow] = {r.algorithm: r for r in _ROWS}
assert set(TABLE3) == set(CLRS30), "Table 3 has one row per CLRS-30 algorithm"
IBARZ_AVERAGE = 75.98    # Ibarz et al.'s published 30-task average OOD accuracy (%); the mean of ibarz_mean above


def average(field: str, algorithms=CLRS30) -> float:
    """Mean of one column (e.g. "ibarz_mean") over some algorithms."""
    values = [getattr(TABLE3[a], field) for a in algorithms]
    return sum(values) / len(values)

"""NAS-Bench-Graph (Qin et al., NeurIPS 2022 Datasets and Benchmarks) as a tabular task.

Its space: 26,206 GNN architectures, each a DAG of 4 computing nodes; node i reads the cell input
(``link[i] = 0``) or node ``link[i] - 1`` and applies one operation of gat/gcn/gin/cheb/sage/arma/graph/
fc/skip. The PyPI package ``nas-bench-graph`` ships the "light" tables (validation and test
performance, latency, parameters) of every architecture on 9 datasets; "training" a child is a lookup.

Modules: ``space`` (the package, its tables, canonical architectures), ``render`` (an architecture as
a PyTorch Geometric-style class definition, and a class text back to an architecture), ``harness``
(the sandbox entry: parse and look up), ``task`` (the ``task=nas_bench_graph`` Task). Nothing here
imports torch or torch_geometric: the class text is read with ``ast``, never run.
"""

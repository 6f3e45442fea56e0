"""The CLRS task of the paper: a child is the triplet-message function of Triplet-GMPNN (Haiku).

Contract (checked before training, ``checks.py``)::

    def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
        # z (B, N, 2H): node features and hidden state; edge_fts (B, N, N, H); graph_fts (B, H)
        # -> triplet messages (B, N, N, out_size), reduction over triplets included

The processor applies its activation (ReLU) to the result and feeds it back as edge features, as
dm-clrs's Triplet-GMPNN does (``processor.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from evo.errors import ConfigError, fail
from evo.tasks.base import Prepared, Task

PRELUDE = "import haiku as hk\nimport jax\nimport jax.numpy as jnp"
PREFILL = "def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):\n    tri_1 ="
SIGNATURE = "get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size)"
# The CLRS-30 algorithms (dm-clrs names; clrs.CLRS_30_ALGS_SETTINGS), listed here so that a config is
# checked without importing dm-clrs (which imports tensorflow).
CLRS30 = ("activity_selector", "articulation_points", "bellman_ford", "bfs", "binary_search", "bridges",
          "bubble_sort", "dag_shortest_paths", "dfs", "dijkstra", "find_maximum_subarray_kadane",
          "floyd_warshall", "graham_scan", "heapsort", "insertion_sort", "jarvis_march", "kmp_matcher",
          "lcs_length", "matrix_chain_order", "minimum", "mst_kruskal", "mst_prim", "naive_string_matcher",
          "optimal_bst", "quickselect", "quicksort", "segments_intersect", "strongly_connected_components",
          "task_scheduling", "topological_sort")


class CLRSTask(Task):
    name = "clrs"
    prelude = PRELUDE
    prefill = PREFILL
    entry = "get_triplet_msgs"
    body_marker = "def get_triplet_msgs"
    body_indent = 4
    harness = "evo.tasks.clrs.harness:evaluate_source"
    # A body cut off before its return (runaway stacks of layers are common with small LMs) is closed
    # with pairwise messages from tri_1, which the prefill guarantees: (B, N, F) -> (B, N, N, out_size).
    # Recorded on the child's row as `closed_with_return`, like MNIST-1D's closing Dense.
    closing_return = "return hk.Linear(out_size)(jnp.expand_dims(tri_1, axis=1) + jnp.expand_dims(tri_1, axis=2))"

    def __init__(self, algorithm: str = "articulation_points", train_lengths: Sequence[int] = (4, 7, 11, 13, 16),
                 train_samples: int = 1000, val_length: int = 16, val_samples: int = 64, test_length: int = 64,
                 test_samples: int = 64, train_steps: int = 2000, batch_size: int = 32, eval_batch_size: int = 32,
                 learning_rate: float = 1e-3, weight_decay: float = 1e-4, grad_clip: float = 1.0,
                 hidden_dim: int = 128, nb_triplet_fts: int = 8, use_ln: bool = True, eval_every: int = 50,
                 data_seed: int = 0, train_seed: int = 0,
                 allowed_imports: Sequence[str] = ("haiku", "jax", "numpy", "math", "functools"),
                 seeds_dir: Optional[str] = None, banned_words: Sequence[str] = (), name: str = "clrs"):
        self.algorithm = algorithm
        self.pools = dict(train=[(int(n), int(train_samples)) for n in train_lengths],
                          val=(int(val_length), int(val_samples)), test=(int(test_length), int(test_samples)))
        self.data_seed = int(data_seed)
        self.train_kwargs = dict(steps=train_steps, batch_size=batch_size, eval_batch_size=eval_batch_size,
                                 learning_rate=learning_rate, weight_decay=weight_decay, grad_clip=grad_clip,
                                 hidden_dim=hidden_dim, eval_every=eval_every, seed=train_seed)
        self.model_kwargs = dict(nb_triplet_fts=nb_triplet_fts, use_ln=use_ln)
        self.allowed_imports = list(allowed_imports)
        self.seeds_dir = seeds_dir
        self.banned_words = list(banned_words)

    @classmethod
    def check_config(cls, node, config) -> None:
        """Fast checks of the task node (no dm-clrs import): raises ConfigError naming key and fix."""
        import importlib.util

        super().check_config(node, config)   # the training keys
        cfg = node
        if importlib.util.find_spec("clrs") is None or importlib.util.find_spec("haiku") is None:
            raise ConfigError("task=clrs needs dm-clrs and dm-haiku, which are not installed. "
                              "Fix: pip install -e '.[clrs]' (or bash scripts/setup.sh).")
        if cfg.algorithm not in CLRS30:
            fail("task.algorithm", cfg.algorithm, f"It is not one of the 30 CLRS algorithms: {', '.join(CLRS30)}.",
                 "pass task.algorithm=articulation_points (or graham_scan, mst_kruskal: the paper's search tasks).")
        if not cfg.train_lengths or any(int(n) < 4 for n in cfg.train_lengths):
            fail("task.train_lengths", list(cfg.train_lengths or []),
                 "Training graph sizes must be a non-empty list of sizes >= 4 (some samplers need 4 nodes).",
                 "pass task.train_lengths=[4,7,11,13,16] (run.py) or task.train_lengths=[16].")
        for key in ("val_length", "test_length"):
            if cfg[key] < 4:
                fail(f"task.{key}", cfg[key], "Graph sizes must be at least 4.", f"pass task.{key}=16 or more.")
        for key in ("train_samples", "val_samples", "test_samples", "eval_batch_size", "hidden_dim", "nb_triplet_fts"):
            if cfg[key] < 1:
                fail(f"task.{key}", cfg[key], "It counts something and must be at least 1.", f"pass task.{key}=1 or more.")
        if cfg.batch_size > cfg.train_samples:
            fail("task.batch_size", cfg.batch_size, f"A batch is drawn from each training pool of "
                 f"task.train_samples={cfg.train_samples} trajectories.",
                 f"pass task.batch_size<={cfg.train_samples} or raise task.train_samples.")

    def grammar(self) -> str:
        """The triplet-function body language, keywords from the installed Haiku and JAX (evo/tasks/clrs/grammar.py)."""
        from evo.tasks.clrs.grammar import lark_grammar  # its jax and haiku imports only when a grammar is asked for
        return lark_grammar()

    def pool_specs(self) -> dict:
        """split -> [(pool name, "split:length:samples:seed")]: each split and length has its own seed."""
        from evo.tasks.clrs.data import pool_name
        offsets = {"train": 0, "val": 1000, "test": 2000}
        out = {}
        for split, sizes in self.pools.items():
            items = []
            for length, num in (sizes if split == "train" else [sizes]):
                seed = self.data_seed + offsets[split] + length
                items.append((pool_name(self.algorithm, split, length, num, seed), f"{split}:{length}:{num}:{seed}"))
            out[split] = items
        return out

    def data_dir(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "data" / "clrs"

    def prepare(self, cache_dir: Path) -> Prepared:
        """Generate the missing pools once (a subprocess: dm-clrs imports tensorflow), then hand the
        children the folder, read-only."""
        from evo.tasks.clrs.data import exists
        from evo.tasks.clrs.harness import CHILD_ENV
        folder = self.data_dir(cache_dir)
        specs = self.pool_specs()
        missing = [arg for items in specs.values() for name, arg in items if not exists(folder, name)]
        if missing:
            print(f"generating CLRS data for {self.algorithm} ({len(missing)} pools) in {folder} ...", flush=True)
            proc = subprocess.run([sys.executable, "-m", "evo.tasks.clrs.data", str(folder), self.algorithm, *missing],
                                  env={**os.environ, **CHILD_ENV}, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"generating CLRS data failed:\n{proc.stderr[-3000:]}")
        kwargs = {"data_dir": str(folder), "train_pools": [n for n, _ in specs["train"]],
                  "val_pool": specs["val"][0][0], "test_pool": specs["test"][0][0],
                  **self.model_kwargs, **self.train_kwargs}
        return Prepared(harness_kwargs=kwargs, readonly_paths=[str(folder)], env=dict(CHILD_ENV))

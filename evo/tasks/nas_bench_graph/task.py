"""``task=nas_bench_graph``: the LM writes a GNN class, the task maps it to (link, ops) and looks it up.

A child is ``class Model(torch.nn.Module)`` with four layers and a ``forward`` over ``(x, edge_index)``
(evo/tasks/nas_bench_graph/render.py). "Training" is one lookup in the package's table of
``dataset``: its cost is one evaluation, and the archive records it like any trained child
(num_params = the table's parameter count, val/test accuracy = its validation/test performance).
The search's fitness stays the paper's -(num_params x validation error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from evo.errors import fail
from evo.tasks.base import Prepared, Task
from evo.tasks.nas_bench_graph import render
from evo.tasks.nas_bench_graph.space import DATASETS, Architecture, package, space, table

PREFILL = "class Model(torch.nn.Module):\n    def __init__(self, dim):\n        super().__init__()\n        self.node1 ="


class NASBenchGraphTask(Task):
    name = "nas_bench_graph"
    prelude = render.PRELUDE
    prefill = PREFILL
    entry = render.ENTRY
    body_marker = "def __init__"   # the LM writes the layers and forward; the sample ends at forward's return
    body_indent = 8
    closing_return = None          # a sample cut off before its return is recorded as outside the space
    harness = "evo.tasks.nas_bench_graph.harness:evaluate_source"

    def __init__(self, dataset: str = "cora", allowed_imports: Sequence[str] = ("torch", "torch_geometric"),
                 seeds_dir: Optional[str] = None, banned_words: Sequence[str] = (), name: str = "nas_bench_graph"):
        self.dataset = dataset
        self.allowed_imports = list(allowed_imports)
        self.seeds_dir = seeds_dir
        self.banned_words = list(banned_words)

    @staticmethod
    def check_config(cfg, config=None) -> None:
        """Before any compute: the dataset is one of the benchmark's and the package is installed (a child
        is looked up, not trained: the training keys of Task.check_config are not this task's)."""
        if cfg.get("dataset") not in DATASETS:
            fail("task.dataset", cfg.get("dataset"), f"NAS-Bench-Graph has tables for {', '.join(DATASETS)}.",
                 "pass e.g. task.dataset=cora.")
        try:
            package()
        except ImportError as exc:
            fail("task", "nas_bench_graph", str(exc) + ".", "pip install nas-bench-graph (scripts/setup.sh does).")

    def seed_programs(self) -> dict[str, str]:
        """With no ``seeds_dir``: the benchmark's own 10 anchor networks (skip, skip or skip and 3 layers of
        gcn/gat/gin/graph/sage in a chain), rendered; on proteins only those its table holds."""
        if self.seeds_dir:
            return super().seed_programs()
        held, seeds = table(self.dataset), {}
        for a in package().anchors:
            arch = Architecture(a.link, a.ops)
            if arch.key() in held:
                seeds["_".join(arch.ops)] = render.render(arch)
        return seeds

    def prepare(self, cache_dir: Path) -> Prepared:
        space(self.dataset)   # read the table once here: a missing package fails before any child runs
        return Prepared(harness_kwargs={"dataset": self.dataset})

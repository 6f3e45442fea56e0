"""Sandbox entry of task=nas_bench_graph: read the child's class text back to an architecture and
look it up. The text is parsed with ``ast`` only; nothing of it runs. An architecture outside the
space is a BUILD_ERROR with the parser's reason (the search records it and goes on)."""

from __future__ import annotations

from evo import outcome
from evo.tasks.nas_bench_graph.render import parse
from evo.tasks.nas_bench_graph.space import SpaceError, lookup


def evaluate_source(code: str, dataset: str) -> dict:
    try:
        arch = parse(code)
        record = lookup(arch, dataset)
    except SpaceError as exc:
        raise outcome.ChildFailure(outcome.BUILD_ERROR, f"outside the NAS-Bench-Graph space: {exc}") from None
    return {"num_params": record.num_params, "val_accuracy": record.val_accuracy,
            "test_accuracy": record.test_accuracy, "source": f"(NAS-Bench-Graph table, key {record.key})",
            "train_s": 0.0, "device": "table", "link": list(arch.link), "ops": list(arch.ops)}

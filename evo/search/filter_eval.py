"""FILTERANDEVAL (Algorithm 3): every stage a child passes, in order, is listed in :data:`STAGES`.

Cascade: duplicate (the archive) -> static checks: syntax and compile, import/name allowlist (here, on the
text) -> the surrogate's screening (surrogate=cole only, per round, in the loop) -> sandboxed process: build,
output shape, batch independence, training (with the GPU limits of :meth:`FilterAndEval.on_gpu` on a GPU)
-> validation error < alpha -> fitness.
A failure at any stage is a status and a reason, never an exception: the search goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from evo import outcome
from evo.outcome import Evaluation   # defined beside the statuses, so the archive can read its fields
from evo.search.program import check_static
from evo.sandbox.runner import SandboxLimits, run_in_sandbox
from evo.tasks.base import Prepared, Task


@dataclass(frozen=True)
class Stage:
    """One stage of Algorithm 3: who runs it, and the statuses a child stopped there gets."""
    name: str
    runs_in: str
    statuses: tuple


STAGES = (
    Stage("duplicate", "Archive.insert_child, when the child is stored: a program with the normalised AST of an "
          "earlier one is never evaluated again", (outcome.DUPLICATE,)),
    Stage("static", "FilterAndEval.static, in the search process, no child code runs: syntax and compile, the "
          "import and name allowlist, the entry point", (outcome.SYNTAX_ERROR, outcome.FORBIDDEN, outcome.BUILD_ERROR)),
    Stage("surrogate", "EvoPrompting._screen, once per round after sampling (surrogate=cole only; it asks "
          "FilterAndEval.static first): the children predicted worst are not trained", (outcome.SKIPPED,)),
    Stage("sandbox", "FilterAndEval.sandbox, in a sandboxed process (FilterAndEval.on_gpu: the GPU's limits): build, "
          "output shape, batch independence, training", (*outcome.FAILED,)),
    Stage("alpha", "FilterAndEval.alpha_filter: validation error < alpha, then the fitness", (outcome.FILTERED, outcome.OK)),
)


def fitness(num_params: int, val_accuracy: float) -> float:
    """The paper's fitness: -(model size x validation error); higher is better."""
    return -(num_params * (1.0 - val_accuracy))


class FilterAndEval:
    def __init__(self, task: Task, prepared: Prepared, limits: SandboxLimits, alpha: float,
                 scratch_root: Optional[Path] = None):
        self.task, self.prepared, self.limits, self.alpha = task, prepared, limits, alpha
        self.scratch_root = str(scratch_root) if scratch_root else None
        self.env, self.devices = dict(prepared.env), ()

    def on_gpu(self, visible: str, devices: list[str]) -> "FilterAndEval":
        """The same cascade for a child that may use the GPU(s) ``visible`` (CUDA_VISIBLE_DEVICES) through
        the device files ``devices``: JAX picks its backend, and memory is capped by the cgroup alone
        (RLIMIT_AS is unworkable with CUDA)."""
        gpu = FilterAndEval(self.task, self.prepared, replace(self.limits, address_space=False), self.alpha,
                            self.scratch_root)
        gpu.env = {**self.env, "JAX_PLATFORMS": None, "CUDA_VISIBLE_DEVICES": visible}
        gpu.devices = tuple(devices)
        return gpu

    def __call__(self, code: str, cpus: Optional[list[int]] = None) -> Evaluation:
        """The stages of :data:`STAGES` that evaluate one child (the archive and the loop run the others)."""
        t0 = time.time()
        ev = self.static(code)
        if ev is not None:
            ev.eval_seconds = time.time() - t0
            return ev
        ev, payload = self.sandbox(code, cpus)
        return ev if payload is None else self.alpha_filter(ev, payload)

    def static(self, code: str) -> Optional[Evaluation]:
        """Stage ``static``: the child's failure, or None when it may run."""
        failed = check_static(code, self.task.allowed_imports, self.task.entry)
        return None if failed is None else Evaluation(status=failed[0], reason=failed[1])

    def sandbox(self, code: str, cpus: Optional[list[int]] = None) -> tuple[Evaluation, Optional[dict]]:
        """Stage ``sandbox``: (the evaluation, the harness's payload; None unless the child trained)."""
        res = run_in_sandbox(self.task.harness, self.prepared.harness_kwargs, code, self.limits,
                             readonly_paths=self.prepared.readonly_paths, scratch_root=self.scratch_root,
                             extra_env=self.env, devices=self.devices, cpus=cpus)
        ev = Evaluation(status=res.status, reason=res.reason, eval_seconds=res.wall_s,
                        isolation=res.isolation, log_tail=res.log_tail or None)
        if res.status != outcome.OK:
            return ev, None
        p = res.payload
        ev.num_params, ev.val_accuracy, ev.test_accuracy = int(p["num_params"]), float(p["val_accuracy"]), float(p["test_accuracy"])
        ev.train_seconds, ev.compile_seconds, ev.device = p.get("train_s"), p.get("compile_s"), p.get("device")
        return ev, p

    def alpha_filter(self, ev: Evaluation, payload: dict) -> Evaluation:
        """Stage ``alpha``: a trained child above the error threshold is filtered, the others get the fitness."""
        error = 1.0 - ev.val_accuracy
        if error >= self.alpha:
            ev.status = outcome.FILTERED
            ev.reason = f"validation error {error:.3f} >= alpha {self.alpha}"
        else:
            # a tabular task has no training steps: its payload says where the score came from instead
            where = payload.get("source") or f"at step {payload.get('best_step')}"
            ev.reason = f"best validation accuracy {ev.val_accuracy:.4f} {where}"
            ev.fitness = fitness(ev.num_params, ev.val_accuracy)
        return ev

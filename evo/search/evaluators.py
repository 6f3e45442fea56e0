"""Where FILTERANDEVAL runs: the ``evaluator`` config group.

    evaluator=local   a pool of worker threads on this machine; each runs one child at a time in its
                      own sandboxed process (evo.sandbox.runner), pinned to its own core
    evaluator=slurm   one SLURM job per child, submitted with submitit as a job array per batch, one GPU
                      each; the same sandbox runs on the compute node

Both take a batch of ``(child_id, code)`` and return one future per child, completed as soon as that
child is done, so the search records each result at once and never waits for the slowest child to
record the others. Generated code never runs in the search process.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from evo import outcome
from evo.errors import ConfigError, fail
from evo.sandbox.runner import allow_new, kill_running
from evo.search.devices import plan_devices, visible_gpus
from evo.search.filter_eval import Evaluation, FilterAndEval

log = logging.getLogger(__name__)

# What the search tells an evaluator on each submission: on_submit(child_id, detail), logged as an event.
OnSubmit = Callable[[int, dict], None]


def cpu_slots(workers: int, pin: bool) -> list[Optional[list[int]]]:
    """One CPU set per worker. Children take cores from the last one down, so core 0 stays with the
    search process (the LM); with more workers than cores, slots share cores."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return [None] * workers
    cores = sorted(os.sched_getaffinity(0))
    return [[cores[-1 - (i % len(cores))]] for i in range(workers)]


def default_workers(reserve_cores: int) -> int:
    """The cores this process may use, less those the search process keeps for the LM (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - max(0, reserve_cores))


def evaluate_for_slot(evaluate: FilterAndEval, slot) -> FilterAndEval:
    """FILTERANDEVAL for one device slot (evo.search.devices.Slot): the CPU slot is ``evaluate`` itself (today's path);
    a GPU slot's cascade gets that GPU's environment (visible GPU, XLA memory share, no preallocation) and
    exactly its device files, with RLIMIT_AS off (see FilterAndEval.on_gpu)."""
    if slot.gpu is None:
        return evaluate
    gpu = evaluate.on_gpu(visible=slot.env["CUDA_VISIBLE_DEVICES"], devices=list(slot.devices))
    gpu.env.update(slot.env)
    return gpu


class LocalEvaluator:
    """``evaluator=local``: ``workers`` children at once on this machine, each pinned to its own core, and on
    a machine with GPUs each on its share of one GPU (``device``, ``workers_per_gpu``: evo/search/devices.py)."""

    name = "local"

    @property
    def lm_gpu_share(self) -> Optional[float]:
        """The share of GPU 0 the LM keeps when children share that GPU with it (None: no GPU shared); the config's
        ``lm_memory_fraction`` where the device plan puts children beside the LM."""
        return self.plan.lm_memory_fraction

    @staticmethod
    def check_config(node, cfg) -> None:
        """The ``evaluator`` node of evaluator=local, before any compute (evo.config.validate asks): the
        worker count, and the GPU keys through the same device plan the constructor makes."""
        if node.workers is not None and node.workers < 1:
            fail("evaluator.workers", node.workers, "It is the number of children evaluated at once.",
                 "pass evaluator.workers=1 or more, or null (the cores less the LM's threads).")
        device = node.get("device", "auto")
        try:
            plan_devices(visible_gpus() if device != "cpu" else [], device=device, workers=node.workers,
                         workers_per_gpu=node.get("workers_per_gpu", 1), memory_fraction=node.get("gpu_memory_fraction"),
                         lm_device=node.get("lm_device"), lm_memory_fraction=node.get("lm_memory_fraction", 0.25))
        except ValueError as exc:
            raise ConfigError(f"Invalid configuration: {exc}") from None

    def __init__(self, workers: Optional[int] = None, pin_cpus: bool = True, reserve_cores: int = 1,
                 device: str = "auto", workers_per_gpu: int = 1, gpu_memory_fraction: Optional[float] = None,
                 lm_memory_fraction: float = 0.25, lm_device: Optional[str] = None):
        # Where children train (evo/search/devices.py): a machine without /dev/nvidia<N> gets today's CPU plan.
        self.plan = plan_devices(visible_gpus() if device != "cpu" else [], device=device,
                                 workers=int(workers) if workers else None,
                                 cpu_workers=default_workers(reserve_cores), workers_per_gpu=workers_per_gpu,
                                 memory_fraction=gpu_memory_fraction, lm_device=lm_device,
                                 lm_memory_fraction=lm_memory_fraction)
        self.workers = self.plan.workers
        self.pin_cpus = pin_cpus
        self._pool: Optional[ThreadPoolExecutor] = None
        self._slots: list[tuple[Optional[list[int]], FilterAndEval, str]] = []
        self._slots_lock = threading.Lock()

    def start(self, evaluate: FilterAndEval, run_dir: Path, on_submit: Optional[OnSubmit] = None,
              resume: Optional[dict[int, dict]] = None) -> None:
        self._evaluate, self._on_submit = evaluate, on_submit
        cpus = cpu_slots(self.workers, self.pin_cpus)
        self._slots = [(c, evaluate_for_slot(evaluate, slot), slot.where) for c, slot in zip(cpus, self.plan.slots)]
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="eval")
        log.info("evaluator local: %d worker(s)%s%s", self.workers,
                 f", pinned to cores {[s[0][0] for s in self._slots]}" if self._slots and self._slots[0][0] else "",
                 f"; {self.plan.describe()}" if self.plan.on_gpu else "")

    def _run(self, child_id: int, code: str) -> Evaluation:
        with self._slots_lock:   # one slot per running child: no two children share a pinned core (or GPU share)
            slot = self._slots.pop()
        cpus, evaluate, where = slot
        try:
            if self._on_submit is not None:
                self._on_submit(child_id, {"evaluator": "local"} if where == "cpu" else
                                {"evaluator": "local", "device": where})
            return evaluate(code, cpus=cpus)
        finally:
            with self._slots_lock:
                self._slots.append(slot)

    def submit(self, batch: list[tuple[int, str]]) -> list[Future]:
        return [self._pool.submit(self._run, child_id, code) for child_id, code in batch]

    def close(self, abort: bool = False) -> None:
        """Wait for the running children, or (abort) kill them and drop what has not started."""
        if self._pool is None:
            return
        if abort:
            self._pool.shutdown(wait=False, cancel_futures=True)
            kill_running()   # also the children a worker is starting right now, once they exist
        self._pool.shutdown(wait=True)
        if abort:
            allow_new()
        self._pool = None


# ---------------------------------------------------------------------------------------- SLURM

def evaluate_on_node(evaluate: FilterAndEval, code: str) -> Evaluation:
    """The body of one child's SLURM job (runs on the compute node, in a submitit job): FILTERANDEVAL
    in the sandbox, on the job's GPU when SLURM gave it one and its device files exist."""
    gpus = [d for d in sorted(glob.glob("/dev/nvidia*")) if not os.path.isdir(d)]
    if os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1") and gpus:
        evaluate = evaluate.on_gpu(visible=os.environ["CUDA_VISIBLE_DEVICES"], devices=gpus)
    return evaluate(code)


@contextmanager
def _outside_job_env() -> Iterator[None]:
    """sbatch from inside a SLURM job (the search job itself may run on SLURM) inherits that job's
    SLURM_*/SBATCH_*/SUBMITIT_* variables, which leak into the child's job (memory and CPU settings
    conflict, submitit thinks it is the parent). Submit without them."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("SLURM_", "SBATCH_", "SUBMITIT_"))}
    try:
        yield
    finally:
        os.environ.update(saved)


class SlurmEvaluator:
    """``evaluator=slurm``: each child is one SLURM job with ``gpus_per_child`` GPUs; a batch of children
    is one submitit job array. A poller thread completes each child's future as its job finishes.

    The search's archive logs every job id, so a search that is killed or preempted picks its running
    jobs up again on resume instead of training those children twice. A job that SLURM itself ends
    (node failure, preemption, cancel) is submitted again up to ``max_resubmits`` times."""

    name = "slurm"
    lm_gpu_share = None   # children train on the cluster's GPUs: the LM shares none of them

    @staticmethod
    def check_config(node, cfg) -> None:
        """The ``evaluator`` node of evaluator=slurm, before any compute (evo.config.validate asks): its
        counts, and that submitit and a cluster (``sbatch``) are there."""
        for key in ("gpus_per_child", "cpus_per_child", "array_parallelism", "max_resubmits"):
            low = 1 if key in ("cpus_per_child", "array_parallelism") else 0
            if node[key] < low:
                fail(f"evaluator.{key}", node[key], f"It must be at least {low}.", f"pass evaluator.{key}={max(low, 1)}.")
        try:
            import submitit  # noqa: F401  -- optional (the 'cluster' extra): is it installed?
        except ImportError:
            fail("evaluator", "slurm", "The SLURM evaluator submits children with submitit, which is not installed.",
                 "pip install 'evo[cluster]' (submitit, hydra-submitit-launcher), or pass evaluator=local.")
        if shutil.which("sbatch") is None:
            fail("evaluator", "slurm", "There is no `sbatch` on PATH here, so no SLURM cluster to submit children to.",
                 "run on a SLURM login node, start the local one-node cluster (bash scripts/slurm.sh start), "
                 "or pass evaluator=local.")

    def __init__(self, partition: Optional[str] = None, account: Optional[str] = None, qos: Optional[str] = None,
                 gpus_per_child: int = 1, cpus_per_child: int = 1, mem_gb: Optional[int] = None,
                 timeout_min: Optional[int] = None, constraint: Optional[str] = None, array_parallelism: int = 64,
                 setup: Optional[list[str]] = None, additional_parameters: Optional[dict] = None,
                 folder: Optional[str] = None, poll_s: float = 2.0, max_resubmits: int = 1):
        self.params = dict(partition=partition, account=account, qos=qos, constraint=constraint,
                           array_parallelism=array_parallelism, setup=list(setup or []),
                           additional_parameters=dict(additional_parameters or {}))
        self.gpus_per_child, self.cpus_per_child = gpus_per_child, cpus_per_child
        self.mem_gb, self.timeout_min = mem_gb, timeout_min
        self.folder, self.poll_s, self.max_resubmits = folder, poll_s, max_resubmits
        self.workers = 0   # nothing runs in the search process
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[object, Future, str, int]] = {}   # child id -> (job, future, code, resubmits)
        self._stop = threading.Event()
        self._poller: Optional[threading.Thread] = None

    # -- set-up ----------------------------------------------------------------------------------
    def start(self, evaluate: FilterAndEval, run_dir: Path, on_submit: Optional[OnSubmit] = None,
              resume: Optional[dict[int, dict]] = None) -> None:
        """``resume``: child id -> the detail logged when its job was submitted (job id), for the
        children a previous process submitted but did not record."""
        import submitit   # optional (the 'cluster' extra): evaluator=slurm only
        self._submitit = submitit
        self._evaluate, self._on_submit = evaluate, on_submit
        folder = Path(self.folder) if self.folder else Path(run_dir) / "slurm_children"
        self._folder = folder / "%j"
        limits = evaluate.limits
        # The job's limits come from the sandbox's: its wall clock plus start-up, its memory plus the
        # job's own Python. SLURM kills a job over them; the sandbox's own limits still hold inside.
        timeout_min = self.timeout_min or math.ceil(limits.timeout_s / 60) + 10
        mem_gb = self.mem_gb or math.ceil((limits.memory_mb or 4096) / 1024) + 2
        self._executor = submitit.AutoExecutor(folder=self._folder, cluster="slurm")
        params = {f"slurm_{k}": v for k, v in self.params.items() if v not in (None, [], {})}
        self._executor.update_parameters(
            name="evo-child", timeout_min=timeout_min, mem_gb=mem_gb, cpus_per_task=self.cpus_per_child,
            gpus_per_node=self.gpus_per_child or None, **params)
        self._resume = dict(resume or {})
        self._poller = threading.Thread(target=self._poll, name="slurm-poller", daemon=True)
        self._poller.start()
        log.info("evaluator slurm: one job per child (%s GPU, %d CPU, %d GB, %d min), job folders in %s",
                 self.gpus_per_child, self.cpus_per_child, mem_gb, timeout_min, folder)

    # -- submission ------------------------------------------------------------------------------
    def submit(self, batch: list[tuple[int, str]]) -> list[Future]:
        futures = {child_id: Future() for child_id, _ in batch}
        fresh = []
        for child_id, code in batch:
            job_id = (self._resume.pop(child_id, None) or {}).get("job_id")
            if job_id is not None:   # submitted by the process this one resumes: wait for that job
                job = self._submitit.SlurmJob(folder=self._folder, job_id=str(job_id))
                log.info("child %d: waiting for its SLURM job %s from before the restart", child_id, job_id)
                with self._lock:
                    self._waiting[child_id] = (job, futures[child_id], code, 0)
            else:
                fresh.append((child_id, code))
        self._submit_jobs(fresh, {c: (futures[c], 0) for c, _ in fresh})
        return [futures[child_id] for child_id, _ in batch]

    def _submit_jobs(self, batch: list[tuple[int, str]], meta: dict[int, tuple[Future, int]]) -> None:
        if not batch:
            return
        with _outside_job_env():
            jobs = self._executor.map_array(evaluate_on_node, [self._evaluate] * len(batch), [c for _, c in batch])
        with self._lock:
            for (child_id, code), job in zip(batch, jobs):
                fut, resubmits = meta[child_id]
                self._waiting[child_id] = (job, fut, code, resubmits)
        for (child_id, _), job in zip(batch, jobs):
            if self._on_submit is not None:
                self._on_submit(child_id, {"evaluator": "slurm", "job_id": job.job_id})

    # -- results ---------------------------------------------------------------------------------
    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                waiting = list(self._waiting.items())
            again = []
            for child_id, (job, fut, code, resubmits) in waiting:
                try:
                    if not job.done():
                        continue
                except Exception as exc:  # noqa: BLE001  a sacct hiccup: ask again next time
                    log.debug("slurm: state of job %s unknown (%s)", job.job_id, exc)
                    continue
                with self._lock:
                    self._waiting.pop(child_id, None)
                result = self._result(child_id, job, resubmits)
                if result is None:
                    again.append((child_id, code, fut, resubmits + 1))
                else:
                    fut.set_result(result)
            if again:
                self._submit_jobs([(c, code) for c, code, _, _ in again], {c: (f, r) for c, _, f, r in again})

    def _result(self, child_id: int, job, resubmits: int) -> Optional[Evaluation]:
        """The child's evaluation; None to submit the child again (SLURM ended the job, not the child)."""
        try:
            return job.result()
        except self._submitit.core.utils.UncompletedJobError as exc:
            state = _job_state(job)
            if resubmits < self.max_resubmits:
                log.warning("child %d: SLURM job %s ended without a result (%s); submitting it again",
                            child_id, job.job_id, state)
                return None
            return Evaluation(status=outcome.CRASHED, reason=f"SLURM job {job.job_id} ended without a result "
                              f"({state}) after {resubmits + 1} submission(s): {_first_line(exc)}")
        except Exception as exc:  # noqa: BLE001  the job's Python raised: record it, the search goes on
            return Evaluation(status=outcome.CRASHED,
                              reason=f"SLURM job {job.job_id} raised: {_first_line(exc)}")

    def close(self, abort: bool = False) -> None:
        """Stop polling. On abort, jobs are left running: the next process picks them up by id."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        if not abort:
            with self._lock:
                for job, fut, _, _ in self._waiting.values():
                    job.cancel(check=False)
                    fut.cancel()
                self._waiting.clear()


def _job_state(job) -> str:
    try:
        return job.state
    except Exception:  # noqa: BLE001
        return "UNKNOWN"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:300]

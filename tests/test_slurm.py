"""Runs and children on a real single-node SLURM cluster (scripts/slurm.sh: slurm-wlm + munge, with
accounting and one declared GPU): a --multirun sweep through the submitit launcher, children evaluated
as SLURM GPU jobs, and a preempted search job that SLURM requeues and that resumes without evaluating
any child twice, logging to the same W&B run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runs import REPO, rows, search_cmd

pytestmark = [pytest.mark.slurm, pytest.mark.slow]   # starts a SLURM cluster and runs searches as jobs

# Smaller than runs.TINY: one seed program and one round keep each job near a minute on 2 cores.
SMALL = ("lm.max_new_tokens=60", "search.prompts_per_round=1", "crossmut.samples_per_prompt=3",
         "task.train_steps=20", "task.eval_every=10", "selection.survivors=1", "progress=false",
         "sandbox.timeout_s=300", "sandbox.isolation=none")
# The search job itself: one CPU, no GPU (its children ask for their own), small memory.
SEARCH_JOB = ("hydra/launcher=slurm_gpu", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
              "hydra.launcher.mem_gb=4", "hydra.launcher.timeout_min=30", "hydra.launcher.array_parallelism=2")


@pytest.fixture(scope="module")
def slurm():
    """The local cluster, started for these tests and stopped after them (if they started it)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("the local SLURM cluster needs root (and apt-get to install it)")
    script = REPO / "scripts" / "slurm.sh"
    was_up = subprocess.run(["bash", str(script), "status"], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    yield
    if not was_up:
        subprocess.run(["bash", str(script), "stop"], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeds")
    shutil.copy(REPO / "seeds" / "mnist1d" / "mlp.py", folder / "mlp.py")
    return folder


def sacct(job_id: str, fields: str = "JobID,State,AllocTRES", settle_s: float = 60) -> list[dict]:
    """The jobs' accounting records, once none is still running (a job's result file is written just
    before its process exits, so the caller may see the result first)."""
    deadline = time.time() + settle_s
    while True:
        out = subprocess.run(["sacct", "-j", str(job_id), "-X", "-n", "-P", f"--format={fields}"],
                             capture_output=True, text=True, check=True).stdout
        jobs = [dict(zip(fields.split(","), line.split("|"))) for line in out.splitlines() if line]
        if time.time() > deadline or not any(j["State"] in ("RUNNING", "PENDING", "COMPLETING") for j in jobs):
            return jobs
        time.sleep(1)


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_multirun_sweep_through_the_submitit_launcher(slurm, tiny_lm_dir, one_seed, tmp_path):
    sweep = tmp_path / "sweep"
    cmd = search_cmd(sweep, tiny_lm_dir, tmp_path / "cache", *SEARCH_JOB, "hydra.launcher.gpus_per_node=1",
                     "search.rounds=1", f"task.seeds_dir={one_seed}", "logger=wandb", "seed=0,1,2",
                     settings=SMALL, multirun=True)
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job_ids = set()
    for num in range(3):
        run_dir = sweep / str(num)
        assert rows(run_dir, "SELECT COUNT(*) AS n FROM rounds WHERE finished_at IS NOT NULL")[0]["n"] == 1
        assert rows(run_dir, "SELECT COUNT(*) AS n FROM children WHERE status = 'pending'")[0]["n"] == 0
        started = [json.loads(e["detail"]) for e in rows(run_dir, "SELECT detail FROM events WHERE kind = 'run_started'")]
        assert len(started) == 1 and started[0]["slurm_array_task_id"] == str(num)
        assert f"seed={num}" in started[0]["overrides"]
        job_ids.add(started[0]["slurm_array_job_id"])
        assert (run_dir / "summary.md").exists()
        assert len(offline_runs(run_dir)) == 1   # logger=wandb, offline: no key here
    assert len(job_ids) == 1, "the sweep should be one job array"
    tasks = sacct(job_ids.pop())
    assert len(tasks) == 3 and all(t["State"] == "COMPLETED" for t in tasks), tasks
    assert all("gres/gpu=1" in t["AllocTRES"] for t in tasks), tasks   # gpus_per_node=1 reached SLURM


def test_children_on_slurm_and_a_preempted_search_resumes(slurm, tiny_lm_dir, one_seed, tmp_path):
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0"
    cmd = search_cmd(sweep, tiny_lm_dir, tmp_path / "cache", *SEARCH_JOB, "hydra.launcher.gpus_per_node=null",
                     "search.rounds=2", f"task.seeds_dir={one_seed}", "evaluator=slurm",
                     "evaluator.partition=debug", "evaluator.mem_gb=3", "evaluator.poll_s=1", "logger=wandb",
                     settings=SMALL, multirun=True)
    launcher = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Preempt the search job once a round-0 child has been evaluated (by its own SLURM job).
    deadline, job_id = time.time() + 600, None
    while time.time() < deadline and launcher.poll() is None:
        time.sleep(1)
        try:
            n = rows(run_dir, "SELECT COUNT(*) AS n FROM events e JOIN children c ON c.id = e.child_id "
                              "WHERE e.kind = 'evaluated' AND c.round >= 0")[0]["n"]
            started = rows(run_dir, "SELECT detail FROM events WHERE kind = 'run_started'")
        except Exception:  # noqa: BLE001  no archive yet
            continue
        if n >= 1 and started:
            job_id = json.loads(started[0]["detail"])["slurm_job_id"]
            break
    assert job_id and launcher.poll() is None, "the search ended (or never started) before it could be preempted"
    # What submitit's job._interrupt() does: SIGTERM (ignored by submitit), then USR2 -> checkpoint + requeue.
    subprocess.run(["scancel", job_id, "--signal", "SIGTERM"], check=True)
    subprocess.run(["scancel", job_id, "--signal", "USR2"], check=True)
    out, _ = launcher.communicate(timeout=900)
    assert launcher.returncode == 0, out[-4000:]

    started = [json.loads(e["detail"]) for e in rows(run_dir, "SELECT detail FROM events WHERE kind = 'run_started' "
                                                              "ORDER BY id")]
    assert [s["resumed"] for s in started] == [False, True], started
    assert started[1]["slurm_restart_count"] == "1" and started[1]["slurm_job_id"] == job_id
    assert rows(run_dir, "SELECT COUNT(*) AS n FROM rounds WHERE finished_at IS NOT NULL")[0]["n"] == 2
    children = rows(run_dir, "SELECT * FROM children ORDER BY id")
    assert children and all(c["status"] != "pending" for c in children)
    # No child evaluated twice, across the preemption.
    evaluated = rows(run_dir, "SELECT child_id, COUNT(*) AS n FROM events WHERE kind = 'evaluated' GROUP BY child_id")
    assert evaluated and all(e["n"] == 1 for e in evaluated)
    # Every evaluated child ran as its own SLURM job with one GPU, and trained (the GPU is declared
    # without a device file here, so the child used the CPU and says so).
    submitted = {}
    for e in rows(run_dir, "SELECT child_id, detail FROM events WHERE kind = 'eval_started' ORDER BY id"):
        submitted[e["child_id"]] = json.loads(e["detail"])["job_id"]
    assert set(submitted) == {e["child_id"] for e in evaluated}
    for job in sacct(",".join(sorted(set(submitted.values())))):
        assert "gres/gpu=1" in job["AllocTRES"], job
    trained = [c for c in children if c["status"] in ("ok", "filtered")]
    assert trained and all(c["device"] == "cpu" and c["train_seconds"] > 0 for c in trained)
    # One W&B run, continued after the requeue: two offline folders of the same run id.
    ids = {p.name.rsplit("-", 1)[-1] for p in offline_runs(run_dir)}
    assert len(offline_runs(run_dir)) == 2 and len(ids) == 1

"""The search loop end to end with a real (tiny) LM, the real sandbox and real JAX training;
resume after SIGKILL with no child evaluated twice and the same final archive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from runs import REPO, rows, search_cmd


def test_search_end_to_end(tiny_search, tiny_lm_dir, tmp_path):
    run_dir = tiny_search.run_dir   # `python -m evo.run` with runs.TINY, run once per session (conftest.py)
    children = rows(run_dir, "SELECT * FROM children ORDER BY id")
    seeds = [c for c in children if c["round"] == -1]
    assert sorted(c["seed_name"] for c in seeds) == ["cnn", "gru", "mlp", "residual_cnn"]
    assert all(c["status"] in ("ok", "filtered") and c["num_params"] > 0 for c in seeds)
    generated = [c for c in children if c["round"] >= 0]
    assert len(generated) == 2 * 2 * 3 and all(c["status"] != "pending" for c in generated)
    for c in generated:  # every row carries its provenance
        assert c["prompt"] and c["raw_completion"] is not None and c["temperature"] in (0.2, 0.6, 0.8, 1.0)
        assert len(json.loads(c["parents"])) == 2 and c["lm_name"] and c["tokens_out"] > 0
        assert c["code"].startswith("import flax.linen as nn")
    rounds = rows(run_dir, "SELECT * FROM rounds ORDER BY round")
    assert [r["round"] for r in rounds] == [0, 1] and all(r["finished_at"] for r in rounds)
    assert rounds[0]["selection"] == "seeds"
    # No program is evaluated twice: one 'evaluated' event per non-duplicate row, none for a duplicate.
    assert _evaluations(run_dir) == {c["id"]: 1 for c in children if c["status"] != "duplicate"}
    for name in ("summary.md", "summary.json", "pareto.png"):
        assert (run_dir / name).stat().st_size > 0
    assert "New, distinct, working children" in tiny_search.stdout and str(run_dir) in tiny_search.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["round"] for s in summary["rounds"]] == [0, 1]
    assert sum(s["samples"] for s in summary["rounds"]) == len(generated)
    assert sum(s["new_working"] for s in summary["rounds"]) == sum(c["status"] in ("ok", "filtered") for c in generated)

    copy = tmp_path / "run"   # the report and the commands below write to the run folder, which is shared
    shutil.copytree(run_dir, copy)
    report = subprocess.run([sys.executable, "-m", "evo.report", str(copy)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0 and "## Rounds" in report.stdout

    # Running the same command on a finished run changes nothing and loads no LM.
    again = subprocess.run(search_cmd(copy, tiny_lm_dir, tiny_search.cache), cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "(resuming)" in again.stdout
    assert rows(copy, "SELECT COUNT(*) AS n FROM children")[0]["n"] == len(children)

    # A resumed run must not silently change the search.
    changed = subprocess.run(search_cmd(copy, tiny_lm_dir, tiny_search.cache, "search.alpha=0.3"), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2 and "different settings for: search" in changed.stderr


def _evaluations(run_dir) -> dict[int, int]:
    """How many 'evaluated' events each child has."""
    return {e["child_id"]: e["n"] for e in
            rows(run_dir, "SELECT child_id, COUNT(*) AS n FROM events WHERE kind = 'evaluated' GROUP BY child_id")}


def _signature(run_dir):
    return [(c["round"], c["prompt_id"], c["sample_index"], c["code_hash"], c["status"], c["fitness"])
            for c in rows(run_dir, "SELECT * FROM children ORDER BY id")]


@pytest.mark.slow
def test_resume_after_sigkill_is_as_if_never_stopped(tiny_search, tiny_lm_dir, tmp_path):
    cache = tiny_search.cache
    reference = tiny_search.run_dir   # the same command run uninterrupted (once per session, conftest.py)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(search_cmd(killed, tiny_lm_dir, cache), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    # Kill once some round-0 children are stored and at least one has been evaluated.
    while time.time() < deadline:
        time.sleep(0.5)
        db = killed / "archive.sqlite"
        if db.exists():
            try:
                n = rows(killed, "SELECT COUNT(*) AS n FROM events e JOIN children c ON c.id = e.child_id "
                                 "WHERE e.kind = 'evaluated' AND c.round >= 0")[0]["n"]
            except sqlite3.OperationalError:
                continue
            if n >= 1:
                break
    assert proc.poll() is None, "the search finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = rows(killed, "SELECT id, status FROM children WHERE status != 'pending'")
    assert before and not (killed / "summary.md").exists()

    r = subprocess.run(search_cmd(killed, tiny_lm_dir, cache), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(resuming)" in r.stdout
    # Every child scored before the kill kept its result and was not evaluated again.
    after = {c["id"]: c["status"] for c in rows(killed, "SELECT id, status FROM children")}
    assert all(after[b["id"]] == b["status"] for b in before)
    kept = rows(killed, "SELECT id FROM children WHERE status != 'duplicate'")
    assert _evaluations(killed) == {c["id"]: 1 for c in kept}
    assert _signature(killed) == _signature(reference)


@pytest.mark.slow
def test_ctrl_c_stops_running_children_and_records_none_of_them(tiny_lm_dir, tmp_path):
    """An interrupted search (Ctrl-C here; a SLURM preemption raises SystemExit the same way) kills the
    child it is training at once, and does not record that child as a failure: it stays pending, so a
    restart evaluates it."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "mlp.py").write_text((REPO / "seeds" / "mnist1d" / "mlp.py").read_text())
    run_dir = tmp_path / "run"
    # As from a terminal: a shell's background job (nohup ... &, some CI runners) starts with SIGINT
    # ignored, which Python then keeps, and Ctrl-C would not reach the search at all.
    proc = subprocess.Popen(search_cmd(run_dir, tiny_lm_dir, tmp_path / "cache", f"task.seeds_dir={seeds}",
                                       "task.train_steps=1000000", "sandbox.timeout_s=3600"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:   # wait until the seed is in training
        time.sleep(0.5)
        try:
            if rows(run_dir, "SELECT COUNT(*) AS n FROM events WHERE kind = 'eval_started'")[0]["n"]:
                break
        except sqlite3.OperationalError:
            continue
    time.sleep(8)   # past the sandbox's start-up: the child is training (a million steps: ~15 min)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)   # not the ~15 min the child would need to finish
    assert proc.returncode != 0 and "KeyboardInterrupt" in out
    seed = rows(run_dir, "SELECT status FROM children WHERE round = -1")
    assert seed == [{"status": "pending"}]
    assert rows(run_dir, "SELECT COUNT(*) AS n FROM events WHERE kind = 'evaluated'")[0]["n"] == 0

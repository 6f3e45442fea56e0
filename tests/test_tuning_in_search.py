"""Soft prompt tuning inside the search (Algorithm 1 line 11), with the tiny real LM, real peft and
real child training: TRAIN runs on C_ev minus the new parents, the adapter is saved per round, the
next round samples with exactly that prompt, and a run killed after TRAIN restores it on resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from evo.config import compose_config
from runs import REPO, TUNABLE, rows, search_cmd

pytest.importorskip("peft")
pytestmark = pytest.mark.slow   # the ablation sweep's tuned search, a killed run and its resume


@pytest.fixture(scope="module")
def reference(ablation_sweep):
    """One uninterrupted tiny search (runs.TUNABLE) with tuning between its two rounds: the ablation=none run of
    the session's ablation sweep (conftest.py; none is the default), so only read here."""
    return ablation_sweep.runs["none"], ablation_sweep.cache


def test_train_uses_this_rounds_children_minus_the_new_parents(reference):
    run_dir, _ = reference
    tuning = rows(run_dir, "SELECT * FROM tuning ORDER BY round")
    assert [t["round"] for t in tuning] == [0], "TRAIN runs after every round but the last"
    t = tuning[0]
    ok = {c["id"] for c in rows(run_dir, "SELECT id FROM children WHERE round = 0 AND status = 'ok'")}
    parents = set(json.loads(rows(run_dir, "SELECT parents FROM rounds WHERE round = 1")[0]["parents"]))
    assert len(ok) >= 2, f"precondition: round 0 left {len(ok)} scored children; the tiny LM settings drifted"
    assert set(json.loads(t["children"])) == ok - parents and t["texts"] == len(ok - parents) > 0
    epochs = json.loads(t["epoch_losses"])
    assert len(epochs) == 5 and epochs[-1] < epochs[0]   # the loss curve is recorded and goes down
    assert len(json.loads(t["step_losses"])) == 5 * -(-t["texts"] // 16)
    adapter = run_dir / t["adapter"]
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    # Provenance: round 0 sampled the base LM, round 1 the prompt tuned after round 0.
    sampled = rows(run_dir, "SELECT round, soft_prompt_round FROM children WHERE round >= 0")
    assert {c["soft_prompt_round"] for c in sampled if c["round"] == 0} == {None}
    assert {c["soft_prompt_round"] for c in sampled if c["round"] == 1} == {0}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["round"] for s in summary["soft_prompt"]] == [0] and (run_dir / "soft_prompt.png").stat().st_size > 0


def test_next_round_samples_with_the_saved_prompt(reference, tiny_lm_dir):
    """Re-sample round 1's first prompt in this process from the saved adapter: the completions are
    the archive's, character for character; the base LM writes something else."""
    from hydra.utils import instantiate

    from evo.search.crossmut import CrossMut
    from evo.search.loop import derive_seed
    from evo.search.tuning import PromptTuningConfig, SoftPromptTuner
    from omegaconf import OmegaConf

    run_dir, cache = reference
    cfg = compose_config(["lm=hf", f"lm.model={tiny_lm_dir}", *TUNABLE, f"run_dir={run_dir}", f"cache_dir={cache}"])
    prompt = rows(run_dir, "SELECT * FROM prompts WHERE round = 1 AND prompt_index = 0")[0]
    stored = rows(run_dir, "SELECT temperature, raw_completion FROM children WHERE prompt_id = ? AND attempt = 0 "
                           "ORDER BY sample_index", (prompt["id"],))
    task, lm = instantiate(cfg.task), instantiate(cfg.lm)
    crossmut = CrossMut(**OmegaConf.to_container(cfg.crossmut))
    temps = [c["temperature"] for c in stored]
    seed = derive_seed(cfg.seed, "lm", 1, 0, 0)

    base = [s.completion.text for s in crossmut.sample(lm, task, prompt["prompt"], temps, seed=seed)]
    tuner = SoftPromptTuner(lm, PromptTuningConfig(**OmegaConf.to_container(cfg.soft_prompt)))
    tuner.load(run_dir / "soft_prompt" / "round_0")
    tuner.activate()
    tuned = [s.completion.text for s in crossmut.sample(lm, task, prompt["prompt"], temps, seed=seed)]
    assert tuned == [c["raw_completion"] for c in stored]
    assert base != tuned


def test_resume_after_a_kill_restores_the_saved_prompt(reference, tiny_lm_dir, tmp_path):
    """Kill the search once round 1 has started sampling with the tuned prompt; the resumed run
    reloads soft_prompt/round_0 (no second TRAIN) and ends with the reference's archive."""
    ref_dir, cache = reference
    killed = tmp_path / "killed"
    proc = subprocess.Popen(search_cmd(killed, tiny_lm_dir, cache, settings=TUNABLE), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            if rows(killed, "SELECT COUNT(*) AS n FROM children WHERE round = 1")[0]["n"] > 0:
                break
        except sqlite3.OperationalError:   # not created yet
            continue
    assert proc.poll() is None, "the search finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert rows(killed, "SELECT COUNT(*) AS n FROM prompts WHERE round = 1 AND complete = 0")[0]["n"] \
        + (2 - rows(killed, "SELECT COUNT(*) AS n FROM prompts WHERE round = 1")[0]["n"]) > 0, \
        "killed too late: round 1 had no sampling left to do with the restored prompt"
    adapter = killed / "soft_prompt" / "round_0" / "adapter_model.safetensors"
    saved_at = adapter.stat().st_mtime_ns

    r = subprocess.run(search_cmd(killed, tiny_lm_dir, cache, settings=TUNABLE), cwd=REPO, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert adapter.stat().st_mtime_ns == saved_at and len(rows(killed, "SELECT * FROM tuning")) == 1
    signature = "SELECT round, prompt_id, sample_index, attempt, raw_completion, soft_prompt_round, status, fitness " \
                "FROM children ORDER BY id"
    assert rows(killed, signature) == rows(ref_dir, signature)
    evaluated = rows(killed, "SELECT child_id, COUNT(*) AS n FROM events WHERE kind = 'evaluated' GROUP BY child_id")
    kept = rows(killed, "SELECT id FROM children WHERE status != 'duplicate'")   # each evaluated once, none twice
    assert {e["child_id"]: e["n"] for e in evaluated} == {c["id"]: 1 for c in kept}

"""The CPU-scale ablation sweep (sweeps/mnist1d_cpu_ablations.yaml): every run composes and validates
with one common sample budget, and re-running the same command resumes it without repeating a child."""

from __future__ import annotations

import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest
from runs import TINY, rows

from evo.config import effective_search, register_configs, validate
from evo.run import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
SWEEP = "mnist1d_cpu_ablations"


def test_every_run_of_the_cpu_sweep_composes_validates_and_has_the_same_budget():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    searchpath = f"hydra.searchpath=[file://{CONF_DIR}]"   # evo.run's own conf/, as with --config-dir sweeps
    try:
        with initialize_config_dir(config_dir=str(REPO / "sweeps"), version_base=None):
            full = compose(config_name=SWEEP, return_hydra_config=True, overrides=[searchpath])
            assert str(full.hydra.mode) == "RunMode.MULTIRUN"
            assert full.hydra.runtime.choices["hydra/launcher"] == "basic"     # sequential, on this machine
            assert "${now:" not in str(full.hydra.sweep.dir)                    # a fixed folder: resumable
            params = {k: str(v).split(",") for k, v in full.hydra.sweeper.params.items()}
            assert list(params) == ["seed", "ablation"]                         # seed-major job numbers
            assert len(params["seed"]) >= 3
            assert set(params["ablation"]) == {"none", "no_prompt_tuning", "random_parents", "naive_fewshot"}
            budgets, settings = set(), set()
            for values in product(*params.values()):
                run = dict(zip(params, values))
                cfg = compose(config_name=SWEEP, overrides=[f"{k}={v}" for k, v in run.items()] + ["run_dir=x", searchpath])
                assert cfg.ablation.name == run["ablation"] and cfg.seed == int(run["seed"])
                assert cfg.experiment_name == SWEEP and cfg.lm.name == "gemma3-270m"   # the default offline operator
                validate(cfg, needs_lm=False)
                rounds, prompts, samples = effective_search(cfg)
                budgets.add(rounds * prompts * samples)
                settings.add((cfg.task.train_steps, cfg.task.name, cfg.sandbox.timeout_s, cfg.sandbox.cpu_s))
                if run["ablation"] == "naive_fewshot":
                    assert rounds == 1
            # every variant: the same budget, training and caps (CPU seconds decide; the wall clock is generous)
            assert budgets == {160} and settings == {(2000, "mnist1d", 900, 130)}
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.slow
def test_rerunning_the_sweep_command_resumes_it_and_repeats_no_child(tiny_lm_dir, tmp_path):
    """The preset itself (tiny LM, tiny search, 2 of its runs) run twice: the second command finds
    every job finished and adds no child, no evaluation and no round."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "evo.run", "--config-dir", "sweeps", "--config-name", SWEEP, "lm=hf",
           f"lm.model={tiny_lm_dir}", *TINY, f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
           "seed=0", "ablation=none,naive_fewshot",
           "crossmut.resample_copies=0"]   # no copy resampling (the demo may turn it on): both runs draw exactly the budget
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = {0: "none", 1: "naive_fewshot"}   # the sweep's job order: seed-major, ablations as listed
    sql_children = "SELECT id, round, status, code_hash FROM children ORDER BY id"
    sql_evaluated = "SELECT COUNT(*) AS n FROM events WHERE kind = 'evaluated'"
    before = {}
    for num, ablation in jobs.items():
        overrides = (sweep / str(num) / ".hydra" / "overrides.yaml").read_text()
        assert f"ablation={ablation}" in overrides
        before[num] = (rows(sweep / str(num), sql_children), rows(sweep / str(num), sql_evaluated)[0]["n"],
                       rows(sweep / str(num), "SELECT round, finished_at FROM rounds ORDER BY round"))
        assert before[num][0] and all(r["finished_at"] for r in before[num][2])
    assert len(before[0][2]) == 2 and len(before[1][2]) == 1   # naive few-shot: one round of the same budget
    assert len([c for c in before[0][0] if c["round"] >= 0]) == len([c for c in before[1][0] if c["round"] >= 0]) == 12
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    for num in jobs:
        after = (rows(sweep / str(num), sql_children), rows(sweep / str(num), sql_evaluated)[0]["n"],
                 rows(sweep / str(num), "SELECT round, finished_at FROM rounds ORDER BY round"))
        assert after == before[num]
        assert rows(sweep / str(num), "SELECT COUNT(*) AS n FROM events WHERE kind = 'run_started'")[0]["n"] == 2

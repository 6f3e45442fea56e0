"""Copies of known programs are resampled within crossmut.resample_copies extra batches, and the
operator's constraint is on every child's row: a real search with the tiny LM, constrained by the
MNIST-1D grammar, at a temperature where it mostly copies its parents."""

from __future__ import annotations

import json
import subprocess

import pytest

from runs import REPO, rows, search_cmd


@pytest.mark.slow
def test_copies_are_resampled_until_the_budget_and_no_further(tiny_lm_dir, tmp_path):
    run_dir = tmp_path / "run"
    settings = ("lm.max_new_tokens=120", "search.rounds=1", "search.prompts_per_round=1",
                "crossmut.samples_per_prompt=6", "crossmut.temperatures=[0.1]", "crossmut.resample_copies=2",
                "crossmut.constrain=grammar", "task.train_steps=20", "task.eval_every=10", "progress=false")
    r = subprocess.run(search_cmd(run_dir, tiny_lm_dir, tmp_path / "cache", settings=settings),
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    children = rows(run_dir, "SELECT attempt, status, repairs FROM children WHERE round = 0 ORDER BY id")
    by_attempt = {}
    for c in children:
        by_attempt.setdefault(c["attempt"], []).append(c)
    assert sorted(by_attempt) == [0, 1, 2]            # two extra batches: the budget, all of it used
    assert len(by_attempt[0]) == 6
    for a in (1, 2):                                   # each extra batch replaces exactly the last one's copies
        assert len(by_attempt[a]) == sum(c["status"] == "duplicate" for c in by_attempt[a - 1])
    assert any(c["status"] == "duplicate" for c in by_attempt[2])   # copies were left: the budget stopped it
    assert all(json.loads(c["repairs"])[0] == "constrained:grammar" for c in children)

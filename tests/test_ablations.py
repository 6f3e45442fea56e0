"""The paper's ablations: each option composes (a preset of overrides, tests/test_ablation_presets.py), and
changes what the search does (real Hydra multirun, tiny real LM, real training). Impossible combinations fail
before any compute."""

from __future__ import annotations

import json
import random

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from evo.archive import Child
from evo.config import ConfigError, effective_search, validate
from evo.search.selection import PaperTopK, RandomParents
from runs import ABLATIONS, rows


def test_naive_fewshot_keeps_the_sample_budget(cfg_factory):
    full, naive = cfg_factory(), cfg_factory("ablation=naive_fewshot")
    rounds, m, n = effective_search(full)
    assert (rounds, m, n) == (10, 10, 16)
    assert effective_search(naive) == (1, m, n * rounds)


def _history(size: int) -> list[Child]:
    return [Child(id=i, round=0, code="", code_hash=str(i), status="ok", num_params=1000 + i, val_accuracy=0.9,
                  fitness=-float(i)) for i in range(size)]


def test_random_parents_picks_parents_gettop_would_not(cfg_factory):
    gettop = instantiate(cfg_factory("selection.survivors=4").selection)
    rand = instantiate(cfg_factory("ablation=random_parents", "selection.survivors=4").selection)
    assert isinstance(gettop, PaperTopK) and isinstance(rand, RandomParents) and rand.survivors == 4
    history = _history(20)
    top = [c.id for c in gettop(history, set(), random.Random(0))]
    assert top == [0, 1, 2, 3]
    draws = [sorted(c.id for c in rand(history, set(), random.Random(seed))) for seed in range(10)]
    assert all(len(d) == 4 for d in draws)
    assert sum(d != top for d in draws) >= 9            # almost never GETTOP's choice
    assert len({c for d in draws for c in d}) > 10      # and spread over the history


def test_impossible_combinations_fail_before_compute(cfg_factory):
    with pytest.raises(ConfigError, match="ablation=no_prompt_tuning"):
        validate(cfg_factory("lm=openai", "lm.model=some-model"))
    validate(cfg_factory("lm=openai", "lm.model=some-model", "ablation=no_prompt_tuning"))
    with pytest.raises(ConfigError, match="ablation.random_parents.*pareto|pareto.*random"):
        validate(cfg_factory("ablation=random_parents", "selection=pareto"))
    # the flags of old (ablation.random_parents=true ...) are gone: an ablation is one preset, one choice
    with pytest.raises(ConfigCompositionException, match="ablation.random_parents"):
        cfg_factory("ablation=naive_fewshot", "ablation.random_parents=true")


@pytest.mark.slow
def test_multirun_of_the_four_ablations(ablation_sweep):
    """`python -m evo.run --multirun ablation=none,no_prompt_tuning,random_parents,naive_fewshot` (runs.TUNABLE),
    run once per session (conftest.py)."""
    runs = ablation_sweep.runs
    assert set(runs) == set(ABLATIONS)

    def rounds(name):
        return rows(runs[name], "SELECT * FROM rounds ORDER BY round")

    def sampled(name, where="1"):
        return rows(runs[name], f"SELECT * FROM children WHERE round >= 0 AND {where} ORDER BY id")

    # none: TRAIN between the rounds, round 1 samples with the tuned prompt.
    assert [t["round"] for t in rows(runs["none"], "SELECT round FROM tuning")] == [0]
    assert {c["soft_prompt_round"] for c in sampled("none", "round = 1")} == {0}
    # no_prompt_tuning: the same round 0 (same seed, same parents), then the base LM writes another round 1.
    assert rows(runs["no_prompt_tuning"], "SELECT * FROM tuning") == []
    assert {c["soft_prompt_round"] for c in sampled("no_prompt_tuning")} == {None}
    key = lambda c: (c["prompt_id"], c["sample_index"], c["attempt"], c["raw_completion"])  # noqa: E731
    assert [key(c) for c in sampled("none", "round = 0")] == [key(c) for c in sampled("no_prompt_tuning", "round = 0")]
    assert rounds("none")[1]["parents"] == rounds("no_prompt_tuning")[1]["parents"]
    assert [c["raw_completion"] for c in sampled("none", "round = 1")] != \
        [c["raw_completion"] for c in sampled("no_prompt_tuning", "round = 1")]
    # random_parents: round 1's parents come from the random rule; tuning is kept.
    assert [r["selection"] for r in rounds("random_parents")] == ["seeds", "random"]
    assert [r["selection"] for r in rounds("none")] == ["seeds", "paper_topk"]
    assert [t["round"] for t in rows(runs["random_parents"], "SELECT round FROM tuning")] == [0]
    # naive_fewshot: one round of prompts built from the seeds, n x T samples each (same budget).
    assert [r["round"] for r in rounds("naive_fewshot")] == [0]
    seeds = {c["id"] for c in rows(runs["naive_fewshot"], "SELECT id FROM children WHERE round = -1")}
    prompts = rows(runs["naive_fewshot"], "SELECT * FROM prompts")
    assert len(prompts) == 2 and all(len(set(json.loads(p["parents"])) & seeds) == 2 for p in prompts)   # 2 seeds each
    first_batches = rows(runs["naive_fewshot"], "SELECT prompt_id, COUNT(*) AS n FROM children "
                                                "WHERE round = 0 AND attempt = 0 GROUP BY prompt_id")
    assert [b["n"] for b in first_batches] == [4 * 2, 4 * 2]
    assert rows(runs["naive_fewshot"], "SELECT * FROM tuning") == []

"""Ablations are Hydra presets (conf/ablation/*.yaml): each sets exactly the keys it means, and a run
folder written when they were flags (commit 6f02ef3) still resumes under the presets (real Hydra
composition, real SQLite archives made by the old code)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from evo.archive import Archive
from evo.config import ConfigError, effective_search, validate
from evo.run import _check_resume

OLD_RUNS = Path(__file__).resolve().parent / "data" / "ablation_flags_6f02ef3"


def _flat(cfg) -> dict:
    """Every leaf of the resolved config as ``dotted.key: value``."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node
    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


@pytest.mark.parametrize("name, changed", [
    ("none", {}),
    ("no_prompt_tuning", {"ablation.name": "no_prompt_tuning", "soft_prompt.enabled": False}),
    ("random_parents", {"ablation.name": "random_parents", "ablation.selection": "random",
                        "selection._target_": "evo.search.selection.RandomParents"}),
    ("naive_fewshot", {"ablation.name": "naive_fewshot", "soft_prompt.enabled": False,
                       "search.schedule.rounds": 1, "search.schedule.samples_per_prompt": 160}),
])
def test_each_ablation_preset_sets_only_the_keys_it_means(cfg_factory, name, changed):
    base, cfg = _flat(cfg_factory()), _flat(cfg_factory(f"ablation={name}"))
    assert set(base) == set(cfg)
    assert {k: v for k, v in cfg.items() if base[k] != v} == changed


def test_random_parents_is_selection_random_under_its_name(cfg_factory):
    # one route to the rule: the preset overrides the selection group (user values still apply on top)
    ablation = cfg_factory("ablation=random_parents", "selection.survivors=4")
    assert ablation.selection == cfg_factory("selection=random", "selection.survivors=4").selection
    assert ablation.selection.survivors == 4


@pytest.mark.parametrize("overrides, schedule", [
    ((), (1, 10, 160)),
    (("search.rounds=5", "crossmut.samples_per_prompt=8"), (1, 10, 40)),        # set after the preset
    (("experiment=demo",), (1, 2, 4 * 8)),                                        # a preset after it
])
def test_naive_fewshot_schedule_follows_t_and_n_wherever_they_are_set(cfg_factory, overrides, schedule):
    cfg = cfg_factory("ablation=naive_fewshot", *overrides)
    full = cfg_factory(*overrides)
    assert effective_search(cfg) == schedule
    rounds, m, n = effective_search(full)
    assert rounds * m * n == schedule[0] * schedule[1] * schedule[2]   # the full search's sample budget


def test_an_ablation_cannot_be_combined_with_another_selection_rule(cfg_factory):
    for rule in ("pareto", "paper_topk", "tournament"):
        with pytest.raises(ConfigError, match=f"ablation='random_parents'.*selection={rule}"):
            validate(cfg_factory("ablation=random_parents", f"selection={rule}"), needs_lm=False)


def _resume_cfg(cfg_factory, archive_path: Path, *changes):
    """The config of the command that made the old run (its stored overrides), plus ``changes``."""
    archive = Archive(archive_path)
    try:
        overrides = json.loads(archive.get_meta("overrides"))
    finally:
        archive.close()
    return cfg_factory(*overrides, *changes)


OTHER = {"none": "no_prompt_tuning", "no_prompt_tuning": "none", "random_parents": "none", "naive_fewshot": "none"}


@pytest.mark.parametrize("name", ["none", "no_prompt_tuning", "random_parents", "naive_fewshot"])
def test_a_run_made_when_ablations_were_flags_resumes_and_a_change_is_still_refused(cfg_factory, tmp_path, name):
    """tests/data/ablation_flags_6f02ef3/<name>.sqlite: a finished tiny run made by the code of commit
    6f02ef3, when ablations were flags (tests/data/ablation_flags_6f02ef3/README.md says how)."""
    path = tmp_path / "archive.sqlite"
    shutil.copy(OLD_RUNS / f"{name}.sqlite", path)
    archive = Archive(path)
    try:
        stored = archive.get_meta("fingerprint")
        assert set(json.loads(stored)["ablation"]) == {"name", "prompt_tuning", "random_parents", "naive_fewshot"}
        assert _check_resume(archive, _resume_cfg(cfg_factory, path)) is True
        # more rounds extend a search; in naive few-shot T sets the samples per prompt of its one round
        if name == "naive_fewshot":
            with pytest.raises(ConfigError, match="different settings for: search"):
                _check_resume(archive, _resume_cfg(cfg_factory, path, "search.rounds=3"))
        else:
            assert _check_resume(archive, _resume_cfg(cfg_factory, path, "search.rounds=3")) is True
        with pytest.raises(ConfigError, match="different settings for: .*crossmut"):
            _check_resume(archive, _resume_cfg(cfg_factory, path, "crossmut.samples_per_prompt=3"))
        with pytest.raises(ConfigError, match="different settings for: ablation"):
            _check_resume(archive, _resume_cfg(cfg_factory, path, f"ablation={OTHER[name]}"))
        assert archive.get_meta("fingerprint") == stored   # a resume compares, it never rewrites the old form
    finally:
        archive.close()

"""Real Hydra composition of every group option, and the checks that run before any compute."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from evo.config import ConfigError, validate
from evo.run import CONF_DIR

REPO = Path(__file__).resolve().parents[1]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_paper_defaults(cfg_factory):
    cfg = cfg_factory()
    assert (cfg.search.rounds, cfg.search.prompts_per_round, cfg.crossmut.samples_per_prompt) == (10, 10, 16)
    assert (cfg.crossmut.parents_per_prompt, cfg.selection.survivors, cfg.search.alpha) == (2, 10, 0.5)
    assert list(cfg.crossmut.temperatures) == [0.2, 0.6, 0.8, 1.0]
    assert (cfg.crossmut.size_factor, cfg.crossmut.accuracy_factor) == (0.9, 1.02)
    assert (cfg.task.learning_rate, cfg.task.batch_size, cfg.task.train_steps, cfg.task.val_size) == (0.01, 128, 8000, 500)
    validate(cfg, needs_lm=False)


@pytest.mark.parametrize("group", ["task", "selection", "ablation", "experiment"])
def test_every_option_composes_and_instantiates(cfg_factory, group):
    for option in options(group):
        cfg = cfg_factory(f"{group}={option}")
        validate(cfg, needs_lm=False)
        if group in ("task", "selection"):
            obj = instantiate(cfg[group])
            assert obj is not None


def test_lm_options_compose(cfg_factory):
    cfg = cfg_factory("lm=gemma270m")
    assert cfg.lm.model == "packaged:gemma3-270m"
    cfg = cfg_factory("lm=hf", "lm.model=/nonexistent/model.gguf")
    with pytest.raises(ConfigError, match="lm.model=/nonexistent/model.gguf: no such file"):
        validate(cfg)


def test_demo_preset_is_small(cfg_factory):
    cfg = cfg_factory("experiment=demo")
    assert cfg.search.rounds * cfg.search.prompts_per_round * cfg.crossmut.samples_per_prompt <= 64
    assert cfg.task.train_steps < 8000 and cfg.experiment_name == "demo"


@pytest.mark.parametrize("override, key", [
    ("search.alpha=1.5", "search.alpha"),
    ("search.alpha=0", "search.alpha"),
    ("search.rounds=-1", "search.rounds"),
    ("crossmut.samples_per_prompt=0", "crossmut.samples_per_prompt"),
    ("crossmut.temperatures=[0.5,-1]", "crossmut.temperatures"),
    ("crossmut.parent_order=best", "crossmut.parent_order"),
    ("sandbox.isolation=docker", "sandbox.isolation"),
    ("selection.survivors=0", "selection.survivors"),
])
def test_impossible_values_name_the_key_and_a_fix(cfg_factory, override, key):
    cfg = cfg_factory(override)
    with pytest.raises(ConfigError) as err:
        validate(cfg, needs_lm=False)
    assert key in str(err.value) and "Fix:" in str(err.value)


def test_wrong_type_fails_at_composition(cfg_factory):
    with pytest.raises(Exception, match="search.rounds"):
        cfg_factory("search.rounds=ten")


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_cli_unknown_group_option_lists_the_choices(tmp_path):
    r = _cli("evo.run", "lm=nope", f"hydra.run.dir={tmp_path}")
    assert r.returncode != 0
    assert "lm/nope" in r.stderr and "gemma270m" in r.stderr  # Hydra lists the available options


def test_cli_bad_value_fails_before_compute(tmp_path):
    r = _cli("evo.run", "search.alpha=2", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2
    assert "search.alpha=2" in r.stderr and "Fix:" in r.stderr
    assert not (tmp_path / "archive.sqlite").exists()  # nothing was started


def test_cli_missing_model_file_is_a_clear_error(tmp_path):
    r = _cli("evo.run", "lm=hf", f"lm.model={tmp_path}/missing.gguf", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode == 2 and "no such file" in r.stderr and "Fix:" in r.stderr


def test_cli_help_lists_groups():
    r = _cli("evo.run", "--help")
    assert r.returncode == 0
    for group in ("task", "lm", "selection", "ablation", "experiment"):
        assert f"{group}:" in r.stdout

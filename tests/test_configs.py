"""Real Hydra composition of every group option, and the checks that run before any compute."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate
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


@pytest.mark.parametrize("group", ["task", "selection", "ablation", "experiment", "evaluator", "logger", "surrogate"])
def test_every_option_composes_and_instantiates(cfg_factory, group):
    for option in options(group):
        cfg = cfg_factory(f"{group}={option}")
        validate(cfg, needs_lm=False)
        if group in ("task", "selection", "evaluator", "logger", "surrogate"):
            obj = instantiate(cfg[group])
            assert type(obj) is get_class(cfg[group]._target_), option
            # The option's values reached the object: each scalar setting it keeps under the same name. A key
            # whose value is None means "decide at run time" (evaluator.workers: the free cores), so it is left out.
            node = OmegaConf.to_container(cfg[group], resolve=True)
            for key, value in node.items():
                if not key.startswith("_") and hasattr(obj, key) and not isinstance(value, (dict, list)) \
                        and value is not None:
                    assert getattr(obj, key) == value, (option, key)


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
    assert cfg.sandbox.timeout_s <= 120   # one slow child must not hold a short demo up for 15 minutes


@pytest.mark.parametrize("override, key", [
    ("search.alpha=1.5", "search.alpha"),
    ("search.alpha=0", "search.alpha"),
    ("search.rounds=-1", "search.rounds"),
    ("crossmut.samples_per_prompt=0", "crossmut.samples_per_prompt"),
    ("crossmut.temperatures=[0.5,-1]", "crossmut.temperatures"),
    ("crossmut.parent_order=best", "crossmut.parent_order"),
    ("sandbox.isolation=docker", "sandbox.isolation"),
    ("selection.survivors=0", "selection.survivors"),
    ("evaluator.workers=0", "evaluator.workers"),
    ("+evaluator=slurm evaluator.gpus_per_child=-1", "evaluator.gpus_per_child"),
    ("logger=wandb logger.mode=cloud", "logger.mode"),
    ("surrogate=cole surrogate.target=accuracy", "surrogate.target"),
    ("surrogate=cole surrogate.train_fraction=0.95", "surrogate.train_fraction"),
])
def test_impossible_values_name_the_key_and_a_fix(cfg_factory, override, key):
    cfg = cfg_factory(*override.replace("+evaluator", "evaluator").split())
    with pytest.raises(Exception) as err:   # ConfigError; the logger's comes wrapped by instantiate
        validate(cfg, needs_lm=False)
        instantiate(cfg.logger)
    assert key in str(err.value) and "Fix:" in str(err.value)


def test_local_evaluator_takes_the_cores_the_lm_leaves(cfg_factory):
    import os
    cores = len(os.sched_getaffinity(0))
    assert instantiate(cfg_factory().evaluator).workers == max(1, cores - 1)      # lm.threads=1 is reserved
    assert instantiate(cfg_factory("lm.threads=8").evaluator).workers == 1        # never fewer than one
    assert instantiate(cfg_factory("evaluator.workers=3").evaluator).workers == 3


@pytest.mark.parametrize("sweep, jobs", [("mnist1d_ablations", 12), ("clrs_ablations", 36)])
def test_sweep_files_compose_and_every_run_validates(sweep, jobs):
    """Each run of a ready sweep (sweeps/*.yaml) is a valid configuration, composed as Hydra composes it."""
    from itertools import product

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from evo.config import register_configs
    register_configs()
    GlobalHydra.instance().clear()
    searchpath = f"hydra.searchpath=[file://{CONF_DIR}]"   # evo.run's own conf/, as with --config-dir sweeps
    with initialize_config_dir(config_dir=str(REPO / "sweeps"), version_base=None):
        full = compose(config_name=sweep, return_hydra_config=True, overrides=[searchpath])
        params = {k: str(v).split(",") for k, v in full.hydra.sweeper.params.items()}
        assert str(full.hydra.mode) == "RunMode.MULTIRUN" and full.hydra.runtime.choices["hydra/launcher"] == "slurm_gpu"
        runs = [dict(zip(params, values)) for values in product(*params.values())]
        assert len(runs) == jobs
        for run in runs:
            cfg = compose(config_name=sweep, overrides=[f"{k}={v}" for k, v in run.items()] + ["run_dir=x", searchpath])
            assert cfg.ablation.name == run["ablation"] and cfg.seed == int(run["seed"])
            assert cfg.experiment_name == sweep
            if sweep.startswith("clrs"):
                assert cfg.task.algorithm == run["task.algorithm"] and cfg.evaluator._target_.endswith("SlurmEvaluator")
            validate(cfg, needs_lm=False)
    GlobalHydra.instance().clear()


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

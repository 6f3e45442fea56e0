"""Every group option is typed by its class's constructor: a wrong type names the key, the type and a
fix before any compute (real Hydra composition, the real classes behind each _target_)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evo.config import ConfigError, validate
from runs import REPO


@pytest.mark.parametrize("overrides, message", [
    (["task.train_steps=ten"],
     "task.train_steps='ten'. MNIST1DTask (the task option) takes train_steps as an integer. "
     "Fix: pass an integer, e.g. task.train_steps=8000 (the default)."),
    (["task=clrs", "task.train_lengths=[4,x]"], "task.train_lengths=[4, 'x']. CLRSTask (the task option) takes "
                                                "train_lengths as a list ([...]) of integers"),
    (["task=clrs", "task.use_ln=maybe"], "takes use_ln as true or false"),
    (["lm.max_new_tokens=many"], "lm.max_new_tokens='many'. HFCausalLM (the lm option) takes max_new_tokens as an integer"),
    (["selection=tournament", "selection.size=big"], "selection.size='big'. Tournament (the selection option)"),
    (["evaluator.workers=two"], "evaluator.workers='two'. LocalEvaluator (the evaluator option) takes workers as an "
                                "integer or null. Fix: pass an integer or null, e.g. evaluator.workers=null"),
    (["surrogate=cole", "surrogate.train_fraction=half"], "surrogate.train_fraction='half'. ColeSurrogate"),
    (["logger=wandb", "logger.tags=3"], "logger.tags=3. WandbLogger (the logger option) takes tags as a list"),
])
def test_a_wrong_type_in_a_group_option_names_the_key_and_a_fix(cfg_factory, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(cfg_factory(*overrides), needs_lm=False)
    assert message in str(err.value)


def test_an_unknown_train_loop_names_the_choices(cfg_factory):
    with pytest.raises(ConfigError) as err:
        validate(cfg_factory("task.train_loop=unrolled"), needs_lm=False)
    assert "task.train_loop='unrolled'" in str(err.value) and "auto, loop, scan" in str(err.value)


def test_values_that_convert_and_interpolations_pass(cfg_factory):
    # an int where the class takes a float, a null where it takes Optional, the defaults' interpolations
    validate(cfg_factory("task.learning_rate=1", "evaluator.workers=null", "surrogate=cole"), needs_lm=False)


def test_cli_wrong_type_is_a_config_error_not_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "evo.run", "task.train_steps=ten", f"hydra.run.dir={tmp_path / 'run'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "error: Invalid configuration: task.train_steps='ten'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "archive.sqlite").exists()

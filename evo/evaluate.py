"""``python -m evo.evaluate child_file=PATH``: one program through exactly the search's FILTERANDEVAL path.

    python -m evo.evaluate child_file=seeds/mnist1d/cnn.py
    python -m evo.evaluate child_file=my_model.py task.train_steps=500 sandbox.timeout_s=60

The last line of stdout is one JSON object: status (ok, or the failure kind), reason, num_params,
val_accuracy, test_accuracy, fitness and timings. The exit code is 0 whenever the evaluation itself
completed, whatever the child did; 2 for a bad config or an unreadable file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evo.config import ConfigError, validate
from evo.run import CONF_DIR, exit_on_config_error, start_one_off
from evo.sandbox.runner import SandboxLimits
from evo.search.evaluators import cpu_slots
from evo.search.filter_eval import FilterAndEval
from evo.search.program import code_hash


def evaluate_file(cfg: DictConfig) -> dict:
    validate(cfg, needs_lm=False)
    if not cfg.child_file:
        raise ConfigError("child_file is not set. Fix: python -m evo.evaluate child_file=path/to/program.py")
    path = Path(cfg.child_file).expanduser()
    try:
        code = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"child_file={cfg.child_file!r} cannot be read ({exc.__class__.__name__}: {exc}). "
                          "Fix: pass the path of a readable UTF-8 Python file.") from None
    task = instantiate(cfg.task)
    limits = SandboxLimits(**OmegaConf.to_container(cfg.sandbox, resolve=True))
    evaluate = FilterAndEval(task, task.prepare(Path(os.path.expanduser(cfg.cache_dir))), limits, cfg.search.alpha)
    result = evaluate(code, cpus=cpu_slots(1, cfg.evaluator.get("pin_cpus", True))[0]).as_dict()
    result.pop("log_tail")
    return {"child_file": str(path), "code_hash": code_hash(code), **result}


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    print(json.dumps(exit_on_config_error(lambda: evaluate_file(cfg))), flush=True)


if __name__ == "__main__":
    start_one_off(main)   # one program needs no run folder of its own: Hydra's files stay out of outputs/

"""Typed configuration: schemas for the search's own nodes, and checks that run before any compute.

The YAML files in ``conf/`` hold the values (with a comment each); these dataclasses give them types,
so ``search.rounds=ten`` fails at composition naming the key. Group nodes chosen by the user
(``task``, ``lm``, ``selection``) are instantiated with ``_target_``. ``validate`` checks ranges and
combinations that types cannot express, and says how to fix each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from evo.archive import runs
from evo.errors import ConfigError, fail as _fail   # ConfigError: evo.config's errors too (evo.run catches it)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass
class ScheduleConfig:
    """What the loop runs, computed in conf/config.yaml from T and n (interpolations); an ablation
    preset may compute it otherwise (conf/ablation/naive_fewshot.yaml: one round of T x n)."""
    rounds: int = MISSING
    samples_per_prompt: int = MISSING


@dataclass
class SearchConfig:
    rounds: int = 10                 # T
    prompts_per_round: int = 10      # m
    alpha: float = 0.5               # keep a child only if its validation error < alpha
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class CrossMutConfig:
    parents_per_prompt: int = 2
    samples_per_prompt: int = 16
    temperatures: List[float] = field(default_factory=lambda: [0.2, 0.6, 0.8, 1.0])
    temperature_draw: str = "iid"
    parents_with_replacement: bool = True
    parent_order: str = "drawn"
    size_factor: float = 0.9
    accuracy_factor: float = 1.02
    resample_copies: int = 0
    max_body_lines: int = 16
    max_repeats: int = 3
    max_dropped_lines: int = 2
    banned_words: List[str] = field(default_factory=list)
    constrain: str = "none"


@dataclass
class SandboxConfig:
    timeout_s: float = 900.0
    memory_mb: int = 4096
    cpu_s: Optional[float] = None
    max_file_mb: int = 64
    scratch_mb: Optional[int] = 1024
    threads: int = 1
    isolation: str = "auto"


@dataclass
class SoftPromptConfig:
    """evo.search.tuning.PromptTuningConfig's fields (the TRAIN step between rounds)."""
    enabled: bool = True
    num_virtual_tokens: int = 16
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 0.1
    max_length: int = 1024
    init: str = "vocab"
    micro_batch_size: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0


@dataclass
class AblationConfig:
    """An ablation is a preset of overrides (conf/ablation/*.yaml); this node only names it, and says
    which selection rule it is when it is one (so that another rule is refused, not silently mislabelled)."""
    name: str = "none"
    selection: Optional[str] = None   # the `name` of the selection class the ablation means, e.g. random


@dataclass
class FinalEvalConfig:
    """``python -m evo.final_eval``: the final CLRS-30 evaluation (documented in conf/config.yaml)."""
    algorithms: Any = "all"
    train_seeds: int = 3
    baseline: Optional[str] = "seeds/clrs/v1.py"
    out_dir: Optional[str] = None
    retry_failed: bool = False


@dataclass
class EvoConfig:
    task: Any = MISSING
    lm: Any = MISSING
    selection: Any = MISSING
    ablation: AblationConfig = field(default_factory=AblationConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    crossmut: CrossMutConfig = field(default_factory=CrossMutConfig)
    soft_prompt: SoftPromptConfig = field(default_factory=SoftPromptConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    evaluator: Any = MISSING          # group: local | slurm (evo.search.evaluators)
    logger: Any = MISSING             # group: none | wandb (evo.tracking)
    surrogate: Any = MISSING          # group: none | cole (evo.search.surrogate)
    seed: int = 0
    run_dir: str = MISSING
    cache_dir: str = MISSING
    progress: bool = True
    child_file: Optional[str] = None
    experiment_name: str = "default"
    final_eval: FinalEvalConfig = field(default_factory=FinalEvalConfig)


def register_configs() -> None:
    """Register the schema that ``conf/config.yaml`` extends (called by the entry points, not on import)."""
    ConfigStore.instance().store(name="evo_schema", node=EvoConfig)
    register_resolvers()


def register_resolvers() -> None:
    """``${evo.mul:a,b}``: Hydra has no arithmetic, and naive few-shot's samples per prompt are T x n of
    whatever T and n the user set (conf/ablation/naive_fewshot.yaml). Idempotent."""
    OmegaConf.register_new_resolver("evo.mul", lambda a, b: int(a) * int(b), replace=True)


register_resolvers()   # on import too: code that only loads a saved config (.hydra/config.yaml) resolves it




def validate(cfg: DictConfig, *, needs_lm: bool = True) -> None:
    """Checks that run before anything is loaded or trained."""
    s, c, b = cfg.search, cfg.crossmut, cfg.sandbox
    for key, value in (("search.rounds", s.rounds), ("search.prompts_per_round", s.prompts_per_round),
                       ("crossmut.parents_per_prompt", c.parents_per_prompt),
                       ("crossmut.samples_per_prompt", c.samples_per_prompt),
                       ("sandbox.threads", b.threads),
                       # a tabular task (task=nas_bench_graph) trains nothing and has no training keys
                       ("task.train_steps", cfg.task.get("train_steps", 1)), ("task.batch_size", cfg.task.get("batch_size", 1)),
                       ("selection.survivors", cfg.selection.survivors)):
        if value < 1:
            _fail(key, value, "It counts something and must be at least 1.", f"pass {key}=1 or more.")
    if c.resample_copies < 0:
        _fail("crossmut.resample_copies", c.resample_copies, "It is a number of extra batches.",
              "pass crossmut.resample_copies=0 (the paper) or more.")
    if not 0 < s.alpha <= 1:
        _fail("search.alpha", s.alpha, "alpha is the validation-error threshold of FILTERANDEVAL, in (0, 1].",
              "pass search.alpha=0.5 (the paper's value).")
    if not c.temperatures or any(t <= 0 for t in c.temperatures):
        _fail("crossmut.temperatures", list(c.temperatures), "Sampling temperatures must be positive.",
              "pass crossmut.temperatures=[0.2,0.6,0.8,1.0] (the paper's set).")
    choices = {"crossmut.temperature_draw": (c.temperature_draw, ("iid", "cycle")),
               "crossmut.parent_order": (c.parent_order, ("drawn", "fittest_last", "fittest_first")),
               "crossmut.constrain": (c.constrain, ("none", "grammar")),
               "sandbox.isolation": (b.isolation, ("auto", "bwrap", "none"))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            _fail(key, value, f"Allowed values: {', '.join(allowed)}.", f"pass {key}={allowed[0]}.")
    if b.timeout_s <= 0 or b.memory_mb < 256:
        _fail("sandbox.timeout_s/memory_mb", (b.timeout_s, b.memory_mb),
              "A child needs a positive timeout and at least 256 MB.", "pass sandbox.timeout_s=900 sandbox.memory_mb=4096.")
    default = f"the default in conf/task/{cfg.task.get('name', '<task>')}.yaml"
    if cfg.task.get("eval_every", 1) < 1:
        _fail("task.eval_every", cfg.task.eval_every, "Validation runs every eval_every steps.",
              f"pass a positive task.eval_every ({default}).")
    if not 0 < cfg.task.get("learning_rate", 1e-3) < 10:
        _fail("task.learning_rate", cfg.task.learning_rate, "The AdamW learning rate must be positive.",
              f"pass a positive task.learning_rate ({default}).")
    _check_task(cfg.task)
    _check_evaluator(cfg.evaluator)
    for node in ("logger", "surrogate"):   # their constructors check their own options (nothing is loaded)
        instantiate_checked(cfg[node])
    _check_surrogate_prior(cfg)
    from evo.search.tuning import PromptTuningConfig   # its own checks are the soft_prompt node's checks
    try:
        PromptTuningConfig(**OmegaConf.to_container(cfg.soft_prompt))
    except ValueError as exc:
        raise ConfigError(f"Invalid configuration: {str(exc).replace('PromptTuningConfig.', 'soft_prompt.')} "
                          "Fix: use a value as documented in conf/config.yaml (soft_prompt: the paper's "
                          "16 tokens, 5 epochs, batch 16, lr 0.1).") from None
    lm_class = _class_of("lm", cfg.lm)
    _validate_ablation(cfg, lm_class)
    check = getattr(lm_class, "check_config", None)   # a backend's own fast check, before any compute
    if c.constrain == "grammar" and hasattr(cfg.lm, "get") and cfg.lm.get("decoder") == "generate":
        _fail("crossmut.constrain", c.constrain, "lm.decoder=generate (transformers' generate) cannot enforce a grammar.",
              "pass lm.decoder=cached (evo's decode loop), or crossmut.constrain=none.")
    if needs_lm and check is not None:
        from evo.lm.base import LMUnavailableError
        try:
            check(cfg.lm)
        except LMUnavailableError as exc:
            raise ConfigError(str(exc)) from None


def _check_surrogate_prior(cfg: DictConfig) -> None:
    """A prior's scores must come from the same training protocol as this run's (train steps, data...)."""
    import sqlite3
    here = runs.protocol({"task": OmegaConf.to_container(cfg.task, resolve=True)})
    for path in cfg.surrogate.get("prior") or ():
        try:
            theirs = runs.source_protocol(path)
        except (runs.RunsError, sqlite3.Error) as exc:
            _fail("surrogate.prior", path, f"It cannot be read as a run, an archive or a dataset: {exc}.",
                  "pass run folders, archive.sqlite files or dataset files (python -m evo.dataset).")
        keys = runs.protocol_difference(here, theirs)
        if keys:
            _fail("surrogate.prior", path,
                  "Its children were trained under other task settings than this run's ("
                  + ", ".join(f"{k}: {theirs.get(k)!r} there, {here.get(k)!r} here" for k in keys)
                  + "), so their scores do not predict this run's.",
                  "pass priors trained with the same task settings, or the same task overrides as they had.")


def _check_task(task_cfg: DictConfig) -> None:
    """The task class's own checks of its node (``check_config``), before any data is generated."""
    from hydra.utils import get_class
    target = task_cfg.get("_target_")
    try:
        cls = get_class(target)
    except Exception as exc:
        raise ConfigError(f"Invalid configuration: task._target_={target!r} cannot be imported ({exc}). "
                          "Fix: choose an option of the task group (task=mnist1d, task=clrs).") from None
    check = getattr(cls, "check_config", None)
    if check is not None:
        check(task_cfg)


def instantiate_checked(node: DictConfig):
    """``hydra.utils.instantiate``, but a ConfigError raised by the constructor comes out as itself
    (Hydra wraps it), so the entry points print the key and the fix instead of a traceback."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    try:
        return instantiate(node)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise


def _check_evaluator(ev: DictConfig) -> None:
    """The evaluator group's values, and for SLURM that submitit and a cluster are there."""
    target = str(ev.get("_target_", ""))
    if target.endswith(".LocalEvaluator"):
        if ev.workers is not None and ev.workers < 1:
            _fail("evaluator.workers", ev.workers, "It is the number of children evaluated at once.",
                  "pass evaluator.workers=1 or more, or null (the cores less the LM's threads).")
        from evo.search.devices import plan_devices, visible_gpus   # the GPU keys (evo/search/devices.py says what they mean)
        device = ev.get("device", "auto")
        try:
            plan_devices(visible_gpus() if device != "cpu" else [], device=device, workers=ev.workers,
                         workers_per_gpu=ev.get("workers_per_gpu", 1), memory_fraction=ev.get("gpu_memory_fraction"),
                         lm_device=ev.get("lm_device"), lm_memory_fraction=ev.get("lm_memory_fraction", 0.25))
        except ValueError as exc:
            raise ConfigError(f"Invalid configuration: {exc}") from None
    elif target.endswith(".SlurmEvaluator"):
        for key in ("gpus_per_child", "cpus_per_child", "array_parallelism", "max_resubmits"):
            low = 1 if key in ("cpus_per_child", "array_parallelism") else 0
            if ev[key] < low:
                _fail(f"evaluator.{key}", ev[key], f"It must be at least {low}.", f"pass evaluator.{key}={max(low, 1)}.")
        try:
            import submitit  # noqa: F401
        except ImportError:
            _fail("evaluator", "slurm", "The SLURM evaluator submits children with submitit, which is not installed.",
                  "pip install 'evo[cluster]' (submitit, hydra-submitit-launcher), or pass evaluator=local.")
        import shutil
        if shutil.which("sbatch") is None:
            _fail("evaluator", "slurm", "There is no `sbatch` on PATH here, so no SLURM cluster to submit children to.",
                  "run on a SLURM login node, start the local one-node cluster (bash scripts/slurm.sh start), "
                  "or pass evaluator=local.")


def _class_of(group: str, node):
    """The class that a group's node instantiates (its ``_target_``), or None when it has no target."""
    from hydra.utils import get_class
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not target:
        return None
    try:
        return get_class(target)
    except Exception as exc:   # a typo in _target_
        options = ", ".join(f"{group}={p.stem}" for p in sorted((CONF_DIR / group).glob("*.yaml")))
        raise ConfigError(f"Invalid configuration: {group}._target_={target!r} cannot be imported ({exc}). "
                          f"Fix: choose an option of the {group} group ({options}).") from None


def effective_search(cfg: DictConfig) -> tuple[int, int, int]:
    """(rounds, prompts per round, samples per prompt) that the loop runs: search.schedule (which the
    ablation presets may set) and m. Naive few-shot: one round of T x n, the full search's budget."""
    return cfg.search.schedule.rounds, cfg.search.prompts_per_round, cfg.search.schedule.samples_per_prompt


def tunes_soft_prompt(cfg: DictConfig) -> bool:
    """Whether TRAIN runs at all: it is on (soft_prompt.enabled) and there is a round after the first."""
    return bool(cfg.soft_prompt.enabled) and effective_search(cfg)[0] > 1


def _validate_ablation(cfg: DictConfig, lm_class) -> None:
    """Combinations the paper's ablations cannot run with."""
    a = cfg.ablation
    if tunes_soft_prompt(cfg) and lm_class is not None and not getattr(lm_class, "supports_prompt_tuning", False):
        _fail("soft_prompt.enabled", True,
              f"Soft prompt tuning trains input embeddings, so it needs the LM's weights here; {lm_class.__name__} "
              "(lm._target_) does not have them (a remote server, for example).",
              "pass ablation=no_prompt_tuning, or choose a local LM (lm=gemma270m, lm=hf, lm=codegen).")
    rule = _class_of("selection", cfg.selection).name   # each selection class names itself (rounds.selection)
    if a.selection is not None and rule != a.selection:
        _fail("ablation", a.name,
              f"The {a.name} ablation is the selection rule selection={a.selection} (conf/ablation/{a.name}.yaml), "
              f"so it cannot be combined with selection={rule}.",
              f"drop the selection= override (ablation={a.name} sets selection={a.selection}), or drop the ablation.")

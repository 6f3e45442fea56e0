"""Typed configuration: schemas for the search's own nodes, and checks that run before any compute.

The YAML files in ``conf/`` hold the values (with a comment each); these dataclasses give them types,
so ``search.rounds=ten`` fails at composition naming the key. A node that one component reads has that
component's dataclass as its schema, which owns the defaults (``crossmut``: CrossMut, ``soft_prompt``:
PromptTuningConfig, ``sandbox``: SandboxLimits; conf/config.yaml only documents them). Group nodes chosen by the user
(``task``, ``lm``, ``selection``) are instantiated with ``_target_``. ``validate`` checks ranges and
combinations that types cannot express, and says how to fix each.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import re
import types
import typing
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf, ValidationError
from omegaconf.errors import OmegaConfBaseException

from evo.errors import ConfigError, fail as _fail   # ConfigError: evo.config's errors too (evo.run catches it)
from evo.lm.base import LMUnavailableError
from evo.sandbox.runner import SandboxLimits
from evo.search.crossmut import CrossMut
from evo.search.tuning import PromptTuningConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("task", "lm", "selection", "evaluator", "logger", "surrogate")   # options with a _target_ class


@functools.lru_cache(maxsize=None)
def _node_schema(component: type) -> type:
    """A component's dataclass as the schema of the node it reads: the same fields, types and defaults (the
    component owns them), as a plain dataclass, since OmegaConf makes a frozen one's node read-only."""
    hints = typing.get_type_hints(component)
    fields = [(f.name, hints[f.name], field(default=f.default) if f.default is not dataclasses.MISSING
               else field(default_factory=f.default_factory)) for f in dataclasses.fields(component)]
    return make_dataclass(f"{component.__name__}Node", fields)


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
    crossmut: _node_schema(CrossMut) = field(default_factory=_node_schema(CrossMut))
    soft_prompt: _node_schema(PromptTuningConfig) = field(default_factory=_node_schema(PromptTuningConfig))
    sandbox: _node_schema(SandboxLimits) = field(default_factory=_node_schema(SandboxLimits))
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


# The component that reads each node of this schema, and checks it (check_config).
_NODE_OWNERS = {"crossmut": CrossMut, "soft_prompt": PromptTuningConfig, "sandbox": SandboxLimits}


def register_configs() -> None:
    """Register the schema that ``conf/config.yaml`` extends (called by the entry points, not on import)."""
    ConfigStore.instance().store(name="evo_schema", node=EvoConfig)
    register_resolvers()


def register_resolvers() -> None:
    """``${evo.mul:a,b}``: Hydra has no arithmetic, and naive few-shot's samples per prompt are T x n of
    whatever T and n the user set (conf/ablation/naive_fewshot.yaml). Idempotent."""
    OmegaConf.register_new_resolver("evo.mul", lambda a, b: int(a) * int(b), replace=True)


register_resolvers()   # on import too: code that only loads a saved config (.hydra/config.yaml) resolves it

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides=(), config_name: str = "config") -> DictConfig:
    """The config ``python -m evo.run OVERRIDES`` runs with (Hydra's compose API: defaults, presets, schema), for
    benchmarks and tools that build a search's components without running it."""
    from hydra import compose, initialize_config_dir   # Hydra's compose API: only these callers need it
    from hydra.core.global_hydra import GlobalHydra
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg




def validate(cfg: DictConfig, *, needs_lm: bool = True) -> None:
    """Checks that run before anything is loaded or trained. This module checks only its own node
    (``search``) and the ablation's combinations; every other node is checked by the component that
    reads it, ``check_config(node, cfg)`` (``cfg``: the whole config, for checks that span nodes): the
    class behind a node of this schema (crossmut, soft_prompt, sandbox) or a group's ``_target_`` class."""
    for group in GROUPS:                   # types first: the checks below compare values
        _check_types(group, cfg[group])
    _check_search(cfg.search)
    for key, owner in _NODE_OWNERS.items():
        owner.check_config(cfg[key], cfg)
    for group in ("task", "selection", "evaluator"):
        _ask(group, cfg)
    for node in ("logger", "surrogate"):   # their constructors check their own options (nothing is loaded)
        instantiate_checked(cfg[node])
    _ask("surrogate", cfg)                 # then what spans nodes (a prior's task settings against this run's)
    _validate_ablation(cfg, _class_of("lm", cfg.lm))
    if needs_lm:
        _ask("lm", cfg)


def _check_types(group: str, node) -> None:
    """A group option's schema is its class's constructor: every key the node sets must convert to the type
    that ``__init__`` annotates, so ``task.train_steps=ten`` names the key and the fix here, before any
    compute (the schema nodes, search and the rest, are typed at composition by EvoConfig)."""
    cls = _class_of(group, node)
    if cls is None:
        return
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:   # an annotation this Python cannot evaluate: nothing to check against
        return
    expected = {k: _omegaconf_type(hints[k]) for k in node if k in hints}
    expected = {k: t for k, t in expected.items() if t is not Any}
    values = {}
    for key in list(expected):
        try:
            value = node[key]
        except OmegaConfBaseException:   # an interpolation that resolves only where the run starts (an env var)
            del expected[key]
            continue
        values[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    expected = {k: t for k, t in expected.items() if not _matches(values[k], t)}   # the usual case: all already are
    if not expected:
        return
    schema = make_dataclass(f"{cls.__name__}Types", list(expected.items()))   # OmegaConf decides what converts
    try:
        OmegaConf.merge(OmegaConf.structured(schema), {k: values[k] for k in expected})
    except ValidationError as exc:
        key = re.split(r"[.\[]", str(exc.full_key))[0]   # a list item's error names the item: report the key
        default = inspect.signature(cls.__init__).parameters[key].default
        example = "" if default is inspect.Parameter.empty else f", e.g. {group}.{key}={_yaml(default)} (the default)"
        _fail(f"{group}.{key}", values[key], f"{cls.__name__} (the {group} option) takes {key} as {_type_name(expected[key])}.",
              f"pass {_type_name(expected[key])}{example}.")


def _matches(value, t) -> bool:
    """Whether ``value`` already is of the type ``_omegaconf_type`` gave (no conversion needed)."""
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t in (bool, str):
        return isinstance(value, t)
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    return value is None or _matches(value, args[0])   # Optional[X]


def _type_name(t) -> str:
    """``Optional[int]`` -> "an integer or null", for the messages above."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if t in names:
        return names[t]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) is list:
        return f"a list ([...]) of {_type_name(args[0]).split(' ', 1)[1]}s"
    return f"{_type_name(args[0])} or null"


def _yaml(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else \
        "[" + ",".join(map(str, value)) + "]" if isinstance(value, (list, tuple)) else str(value)


def _omegaconf_type(hint):
    """The annotation as a type OmegaConf validates (int, float, bool, str, Optional and lists of them);
    Any where it has none (a callable, a dict, a union of several types)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (int, float, bool, str):
        return hint
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _omegaconf_type(rest[0]) if len(rest) == 1 else Any
        return Optional[inner] if inner is not Any else Any
    if origin in (list, collections.abc.Sequence) and args or origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner = _omegaconf_type(args[0])
        return List[inner] if inner is not Any else Any
    return Any


def _check_search(s: DictConfig) -> None:
    """Algorithm 1's own numbers (the ``search`` node is this module's schema, SearchConfig)."""
    for key in ("rounds", "prompts_per_round"):
        if s[key] < 1:
            _fail(f"search.{key}", s[key], "It counts something and must be at least 1.", f"pass search.{key}=1 or more.")
    if not 0 < s.alpha <= 1:
        _fail("search.alpha", s.alpha, "alpha is the validation-error threshold of FILTERANDEVAL, in (0, 1].",
              "pass search.alpha=0.5 (the paper's value).")


def _ask(group: str, cfg: DictConfig) -> None:
    """The group option's class checks its node (``check_config``), if it has such a check. A backend that
    cannot run here says so with LMUnavailableError (an LM that is not installed, a model file missing)."""
    check = getattr(_class_of(group, cfg[group]), "check_config", None)
    if check is None:
        return
    try:
        check(cfg[group], cfg)
    except LMUnavailableError as exc:
        raise ConfigError(str(exc)) from None


def instantiate_checked(node: DictConfig):
    """``hydra.utils.instantiate``, but a ConfigError raised by the constructor comes out as itself
    (Hydra wraps it), so the entry points print the key and the fix instead of a traceback."""
    try:
        return instantiate(node)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise


def _class_of(group: str, node):
    """The class that a group's node instantiates (its ``_target_``), or None when it has no target."""
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

"""``python -m evo.run``: an EvoPrompting search, composed by Hydra from the config groups in ``conf/``.

    python -m evo.run experiment=demo                 # a short real search on a CPU (~15 min)
    python -m evo.run                                 # the paper's settings (T=10, m=10, n=16)
    python -m evo.run hydra.run.dir=outputs/my_run    # resume (or start) the run in that folder
    python -m evo.run --cfg job                       # print the composed config

The run folder holds ``archive.sqlite`` (every child, append-only), ``summary.md``/``summary.json``,
``pareto.png``, ``lineage.html`` (the evolution tree explorer, redrawn after every round; evo/lineage)
and Hydra's ``.hydra/`` with the resolved config. The same command resumes a run
that was killed or preempted (SLURM requeues it with the same run folder).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import hydra
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from evo.analysis.lineage import write_lineage_safely
from evo.analysis.report import write_report
from evo.archive import Archive
from evo.archive.moved import current_paths
from evo.config import CONF_DIR as CONF_PATH, ConfigError, effective_search, register_configs, tunes_soft_prompt, validate
from evo.sandbox.runner import SandboxLimits, compile_cache_for, describe_isolation
from evo.search.crossmut import CrossMut
from evo.search.filter_eval import FilterAndEval
from evo.search.tuning import PromptTuningConfig
from evo.tracking import hydra_info, slurm_ids

log = logging.getLogger("evo")

CONF_DIR = str(CONF_PATH)   # hydra.main takes a str
T = TypeVar("T")

# Keys that shape the search: a resumed run must agree on them with the run it continues.
_RESUME_KEYS = ("task", "search", "crossmut", "selection", "ablation", "soft_prompt", "seed", "lm")
# ...except these, which change where or how fast things run, not what is sampled.
_RESUME_FREE = {"search": ("rounds", "schedule.rounds"), "lm": ("threads", "device", "cache_dir", "name", "concurrency", "timeout_s",
                                              "max_retries", "backoff_s", "api_key_env"),
                "soft_prompt": ("micro_batch_size",), "task": ("train_loop",)}


def _fingerprint(cfg: DictConfig) -> dict:
    plain = OmegaConf.to_container(cfg, resolve=True)
    out = {}
    for key in _RESUME_KEYS:
        node = plain
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    # a surrogate that decides which children train is part of the search; absent when off: older runs resume
    if getattr(get_class(cfg.surrogate._target_), "active", False):
        out["surrogate"] = {k: v for k, v in plain["surrogate"].items() if k != "train_skipped"}
    lm = out.get("lm") or {}
    if not lm.get("copy_penalty"):   # off: absent, so runs from before the copy penalty resume
        for k in ("copy_penalty", "copy_penalty_base", "copy_penalty_after"):
            lm.pop(k, None)
    if out.get("crossmut") and not out["crossmut"].get("avoid_known"):   # off: absent, so runs from before it resume
        out["crossmut"].pop("avoid_known", None)
    for key, free in _RESUME_FREE.items():
        out[key] = _without(out[key] or {}, free)
    return out


def _without(node: dict, dotted: tuple[str, ...]) -> dict:
    """``node`` less the keys ``dotted`` (``"schedule.rounds"`` reaches into ``node["schedule"]``)."""
    out = dict(node)
    for key in dotted:
        head, _, rest = key.partition(".")
        if rest and isinstance(out.get(head), dict):
            out[head] = _without(out[head], (rest,))
        elif not rest:
            out.pop(head, None)
    return out


def _from_ablation_flags(stored: dict) -> dict:
    """A fingerprint stored while ablations were flags that the code interpreted (commit 6f02ef3 and
    before), in the form today's presets (conf/ablation/) give, so that such a run resumes: then
    ``ablation.random_parents`` swapped GETTOP for evo.selection.RandomParents in code (the fingerprint
    kept selection=paper_topk), ``prompt_tuning: false`` skipped TRAIN (now soft_prompt.enabled), and
    ``naive_fewshot`` ran one round of T x n samples (the fingerprint kept search.rounds = T; now
    search.schedule holds the samples per prompt, and the schedule's rounds are resume-free)."""
    flags = stored.get("ablation") or {}
    if "random_parents" not in flags:
        return stored                             # written by today's code
    out = dict(stored, ablation={"name": flags["name"], "selection": "random" if flags["random_parents"] else None})
    if flags["random_parents"]:
        out["selection"] = {**stored["selection"], "_target_": "evo.selection.RandomParents"}
    out["soft_prompt"] = {**stored["soft_prompt"], "enabled": flags["prompt_tuning"]}
    n = stored["crossmut"]["samples_per_prompt"]
    out["search"] = {**_without(stored["search"], ("rounds",)),
                     "schedule": {"samples_per_prompt": n * stored["search"]["rounds"] if flags["naive_fewshot"] else n}}
    return out


def _check_resume(archive, cfg: DictConfig) -> bool:
    """Store the run's config on first start; on resume, refuse a config that changes the search."""
    new = _fingerprint(cfg)
    stored = archive.get_meta("fingerprint")
    if stored is None:
        archive.set_meta("fingerprint", json.dumps(new, sort_keys=True))
        return False
    # A run made before evo/ became packages stored the old module paths (evo.selection.PaperTopK): compare
    # them as today's (evo.search.selection.PaperTopK), so the same command still resumes it.
    old = current_paths(_from_ablation_flags(json.loads(stored)))
    changed = sorted(k for k in new if old.get(k) != new[k])
    if changed:
        raise ConfigError(
            f"The run folder {cfg.run_dir} holds a search with different settings for: {', '.join(changed)}. "
            "Resuming would mix two searches in one archive. Fix: pass the same overrides as the original "
            "run (see its .hydra/overrides.yaml), or start a new run folder (leave hydra.run.dir unset).")
    return True


def _record_start(archive, cfg: DictConfig, resumed: bool) -> None:
    """What started this process (SLURM job and restart, overrides), in the archive; the first start
    also stores the overrides and the resolved config, so an archive alone says which run it is."""
    slurm = {f"slurm_{k}": v for k, v in slurm_ids().items()}
    overrides = hydra_info().get("overrides", [])   # none outside @hydra.main (tests that call run() directly)
    if archive.get_meta("overrides") is None:
        archive.set_meta("overrides", json.dumps(overrides))
        archive.set_meta("config", json.dumps(OmegaConf.to_container(cfg, resolve=True)))
    archive.log_event("run_started", detail={"resumed": resumed, "overrides": overrides, **slurm})


def build_search(cfg: DictConfig, archive, on_round=None):
    """Every component of Algorithm 1 from the config (nothing is loaded or trained here)."""
    # the loop brings numpy (the surrogate) and tqdm: ~0.2 s of `python -m evo.run --help` that it does not need
    from evo.search.loop import EvoPrompting, SearchSettings
    task = instantiate(cfg.task)
    limits = SandboxLimits(**OmegaConf.to_container(cfg.sandbox, resolve=True))
    log.info("sandbox: %s", describe_isolation(limits))
    log.info("trusted stages: %s", compile_cache_for(limits)[1])
    rounds, m, n = effective_search(cfg)
    tunes = tunes_soft_prompt(cfg)
    selection = instantiate(cfg.selection)
    log.info("ablation %s: %d rounds x %d prompts x %d samples, parents by %s, soft prompt tuning %s",
             cfg.ablation.name, rounds, m, n, selection.name, "on" if tunes else "off")
    crossmut = CrossMut(**{**OmegaConf.to_container(cfg.crossmut), "samples_per_prompt": n})
    surrogate = instantiate(cfg.surrogate)
    evaluator = instantiate(cfg.evaluator)
    search = EvoPrompting(
        settings=SearchSettings(rounds=rounds, prompts_per_round=m, seed=cfg.seed, progress=cfg.progress),
        task=task,
        crossmut=crossmut,
        selection=selection,
        evaluate=FilterAndEval(task, task.prepare(Path(os.path.expanduser(cfg.cache_dir))), limits, cfg.search.alpha,
                               scratch_root=None),
        archive=archive,
        lm_factory=functools.partial(load_lm, cfg.lm, evaluator),
        evaluator=evaluator,
        on_round=on_round,
        surrogate=surrogate,
        tuning=PromptTuningConfig(**OmegaConf.to_container(cfg.soft_prompt)) if tunes else None,
        run_dir=Path(cfg.run_dir),
    )
    if isinstance(getattr(surrogate, "embedder", None), functools.partial):   # surrogate/embedder=operator
        surrogate.embedder = surrogate.embedder(lm=lambda: search.lm)
    return search


def load_lm(lm_cfg: DictConfig, evaluator):
    """The operator's LM (on first use), keeping to its share of GPU 0 when children train there too."""
    lm = instantiate(lm_cfg)
    if evaluator.lm_gpu_share:
        log.info("LM: %s", lm.share_gpu(evaluator.lm_gpu_share))
    return lm


def _after_round(tracker, archive, run_dir: Path, t: int) -> None:
    """After each finished round (-1: the seeds): the logger, and lineage.html redrawn in the run folder."""
    tracker.log_round(archive, t)
    write_lineage_safely(archive, run_dir)


def run(cfg: DictConfig) -> float:
    """Build every component from the config, run Algorithm 1, report. Returns the best fitness."""
    validate(cfg)
    tracker = instantiate(cfg.logger)
    run_dir = Path(cfg.run_dir)
    archive = Archive(run_dir / "archive.sqlite")
    resumed = _check_resume(archive, cfg)
    _record_start(archive, cfg, resumed)
    print(f"Run folder: {run_dir}" + ("  (resuming)" if resumed else ""), flush=True)
    try:
        tracker.start(cfg, run_dir, archive, resumed)
        build_search(cfg, archive, on_round=lambda t: _after_round(tracker, archive, run_dir, t)).run()
        summary = write_report(archive, run_dir, survivors=cfg.selection.survivors)
        tracker.finish(archive, run_dir, summary)
    except BaseException:
        # an error or an interrupt (Ctrl-C, preemption): the tracked run is closed as failed, so a --multirun's
        # next job starts clean; the archive already holds every finished step and the run resumes from it
        tracker.abort()
        raise
    finally:
        archive.close()
    print(summary["text"], flush=True)
    print(f"\nRun folder: {run_dir}\n  archive: {run_dir / 'archive.sqlite'}\n  summary: {run_dir / 'summary.md'}"
          f"\n  Pareto plot: {run_dir / 'pareto.png'}\n  evolution tree: {run_dir / 'lineage.html'}", flush=True)
    return summary["best_fitness"] if summary["best_fitness"] is not None else float("-inf")


def exit_on_config_error(work: Callable[[], T]) -> T:
    """What ``work()`` returns; a ConfigError (raised before any compute) is printed as ``error: ...`` and the
    command exits with code 2. The start of every Hydra command's ``main``."""
    try:
        return work()
    except ConfigError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        sys.exit(2)


# In front of a one-off command's arguments (evo.evaluate, evo.final_eval): it needs no run folder of its own,
# so Hydra writes none (no .hydra/, no log file) and logs nothing of its own.
ONE_OFF = ("hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled")


def start_one_off(main: Callable[[], Any], *extra: str) -> None:
    """Start a one-off command's Hydra ``main``: the schema registered, :data:`ONE_OFF` and ``extra`` in front of
    the user's arguments (so that flags such as ``--cfg job`` still parse, and the user's overrides come last)."""
    register_configs()
    sys.argv[1:1] = [*ONE_OFF, *extra]
    main()


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    return exit_on_config_error(lambda: run(cfg))


if __name__ == "__main__":
    register_configs()
    main()

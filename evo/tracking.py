"""Experiment tracking: the ``logger`` config group (``logger=none`` | ``logger=wandb``).

The search calls a logger at three points; the archive stays the record of truth, a logger only
mirrors it somewhere people compare runs:

    start(cfg, run_dir, archive, resumed)   once, before the seeds are evaluated
    log_round(archive, round)               after each finished round (-1: the seeds were scored)
    finish(archive, run_dir, summary)       after the report (summary.md, pareto.png) is written
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sqlite3
import statistics
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from evo import outcome
from evo.analysis import lineage
from evo.analysis.metrics import round_stats, run_hypervolume
from evo.archive import Archive
from evo.errors import ConfigError

log = logging.getLogger(__name__)


class NoLogger:
    """``logger=none``: nothing leaves the run folder."""

    def start(self, cfg: DictConfig, run_dir: Path, archive: Archive, resumed: bool) -> None:
        pass

    def log_round(self, archive: Archive, round: int) -> None:
        pass

    def finish(self, archive: Archive, run_dir: Path, summary: dict) -> None:
        pass

    def abort(self) -> None:
        pass


MODES = ("auto", "online", "offline", "disabled")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
              "SLURM_JOB_PARTITION")
CHILD_COLUMNS = ("id", "round", "seed_name", "status", "reason", "parents", "num_params", "val_accuracy",
                 "test_accuracy", "fitness", "temperature", "tokens_out", "train_seconds", "device", "code")
COST_KEYS = ("lm_tokens_in", "lm_tokens_out", "lm_seconds", "train_seconds_cpu", "train_seconds_gpu",
             "eval_seconds")   # children columns of the cost ledger; tuning is handled apart (see _cost_metrics)
META_RUN_ID = "wandb_run_id"          # archive meta: the W&B run this archive logs to (kept across resumes)
META_LAST_ROUND = "wandb_last_round"  # archive meta: the last round logged to it (-1: the seeds)

# Values this module put into os.environ, so a later run in the same process (Hydra's basic launcher
# runs --multirun jobs one after another in one process) can tell them from values the user exported.
_OWN_ENV: dict[str, str] = {}


class WandbLogger:
    """``logger=wandb``: mirror the search to Weights & Biases (online, or offline for ``wandb sync``).

    One W&B run per run folder: its id is kept in the archive's meta, so a resumed run (a requeued
    SLURM job, a restart with ``hydra.run.dir=PATH``) logs to the same W&B run, and the last logged
    round too, so no round is logged twice. Step = round + 1 (the seeds are step 0).
    Nothing here may stop the search: failures while logging are warnings (the archive has it all).
    """

    def __init__(self, project: str = "evo", entity: Optional[str] = None, mode: str = "auto",
                 group: Optional[str] = None, name: Optional[str] = None, tags: Sequence[str] = (),
                 best_programs: int = 10, log_children_table: bool = True, log_artifacts: bool = True,
                 dir: Optional[str] = None):
        if mode not in MODES:
            raise ConfigError(f"Invalid configuration: logger.mode={mode!r}. Allowed values: {', '.join(MODES)} "
                              "(auto: online when a W&B API key is found, else offline). Fix: pass logger.mode=auto.")
        if not project or not str(project).strip():
            raise ConfigError("Invalid configuration: logger.project is empty. It names the W&B project. "
                              "Fix: pass logger.project=evo.")
        if isinstance(tags, str) or not all(isinstance(t, (str, int, float)) for t in (tags or ())):
            raise ConfigError(f"Invalid configuration: logger.tags={tags!r}. It is a list of strings. "
                              "Fix: pass logger.tags=[mytag] or logger.tags=[].")
        if isinstance(best_programs, bool) or not isinstance(best_programs, int) or best_programs < 0:
            raise ConfigError(f"Invalid configuration: logger.best_programs={best_programs!r}. It is how many of "
                              "the fittest programs are uploaded. Fix: pass logger.best_programs=10 (0: none).")
        self.project, self.entity, self.mode = str(project), entity, mode
        self.group, self.name, self.tags = group, name, [str(t) for t in (tags or ())]
        self.best_programs = best_programs
        self.log_children_table, self.log_artifacts = bool(log_children_table), bool(log_artifacts)
        self.dir = dir
        self._wandb = None
        self._run = None
        self._last_round: Optional[int] = None   # last round logged to the W&B run (None: none yet)
        self._logged_here = False                # a round was logged by this process (its step is still open)
        self._env_set: list[str] = []
        self._sync_hint = ""

    # -- mode ------------------------------------------------------------------------------------
    def resolve_mode(self) -> tuple[str, str]:
        """(online | offline | disabled, why). ``auto``: WANDB_MODE if the user exported it, else online when
        wandb finds a credential (its own lookup: WANDB_API_KEY, an identity token file, its settings file or a
        netrc entry for its host), else offline."""
        if self.mode != "auto":
            return self.mode, f"logger.mode={self.mode}"
        exported = os.environ.get("WANDB_MODE", "").strip().lower()
        exported = {"dryrun": "offline", "run": "online"}.get(exported, exported)
        if exported in ("online", "offline", "disabled"):
            return exported, f"WANDB_MODE={exported} is exported"
        wandb = _import_wandb()
        # prompt=False: never ask (a SLURM job has no terminal), and leave the session and settings as they are
        # when nothing is found; verify=False: no round trip to the server just to choose the mode.
        if wandb.login(prompt=False, verify=False):
            return "online", "wandb found a W&B credential"
        return "offline", ("no W&B credential: wandb found none (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, "
                           "its settings file, a netrc entry: `wandb login` writes one)")

    # -- the three calls -------------------------------------------------------------------------
    def start(self, cfg: DictConfig, run_dir: Path, archive: Archive, resumed: bool) -> None:
        mode, why = self.resolve_mode()
        if mode == "disabled":   # as logger=none: wandb is not even imported, nothing is written or stored
            log.info("W&B: disabled (%s)", why)
            return
        self._wandb = wandb = _import_wandb()
        run_dir = Path(run_dir).resolve()
        stored_id = archive.get_meta(META_RUN_ID)
        last = archive.get_meta(META_LAST_ROUND)
        self._last_round = int(last) if last is not None else None
        wandb_root = Path(self.dir or _user_env("WANDB_DIR") or run_dir).expanduser().resolve()
        self._set_env(run_dir)
        config = _plain_config(cfg)
        extra = {"slurm": slurm_ids(), "hydra": hydra_info()}
        config.update(extra)
        try:
            self._run = wandb.init(
                project=self.project, entity=self.entity, mode=mode, dir=str(wandb_root),
                id=stored_id, resume="allow" if stored_id else None,
                group=self.group or _default_group(cfg), name=self.name or _default_name(cfg),
                tags=_tags(cfg, self.tags), config=config,
                # create_new: never hand back (and log into) a run an earlier job in this process left open
                reinit="create_new")
        except Exception as exc:   # e.g. online with a bad key or no network: the search goes on without W&B
            log.warning("W&B: could not start a run (%s: %s); the search goes on without W&B (the archive has "
                        "everything: rerun with hydra.run.dir=%s to log it later)", type(exc).__name__, exc, run_dir)
            self._run = None
            self._restore_env()
            return
        if stored_id or resumed:
            # a requeued job has new SLURM ids (restart count): the resumed run's config says the newest
            self._run.config.update(extra, allow_val_change=True)
        if not stored_id:
            archive.set_meta(META_RUN_ID, self._run.id)
        if mode == "offline":
            # every segment of this run (a resumed run writes one folder per start; same second: suffix -1)
            self._sync_hint = f"wandb sync {shlex.quote(str(wandb_root / 'wandb'))}/offline-run-*-{self._run.id}*"
            log.info("W&B: logging offline (%s) to %s; upload later with: %s", why, self._run.settings.sync_dir,
                     self._sync_hint)
        else:
            log.info("W&B: logging online (%s): %s", why, getattr(self._run, "url", None) or self._run.id)
        log.info("W&B run %s%s (project %s, group %s)", self._run.id, " resumed" if stored_id else "",
                 self.project, self._run.group)

    def log_round(self, archive: Archive, round: int) -> None:
        if self._run is None:
            return
        try:
            self._log_rounds(archive, round)
        except Exception as exc:
            log.warning("W&B: could not log round %d (%s: %s); the search goes on", round, type(exc).__name__, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))

    def finish(self, archive: Archive, run_dir: Path, summary: dict) -> None:
        if self._run is None:
            return
        run_dir, summary = Path(run_dir), summary or {}
        parts = [("the rounds left to log", lambda: self._log_rounds(archive, None)),
                 ("the children table and plots", lambda: self._log_media(archive, run_dir)),
                 ("the run summary", lambda: self._log_summary(archive, summary))]
        if self.log_artifacts:
            parts += [("the best programs", lambda: self._log_programs(archive)),
                      ("the soft prompts", lambda: self._log_soft_prompts(archive, run_dir)),
                      ("the archive", lambda: self._log_archive(archive, run_dir))]
        for what, part in parts:   # each on its own: one failing part does not lose the others
            try:
                part()
            except Exception as exc:
                log.warning("W&B: could not log %s (%s: %s)", what, type(exc).__name__, exc,
                            exc_info=log.isEnabledFor(logging.DEBUG))
        try:
            self._run.finish()
            if self._sync_hint:
                log.info("W&B: offline run written; upload it with: %s", self._sync_hint)
        except Exception as exc:
            log.warning("W&B: could not finish the run (%s: %s)", type(exc).__name__, exc)
        finally:
            self._run = None
            try:   # stop the wandb service, so a next run in this process starts one with its own folders
                self._wandb.teardown()
            except Exception:
                pass
            self._restore_env()

    def abort(self) -> None:
        """The search raised or was interrupted: close the W&B run as failed (exit code 1); the rounds
        already logged stay, and a resumed run logs the rest into the same W&B run."""
        if self._run is None:
            return
        try:
            self._run.finish(exit_code=1)
        except Exception as exc:
            log.warning("W&B: could not close the run (%s: %s)", type(exc).__name__, exc)
        finally:
            self._run = None
            try:
                self._wandb.teardown()
            except Exception:
                pass
            self._restore_env()

    # -- rounds ----------------------------------------------------------------------------------
    def _log_rounds(self, archive: Archive, upto: Optional[int]) -> None:
        """Log every finished round after the last logged one, up to ``upto`` (None: all finished).
        Back-fills a round whose log a kill cut off (a resumed search does not call it again)."""
        first = -1 if self._last_round is None else self._last_round + 1
        todo = []
        for r in range(first, (10**9 if upto is None else upto) + 1):
            finished = not archive.pending(-1) if r == -1 else archive.round_finished(r)
            if not finished:
                break
            todo.append(r)
        if not todo:
            return
        stats = {s["round"]: s for s in round_stats(archive)}
        ledger = {row["round"]: row for row in archive.cost_ledger()["rounds"]}
        tuning = {t["round"]: t["seconds"] for t in archive.tuning()}
        for r in todo:
            metrics = {"round/index": r, **_round_metrics(archive, r, stats), **_cost_metrics(r, ledger, tuning)}
            self._run.log(metrics, step=r + 1)
            self._last_round, self._logged_here = r, True
            archive.set_meta(META_LAST_ROUND, str(r))

    # -- finish ----------------------------------------------------------------------------------
    def _final_step(self) -> int:
        last = -1 if self._last_round is None else self._last_round
        if self._logged_here:      # the last round's step is still open here: add to it
            return last + 1
        return max(last + 2, self._run.step)   # resumed only to finish: a new step after everything logged

    def _log_media(self, archive: Archive, run_dir: Path) -> None:
        wandb, data = self._wandb, {}
        if self.log_children_table:
            rows = archive.rows(CHILD_COLUMNS)
            if len(rows) > wandb.Table.MAX_ROWS:
                log.warning("W&B: the children table has %d rows; W&B shows the first %d (the archive artifact has "
                            "all)", len(rows), wandb.Table.MAX_ROWS)
            data["children"] = wandb.Table(columns=list(CHILD_COLUMNS),
                                           data=[[row[c] for c in CHILD_COLUMNS] for row in rows])
            # the tree as a table: parent ids as a list, the diff against each parent
            data["lineage"] = wandb.Table(columns=list(lineage.TABLE_COLUMNS), data=lineage.table_rows(archive))
        if (run_dir / "lineage.html").exists():   # the explorer itself, shown by W&B as an HTML panel
            data["report/lineage"] = wandb.Html((run_dir / "lineage.html").read_text(), inject=False)
        for key, file in (("report/pareto", "pareto.png"), ("report/soft_prompt", "soft_prompt.png")):
            if (run_dir / file).exists():
                data[key] = wandb.Image(str(run_dir / file))
        if data:
            self._run.log(data, step=self._final_step())

    def _log_summary(self, archive: Archive, summary: dict) -> None:
        costs = summary.get("costs") or archive.cost_ledger()
        best = summary.get("best") or archive.best(1)
        values = {"final/best_fitness": summary.get("best_fitness"),
                  "final/best_child": best[0]["id"] if best else None,
                  "final/rounds": archive.rounds_finished(),
                  "final/samples": archive.count(min_round=0),
                  "final/scored": len(archive.history()),
                  "final/hypervolume_val": run_hypervolume(archive, error="val"),
                  "final/hypervolume_test": run_hypervolume(archive, error="test")}
        values.update({f"final/{_cost_name(k)}": v for k, v in (costs.get("total") or {}).items()})
        self._run.summary.update({k: v for k, v in values.items() if v is not None})

    def _log_programs(self, archive: Archive) -> None:
        if self.best_programs < 1:
            return
        best = archive.best(self.best_programs)
        if not best:
            return
        art = self._wandb.Artifact(f"programs-{self._run.id}", type="programs",
                                   description=f"the {len(best)} fittest programs, fitness = -(num_params x val error)",
                                   metadata={"programs": best})
        with tempfile.TemporaryDirectory() as tmp:   # add_file copies each file into wandb's staging folder
            for rank, b in enumerate(best, 1):
                child = archive.get(b["id"])
                origin = f"seed {child.seed_name}" if child.seed_name else f"round {child.round}"
                header = (f"# evo child {child.id} ({origin}), rank {rank} of {len(best)} by fitness in W&B run "
                          f"{self._run.id}\n"
                          f"# fitness {child.fitness} = -(num_params x validation error)\n"
                          f"# num_params {child.num_params}, val_accuracy {child.val_accuracy}, "
                          f"test_accuracy {child.test_accuracy}\n"
                          f"# parents {list(child.parents)}\n")
                path = Path(tmp) / f"rank{rank:02d}_child{child.id}.py"
                path.write_text(header + child.code)
                art.add_file(str(path), name=path.name)
            self._run.log_artifact(art)

    def _log_soft_prompts(self, archive: Archive, run_dir: Path) -> None:
        folder = run_dir / "soft_prompt"
        rounds = sorted((int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else ())
                        if p.is_dir() and (m := re.fullmatch(r"round_(\d+)", p.name)))
        if not rounds:
            return
        tuning = [{k: t[k] for k in ("round", "texts", "tokens", "epoch_losses", "seconds")} for t in archive.tuning()]
        art = self._wandb.Artifact(f"soft_prompt-{self._run.id}", type="soft_prompt",
                                   description="the soft prompt (peft adapter) tuned after each round: round_<t>/",
                                   metadata={"rounds": [r for r, _ in rounds], "tuning": tuning})
        for r, path in rounds:
            art.add_dir(str(path), name=f"round_{r}")
        self._run.log_artifact(art)

    def _log_archive(self, archive: Archive, run_dir: Path) -> None:
        src = Path(archive.path)
        meta = {"children": archive.count(),
                "rounds_finished": archive.rounds_finished(),
                "schema_version": archive.get_meta("schema_version"), "run_dir": str(run_dir)}
        art = self._wandb.Artifact(f"archive-{self._run.id}", type="archive",
                                   description="the run's archive.sqlite (python -m evo.report, evo.compare)",
                                   metadata=meta)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "archive.sqlite"
            _sqlite_copy(src, copy)
            art.add_file(str(copy), name="archive.sqlite")
            self._run.log_artifact(art)

    # -- where wandb writes ----------------------------------------------------------------------
    def _set_env(self, run_dir: Path) -> None:
        """Keep wandb's cache (its service logs, downloaded artifacts) and data (the staged copies of
        logged artifacts, which ``wandb sync`` uploads later) in ``<run_dir>/wandb/``.

        A value the user exported wins: it is a deliberate choice (a shared artifact cache, a scratch
        disk for big files), so plain overriding would be wrong. Plain ``os.environ.setdefault`` is
        wrong too: Hydra's basic launcher runs ``--multirun`` jobs one after another in one process,
        and the next job would take the first job's folder for the user's. So a value counts as the
        user's unless this module set it (``_OWN_ENV``), and ours are removed again in ``finish``.
        WANDB_DIR is not set: ``wandb.init(dir=...)`` says where the run folder goes (``logger.dir``,
        else an exported WANDB_DIR, else the run folder). WANDB_CONFIG_DIR is not set either: a run
        only reads it (the settings file of ``wandb login --host`` and ``wandb offline``) and writes
        nothing there, so pointing it at an empty folder would only drop the user's W&B server.
        """
        for key, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
            if _user_env(key) is None:
                value = str(run_dir / "wandb" / sub)
                os.environ[key] = _OWN_ENV[key] = value
                self._env_set.append(key)

    def _restore_env(self) -> None:
        for key in self._env_set:
            if os.environ.get(key) == _OWN_ENV.get(key):
                os.environ.pop(key, None)
            _OWN_ENV.pop(key, None)
        self._env_set = []


# -- metrics ---------------------------------------------------------------------------------------
def _round_metrics(archive: Archive, r: int, stats: dict[int, dict]) -> dict[str, Any]:
    """What round r produced (round -1: the seeds, scored but not in the history G)."""
    if r == -1:
        rows = archive.rows(("status", "fitness"), round=-1)
        fits = [x["fitness"] for x in rows if x["status"] == outcome.OK and x["fitness"] is not None]
        working = sum(1 for x in rows if x["status"] in outcome.WORKING)
        m = {"round/samples": len(rows), "round/working": working,
             "round/valid_rate": working / len(rows) if rows else 0.0, "round/scored": len(fits),
             "round/best_fitness": max(fits) if fits else None,
             "round/median_fitness": statistics.median(fits) if fits else None}
    else:
        s = stats.get(r, {})
        m = {"round/samples": s.get("samples", 0), "round/working": s.get("new_working", 0),
             "round/valid_rate": s.get("new_working_rate", 0.0), "round/scored": s.get("scored", 0),
             "round/duplicates": s.get("duplicates", 0), "round/copies_of_parent": s.get("copies_of_parent", 0),
             "round/best_fitness": s.get("best_fitness_round"),
             "round/median_fitness": s.get("median_fitness_round"),
             "round/best_fitness_so_far": s.get("best_fitness_so_far"),
             "round/new_working_per_lm_hour": s.get("new_working_per_lm_hour")}
    m["round/hypervolume"] = run_hypervolume(archive, upto_round=r, error="val")
    return {k: v for k, v in m.items() if v is not None}


def _cost_name(key: str) -> str:
    return "sandbox_seconds" if key == "eval_seconds" else key


def _cost_metrics(r: int, ledger: dict[int, dict], tuning: dict[int, float]) -> dict[str, Any]:
    """What round r spent (``round/...``) and everything spent up to its end (``cost/...``).

    The soft prompt tuned after round t-1 is trained at the start of round t, so round t's tuning
    seconds are the ledger's tuning row t-1: the numbers at step t+1 never change later."""
    row = ledger.get(r, {})
    m = {f"round/{_cost_name(k)}": row.get(k, 0) for k in COST_KEYS}
    m["round/tuning_seconds"] = tuning.get(r - 1, 0.0)
    upto = [v for k, v in ledger.items() if k <= r]
    m.update({f"cost/{_cost_name(k)}": sum(v[k] for v in upto) for k in COST_KEYS})
    m["cost/children"] = sum(v["children"] for v in upto)
    m["cost/tuning_seconds"] = sum(s for t, s in tuning.items() if t <= r - 1)
    return m


# -- config, names, environment --------------------------------------------------------------------
def _plain_config(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as exc:   # e.g. ${hydra:...} outside a Hydra app
        log.debug("W&B: config not resolvable (%s); logging it unresolved", exc)
        return OmegaConf.to_container(cfg, resolve=False)


def slurm_ids() -> dict[str, str]:
    """The SLURM job this process runs in (job, array job and task, restart count, partition), if any."""
    return {k[len("SLURM_"):].lower(): os.environ[k] for k in SLURM_VARS if os.environ.get(k)}


def _hydra_config():
    try:
        return HydraConfig.get() if HydraConfig.initialized() else None
    except Exception:
        return None


def _is_multirun(hc) -> bool:
    return hc is not None and hc.mode == RunMode.MULTIRUN


def hydra_info() -> dict:
    """The Hydra job: mode, output folder, overrides, and under --multirun the sweep folder and job number."""
    hc = _hydra_config()
    if hc is None:
        return {}
    def get(key):   # missing values (e.g. outside a launched app) are left out, never raised
        return OmegaConf.select(hc, key, default=None, throw_on_missing=False)
    info = {"mode": getattr(hc.mode, "name", None), "output_dir": get("runtime.output_dir"),
            "overrides": list(get("overrides.task") or [])}
    if _is_multirun(hc):
        info.update(sweep_dir=get("sweep.dir"), job_num=get("job.num"), job_id=get("job.id"))
    return {k: v for k, v in info.items() if v is not None}


def _label(value: Any) -> str:
    """A short, W&B-safe label: a model path or hub id by its last part, at most 64 characters."""
    text = str(value).rstrip("/").split("/")[-1] or str(value)
    return text[:64]


def _lm_label(cfg: DictConfig) -> str:
    lm = cfg.get("lm") or {}
    return _label(lm.get("name") or lm.get("model") or "lm")


def _default_group(cfg: DictConfig) -> str:
    hc = _hydra_config()
    if _is_multirun(hc):
        # multirun/<task>/<experiment>/<timestamp>: the experiment and the timestamp name the sweep
        sweep = Path(str(hc.sweep.dir).rstrip("/"))
        return "-".join(p for p in (sweep.parent.name, sweep.name) if p) or "multirun"
    return f"{cfg.task.name}-{_lm_label(cfg)}-{cfg.ablation.name}"


def _default_name(cfg: DictConfig) -> str:
    return f"{cfg.ablation.name}-seed{cfg.seed}"


def _tags(cfg: DictConfig, extra: Sequence[str]) -> list[str]:
    tags = [_label(cfg.task.name), _lm_label(cfg), _label(cfg.ablation.name), f"seed={cfg.seed}",
            *(str(t)[:64] for t in extra)]
    return list(dict.fromkeys(tags))   # in order, once each


def _user_env(key: str) -> Optional[str]:
    """The variable's value if the user exported it (not a value this module set), else None."""
    value = os.environ.get(key)
    return None if not value or value == _OWN_ENV.get(key) else value


def _import_wandb():
    """wandb, or an ImportError that names the fix."""
    try:
        import wandb   # optional (pip install wandb) and slow to import: only for a run that logs
    except ImportError as exc:
        raise ImportError(f"logger=wandb needs the wandb package, which cannot be imported ({exc}). "
                          "Fix: pip install wandb, or pass logger=none.") from exc
    return wandb


def _sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live WAL database (sqlite's online backup; nothing of the archive is
    closed), as one self-contained file: rollback journal, so it opens read-only after a download."""
    source = sqlite3.connect(str(src), timeout=30)   # read only; closing it checkpoints nothing (the archive is open)
    try:
        target = sqlite3.connect(str(dst))
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()

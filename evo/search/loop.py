"""Algorithm 1: the EvoPrompting meta-learning loop, resumable from the archive at any point.

    P <- seeds (evaluated like any child; never part of the history G)
    for t in 0..T-1:
        C     <- CROSSMUT(LM_theta, P, m, k, n)    evo.search.crossmut
        [C   <- the share of C the surrogate ranks best; surrogate=cole only]   evo.search.surrogate
        C_ev  <- FILTERANDEVAL(C, alpha)           evo.search.filter_eval (children run in the sandbox)
        G     <- G + C_ev                          evo.archive (children with status ok)
        if t < T-1:                                (done at the start of round t+1)
            P     <- GETTOP(G, p)                  evo.search.selection
            theta <- TRAIN(theta, C_ev \\ P)       evo.search.tuning (soft prompt; skipped by ablation=no_prompt_tuning)
    return GETTOP(G, p)

Every step is written to the archive before the next one starts, and every random choice is
seeded by (seed, round, prompt, attempt), so a run killed at any moment and started again with
the same run folder continues where it stopped and ends as if it had never stopped. Children are
evaluated by the evaluator (evo.search.evaluators: local sandboxed processes, or SLURM jobs) while the LM
keeps sampling, so LM time and training time overlap; each result is recorded as soon as it comes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import shutil
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from tqdm.auto import tqdm

from evo import outcome
from evo.archive import Archive, Child
from evo.search.crossmut import CrossMut
from evo.search.evaluators import LocalEvaluator
from evo.search.filter_eval import FilterAndEval
from evo.search.program import code_hash
from evo.search.prompt import Example, training_text
from evo.search.surrogate import NoSurrogate
from evo.search.tuning import SoftPromptTuner

log = logging.getLogger(__name__)


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (str hash is salted per process, so not that)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass
class SearchSettings:
    rounds: int
    prompts_per_round: int
    seed: int = 0
    progress: bool = True


@dataclass
class EvoPrompting:
    settings: SearchSettings
    task: object
    crossmut: CrossMut
    selection: Callable
    evaluate: FilterAndEval
    archive: Archive
    lm_factory: Callable[[], object]   # loads the LM on first use: a finished run never loads it
    evaluator: object = None           # evo.search.evaluators.LocalEvaluator (default: one worker) or SlurmEvaluator
    tuning: Optional[object] = None    # evo.search.tuning.PromptTuningConfig; None: no soft prompt tuning (ablation)
    run_dir: Optional[Path] = None     # where each round's soft prompt is saved (soft_prompt/round_<t>)
    on_round: Optional[Callable[[int], None]] = None   # after each finished round (-1: seeds), e.g. the logger
    surrogate: object = None           # evo.search.surrogate.ColeSurrogate, or None / NoSurrogate: train every child
    _lm: Optional[object] = field(default=None, init=False)
    _tuner: Optional[object] = field(default=None, init=False)
    _prompt_round: Optional[int] = field(default=None, init=False)   # the soft prompt the LM samples with now
    _submitted: set = field(default_factory=set, init=False)
    _aborting: bool = field(default=False, init=False)

    def __post_init__(self):
        if self.evaluator is None:
            self.evaluator = LocalEvaluator(workers=1)
        if self.surrogate is None:
            self.surrogate = NoSurrogate()

    @property
    def lm(self):
        if self._lm is None:
            self._lm = self.lm_factory()
        return self._lm

    # -- evaluation: the evaluator runs each child in a sandbox (here or on SLURM) ----------------
    def _submit(self, children: list[Child], bar) -> list[Future]:
        """Send the not yet submitted pending children to the evaluator. Each returned future is done
        once that child's result is in the archive."""
        batch = [c for c in children if c.id not in self._submitted and c.status in (outcome.PENDING, outcome.SKIPPED)]
        if not batch:
            return []
        self._submitted.update(c.id for c in batch)
        bar.total = (bar.total or 0) + len(batch)
        bar.refresh()
        recorded = []
        for child, fut in zip(batch, self.evaluator.submit([(c.id, c.code) for c in batch])):
            done: Future = Future()
            fut.add_done_callback(lambda f, child=child, done=done: self._record(child, f, done, bar))
            recorded.append(done)
        return recorded

    def _record(self, child: Child, fut: Future, done: Future, bar) -> None:
        try:
            # An interrupted search killed its running children: their "failures" are not results.
            if not self._aborting and not fut.cancelled():
                self.archive.record_result(child.id, **fut.result().as_dict())
            done.set_result(None)
        except BaseException as exc:  # noqa: BLE001  a bug in our own evaluation code: _wait re-raises it
            done.set_exception(exc)
        bar.update(1)

    def _on_submit(self, child_id: int, detail: dict) -> None:
        self.archive.log_event("eval_started", child_id=child_id, detail=detail)

    def _unrecorded_jobs(self) -> dict[int, dict]:
        """Pending children that a previous process sent to an evaluator, with the last submission's
        detail (a SLURM job id): the SLURM evaluator waits for those jobs instead of starting new ones."""
        return self.archive.unrecorded_submissions()

    @staticmethod
    def _wait(futures: list[Future]) -> None:
        for f in futures:
            f.result()  # re-raises a bug in our own evaluation code; child failures are statuses

    # -- Algorithm 1 ------------------------------------------------------------------------------
    def run(self) -> None:
        self.evaluator.start(self.evaluate, self.run_dir or Path("."), on_submit=self._on_submit,
                             resume=self._unrecorded_jobs())
        try:
            self._seed_population()
            if self.surrogate.train_skipped:
                self._train_skipped()
            for t in range(self.settings.rounds):
                if self.archive.round_finished(t):
                    continue
                self._round(t)
        except BaseException:
            # Ctrl-C, a SLURM preemption (submitit's SystemExit), or a bug: what is recorded stays, the
            # children running now are stopped and not recorded; a restart evaluates them again.
            self._aborting = True
            self.evaluator.close(abort=True)
            raise
        self.evaluator.close()

    def _seed_population(self) -> None:
        known = self.archive.seed_ids()
        for name, code in self.task.seed_programs().items():
            if name not in known:
                self.archive.insert_child(round=-1, seed_name=name, code=code, code_hash=code_hash(code))
        pending = self.archive.pending(-1)
        if pending:
            bar = self._bar("seeds: evaluating", total=0, unit="child")
            self._wait(self._submit(pending, bar))
            bar.close()
        if self.on_round is not None:
            self.on_round(-1)

    def _train_skipped(self) -> None:
        """surrogate.train_skipped=true: train the children the surrogate skipped in earlier runs."""
        skipped = self.archive.children(status=outcome.SKIPPED)
        if skipped:
            log.info("training %d children the surrogate skipped", len(skipped))
            bar = self._bar("skipped children: evaluating", unit="child")
            self._wait(self._submit(skipped, bar))
            bar.close()

    def _trainable(self, t: int) -> list[Child]:
        """Round t's pending children that may be trained now: all of them, or with the surrogate on,
        those it has screened in (the others wait for the screening at the end of sampling)."""
        if not self.surrogate.active:
            return self.archive.pending(t)
        return self.archive.children(round=t, status=outcome.PENDING, screening=("train", "explore", "all"))

    def _screen(self, t: int) -> None:
        """The surrogate's step: after sampling, the static checks, then rank the rest and record the
        decision (and a skip's status) for each, all in one transaction."""
        fresh = self.archive.children(round=t, status=outcome.PENDING, screening=None)
        if not fresh:
            return
        ranked = []
        with self.archive.transaction():
            for child in fresh:   # Algorithm 3's static stage first (filter_eval.STAGES): nothing to rank that cannot run
                failed = self.evaluate.static(child.code)
                if failed is not None:
                    self.archive.record_result(child.id, status=failed.status, reason=failed.reason, eval_seconds=0.0)
                else:
                    ranked.append(child)
        rng = random.Random(derive_seed(self.settings.seed, "surrogate", t))
        t0 = time.time()
        screened = self.surrogate.screen(self.archive, ranked, rng)
        with self.archive.transaction():
            for s in screened:
                self.archive.set_screening(s.child_id, s.predicted, s.decision)
                if s.decision == "skip":
                    self.archive.record_result(s.child_id, status=outcome.SKIPPED, reason=(
                        f"predicted {self.surrogate.target} {s.predicted:.3f}: outside the trained share"))
            counts = {d: sum(s.decision == d for s in screened) for d in ("train", "explore", "skip", "all")}
            self.archive.log_event("surrogate_screened", round=t, detail={**counts, "seconds": time.time() - t0})
        log.info("round %d: surrogate trains %d (+%d exploring) of %d children, skips %d", t, counts["train"] + counts["all"],
                 counts["explore"], len(screened), counts["skip"])

    def _population(self, t: int) -> tuple[list[int], str]:
        """The parents of round t: the seeds for round 0, then GETTOP of the history."""
        stored = self.archive.round_parents(t)
        if stored is not None:
            return stored, "stored"
        # Every seed that trained is a round-0 parent, even one above the alpha threshold: the seeds are
        # the hand-designed starting population, scored but not filtered (they never enter G).
        seeds = [c.id for c in self.archive.children(round=-1, status=outcome.WORKING)]
        if t == 0:
            parents, how = seeds, "seeds"
        else:
            rng = random.Random(derive_seed(self.settings.seed, "select", t))
            chosen = self.selection(self.archive.history(), self.archive.retired(), rng)
            parents, how = [c.id for c in chosen], getattr(self.selection, "name", "selection")
            if not parents:
                # [not in paper] nothing scored yet (or all retired): prompt with the previous parents again
                parents, how = self.archive.round_parents(t - 1) or seeds, "fallback_previous"
                log.warning("round %d: no unretired scored child to select; reusing the previous parents", t)
        if not parents:
            raise RuntimeError("no seed program trained successfully, so there is nothing to prompt with; "
                               "check the seeds with `python -m evo.evaluate child_file=seeds/...`")
        self.archive.start_round(t, parents, how)
        return parents, how

    def _round(self, t: int) -> None:
        parent_ids, _ = self._population(t)
        if t > 0:
            self._tune(t - 1, parent_ids)
        population = [self._example(self.archive.get(i)) for i in parent_ids]
        m, n = self.settings.prompts_per_round, self.crossmut.samples_per_prompt
        round_label = f"round {t + 1}/{self.settings.rounds}"
        eval_bar = self._bar(f"{round_label} evaluating", unit="child", position=1)
        futures = self._submit(self._trainable(t), eval_bar)  # left over from a killed run
        sample_bar = self._bar(f"{round_label} sampling", total=m * n, unit="sample", position=0)
        for j in range(m):
            futures += self._prompt(t, j, population, eval_bar, sample_bar)
        sample_bar.close()
        if self.surrogate.active:
            self._screen(t)
        futures += self._submit(self._trainable(t), eval_bar)
        self._wait(futures)
        eval_bar.close()
        self.archive.finish_round(t)
        self.archive.log_event("round_finished", round=t)
        if self.on_round is not None:
            self.on_round(t)

    def _prompt(self, t: int, j: int, population: list[Example], eval_bar, sample_bar) -> list[Future]:
        n = self.crossmut.samples_per_prompt
        row = self.archive.prompt_row(t, j)
        if row is not None and row["complete"]:
            sample_bar.update(n)
            return []
        rng = random.Random(derive_seed(self.settings.seed, "prompt", t, j))
        parents = self.crossmut.choose_parents(population, rng)
        prompt, target = self.crossmut.make_prompt(self.task, parents)
        parent_ids = [p.child_id for p in parents]
        prompt_id = row["id"] if row else self.archive.insert_prompt(t, j, parent_ids, target, prompt)
        futures = []
        attempt = self.archive.prompt_attempts(prompt_id) + 1
        count = n if attempt == 0 else self._copies(prompt_id, attempt - 1)
        while count and attempt <= self.crossmut.resample_copies:
            soft_prompt_round = self._use_soft_prompt(t)
            temps = self.crossmut.draw_temperatures(
                count, random.Random(derive_seed(self.settings.seed, "temps", t, j, attempt)))
            samples = self.crossmut.sample(self.lm, self.task, prompt, temps,
                                           seed=derive_seed(self.settings.seed, "lm", t, j, attempt),
                                           known=self._known_programs())
            with self.archive.transaction():  # a batch is stored whole or not at all
                for i, s in enumerate(samples):
                    c = s.completion
                    self.archive.insert_child(
                        round=t, code=s.code, code_hash=s.code_hash, prompt_id=prompt_id, sample_index=i,
                        attempt=attempt, parents=parent_ids, prompt=prompt, temperature=c.temperature,
                        raw_completion=c.text, repairs=s.repairs, stop_reason=c.stop_reason,
                        lm_name=self.lm.name, tokens_in=c.tokens_in, tokens_out=c.tokens_out, lm_seconds=c.seconds,
                        soft_prompt_round=soft_prompt_round)
            if attempt == 0:
                sample_bar.update(len(samples))
            futures += self._submit(self._trainable(t), eval_bar)
            count = self._copies(prompt_id, attempt)
            attempt += 1
        self.archive.complete_prompt(prompt_id)
        return futures

    def _known_programs(self) -> list[str]:
        """Every distinct program the run holds, for crossmut.avoid_known (the same on resume: a batch is
        stored whole before the next is drawn)."""
        if not self.crossmut.avoid_known:
            return []
        return list({r["code_hash"]: r["code"] for r in self.archive.rows(["code_hash", "code"])}.values())

    def _copies(self, prompt_id: int, attempt: int) -> int:
        return self.archive.count(prompt_id=prompt_id, attempt=attempt, status=outcome.DUPLICATE)

    # -- Algorithm 1 line 11: theta_{t+1} <- TRAIN(theta_t, C_ev \ P) ------------------------------------
    @property
    def tuner(self):
        if self._tuner is None:
            self._tuner = SoftPromptTuner(self.lm, self.tuning, seed=derive_seed(self.settings.seed, "soft_prompt"))
        return self._tuner

    def _use_soft_prompt(self, t: int) -> Optional[int]:
        """Put the LM in the state round t samples with: the newest soft prompt saved before round t
        (None: the base LM). On resume this reloads it from the run folder."""
        if self.tuning is None:
            return None
        r, folder = self.archive.latest_adapter(t)
        if r != self._prompt_round:
            if r is None:
                self.tuner.deactivate()
            else:
                self.tuner.load(self.run_dir / folder)
                self.tuner.activate()
            self._prompt_round = r
        return r

    def _tune(self, t: int, next_parents: list[int]) -> None:
        """TRAIN after round t on C_ev \\ P: round t's scored children that were not just chosen as
        the parents of round t+1. Continues from the soft prompt round t sampled with."""
        if self.tuning is None or self.archive.tuned(t):
            return
        self._use_soft_prompt(t)   # theta_t (reloaded after a kill)
        chosen = set(next_parents)
        data = [c for c in self.archive.children(round=t, status=outcome.OK) if c.id not in chosen]
        texts = [training_text(self.task.prelude, self._example(c), self.task.entry) for c in data]
        if not texts:   # theta_{t+1} = theta_t
            log.warning("round %d: no scored child outside the new parents, so the soft prompt is not trained "
                        "(round %d samples with the same prompt as round %d)", t, t + 1, t)
            self.archive.record_tuning(t, children=[], texts=0, tokens=0, step_losses=[], epoch_losses=[],
                                       seconds=0.0, adapter=None)
            return
        bar = self._bar(f"round {t + 2}/{self.settings.rounds} soft prompt tuning on {len(texts)} programs",
                        total=self.tuning.epochs * math.ceil(len(texts) / self.tuning.batch_size), unit="step")
        step_losses = self.tuner.train(texts, seed=derive_seed(self.settings.seed, "tune", t),
                                       on_step=lambda loss: bar.update(1))
        bar.close()
        summary = self.tuner.history[-1]
        folder = Path("soft_prompt") / f"round_{t}"
        if summary["finite"]:
            final, tmp = self.run_dir / folder, self.run_dir / folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            self.tuner.save(tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)   # a kill leaves either no folder or a whole one
            self.tuner.activate()
            self._prompt_round = t
        else:   # a diverged prompt is not kept: the next round samples with the previous one
            log.warning("round %d: soft prompt tuning diverged (non-finite loss); keeping the previous prompt", t)
            self.tuner.reset()         # base LM now; _use_soft_prompt reloads the previous prompt, if any
            self._prompt_round = None
        self.archive.record_tuning(t, children=[c.id for c in data], texts=summary["texts"], tokens=summary["tokens"],
                                   step_losses=step_losses, epoch_losses=summary["epoch_losses"],
                                   seconds=summary["seconds"], adapter=str(folder) if summary["finite"] else None)
        log.info("round %d: soft prompt tuned on %d programs in %.0f s, loss %.3f -> %.3f", t, summary["texts"],
                 summary["seconds"], summary["epoch_losses"][0], summary["epoch_losses"][-1])

    @staticmethod
    def _example(child: Child) -> Example:
        return Example(code=child.code, num_params=child.num_params, val_accuracy=child.val_accuracy,
                       child_id=child.id)

    # -- progress ---------------------------------------------------------------------------------
    def _bar(self, desc: str, total: Optional[int] = None, unit: str = "it", position: int = 0) -> tqdm:
        """A progress bar; with ``progress=false`` tqdm's own no-op bar (``disable``), so callers never check."""
        return tqdm(total=total, desc=desc, unit=unit, position=position, leave=True, dynamic_ncols=True,
                    disable=not self.settings.progress)

"""Running real tiny searches from tests: the `python -m evo.run` command line and archive reads."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A search small enough for a test: 2 rounds x 2 prompts x 3 samples, children trained 40 steps.
TINY = ("lm.max_new_tokens=60", "search.rounds=2", "search.prompts_per_round=2", "crossmut.samples_per_prompt=3",
        "task.train_steps=40", "task.eval_every=20", "selection.survivors=2", "progress=false")

# Settings under which the tiny LM writes several new children that train (alpha=1 keeps every one
# that trains; copies are resampled), so a round leaves programs to tune the soft prompt on.
TUNABLE = ("lm.max_new_tokens=150", "search.rounds=2", "search.prompts_per_round=2", "crossmut.samples_per_prompt=4",
           "crossmut.resample_copies=3", "search.alpha=1.0", "task.train_steps=40", "task.eval_every=20",
           "selection.survivors=1", "soft_prompt.epochs=5", "progress=false")

# The paper's ablation presets (conf/ablation/), the choices of one --multirun in the tests.
ABLATIONS = ("none", "no_prompt_tuning", "random_parents", "naive_fewshot")


def search_cmd(run_dir, lm_dir, cache_dir, *extra, settings=TINY, multirun=False):
    where = f"hydra.sweep.dir={run_dir}" if multirun else f"hydra.run.dir={run_dir}"
    return [sys.executable, "-m", "evo.run", *(["--multirun"] if multirun else []), "lm=hf", f"lm.model={lm_dir}",
            *settings, where, f"cache_dir={cache_dir}", *extra]


def rows(run_dir, sql, args=()):
    db = sqlite3.connect(Path(run_dir) / "archive.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, args)]
    finally:
        db.close()


@dataclass(frozen=True)
class Search:
    """A finished real search: its run folder, the cache it used, and what the command printed."""
    run_dir: Path
    cache: Path
    stdout: str


def run_search(base, lm_dir, *extra, settings=TINY, timeout=900) -> Search:
    """Run `python -m evo.run` to its end in base/run (cache base/cache); fails the caller on a non-zero exit."""
    run_dir, cache = Path(base) / "run", Path(base) / "cache"
    r = subprocess.run(search_cmd(run_dir, lm_dir, cache, *extra, settings=settings), cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return Search(run_dir, cache, r.stdout)


@dataclass(frozen=True)
class Sweep:
    """A finished real --multirun over the ablations: each ablation's run folder, and the cache they shared."""
    runs: dict
    cache: Path


def run_ablation_sweep(base, lm_dir, settings=TUNABLE, timeout=1500) -> Sweep:
    """`python -m evo.run --multirun ablation=none,no_prompt_tuning,random_parents,naive_fewshot` in base/sweep."""
    sweep, cache = Path(base) / "sweep", Path(base) / "cache"
    r = subprocess.run(search_cmd(sweep, lm_dir, cache, "ablation=" + ",".join(ABLATIONS), settings=settings,
                                  multirun=True), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = {}
    for job in sweep.iterdir():
        if (job / "archive.sqlite").exists():
            overrides = (job / ".hydra" / "overrides.yaml").read_text()
            runs[next(a for a in ABLATIONS if f"ablation={a}\n" in overrides + "\n")] = job
    return Sweep(runs, cache)

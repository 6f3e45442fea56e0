"""Running real tiny searches from tests: the `python -m evo.run` command line and archive reads."""

from __future__ import annotations

import sqlite3
import sys
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

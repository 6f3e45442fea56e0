"""Datasets of evaluated children (evo.dataset) and the surrogate's prior: a real tiny search is
exported, read back, refused when its training protocol differs, and used to warm-start COLE in
another real search."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest

from evo.analysis import dataset

from evo import outcome
from evo.archive import Archive
from evo.archive.runs import read_dataset, read_trained, trained_programs
from runs import REPO, rows, search_cmd

pytestmark = pytest.mark.slow   # a shared tiny search, two more with COLE (the fast tier: -m 'not slow')


@pytest.fixture(scope="module")
def run_a(tiny_search_alpha1):
    """A real tiny search that keeps every child that trains (alpha=1); run once per session and shared with
    test_lineage (conftest.py), so only read here."""
    return tiny_search_alpha1.run_dir


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "evo.dataset", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_export_holds_each_evaluated_program_once_and_reads_back(run_a, tmp_path):
    out = tmp_path / "children.jsonl.gz"
    r = _cli(run_a, "--out", out)
    assert r.returncode == 0, r.stderr
    header, data = read_dataset(out)
    archive_rows = rows(run_a, "SELECT code_hash, status FROM children")
    evaluated = {x["code_hash"] for x in archive_rows if x["status"] in dataset.EVALUATED}
    # Every program that went through the sandbox or the static checks, once; no copies, no pending.
    assert [x["code_hash"] for x in data] == list(dict.fromkeys(x["code_hash"] for x in data))
    assert {x["code_hash"] for x in data} == evaluated
    assert header["children"] == len(data) and header["protocol"]["train_steps"] == 40
    assert header["trained"] == sum(x["status"] in outcome.WORKING for x in data) > 0
    # The trained programs are the archive's, with the same scores: the prior and the report read either.
    archive = Archive(run_a / "archive.sqlite", readonly=True)
    try:
        from_archive = {x["code_hash"]: (x["num_params"], x["val_accuracy"]) for x in trained_programs(archive)}
    finally:
        archive.close()
    assert {x["code_hash"]: (x["num_params"], x["val_accuracy"]) for x in read_trained(out)} == from_archive
    # Reproducible: the same runs give the same bytes.
    again = tmp_path / "again.jsonl.gz"
    assert _cli(run_a, "--out", again).returncode == 0
    assert again.read_bytes() == out.read_bytes()
    shown = _cli("--show", out)
    assert shown.returncode == 0 and f"{header['children']} evaluated children" in shown.stdout


def _with_train_steps(run_dir, tmp_path, steps: int):
    """A copy of a run whose stored settings say its children trained ``steps`` steps."""
    copy = tmp_path / f"steps_{steps}"
    copy.mkdir()
    shutil.copy(run_dir / "archive.sqlite", copy / "archive.sqlite")
    db = sqlite3.connect(copy / "archive.sqlite")
    fp = json.loads(db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()[0])
    fp["task"]["train_steps"] = steps
    db.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (json.dumps(fp),))
    db.commit()
    db.close()
    return copy


def test_runs_of_another_training_protocol_are_refused(run_a, tmp_path):
    other = _with_train_steps(run_a, tmp_path, 80)
    r = _cli(run_a, other, "--out", tmp_path / "mixed.jsonl.gz")
    assert r.returncode == 2 and "train_steps" in r.stderr and not (tmp_path / "mixed.jsonl.gz").exists()
    r = _cli(run_a, "--out", tmp_path / "children.csv")
    assert r.returncode == 2 and ".jsonl.gz" in r.stderr


def test_prior_of_another_protocol_fails_before_compute(run_a, tiny_lm_dir, tmp_path):
    other = _with_train_steps(run_a, tmp_path, 80)
    run_dir = tmp_path / "run"
    r = subprocess.run(search_cmd(run_dir, tiny_lm_dir, tmp_path / "cache", "surrogate=cole",
                                  f"surrogate.prior=[{other}]"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "surrogate.prior" in r.stderr and "train_steps: 80 there, 40 here" in r.stderr
    assert not (run_dir / "archive.sqlite").exists()


def test_prior_lets_the_surrogate_rank_from_the_first_round(run_a, tiny_lm_dir, tmp_path):
    """min_history is above the new run's own trained seeds, so without a prior round 0 trains all;
    the prior's trained programs fill the history, and round 0 is ranked."""
    prior = tmp_path / "prior.jsonl.gz"
    assert _cli(run_a, "--out", prior).returncode == 0
    prior_trained = read_trained(prior)
    own_seeds = 4
    assert len(prior_trained) > own_seeds, "the tiny search trained no child of its own"
    run_dir = tmp_path / "run"
    r = subprocess.run(search_cmd(run_dir, tiny_lm_dir, tmp_path / "cache", "seed=1", "search.alpha=1.0",
                                  "search.rounds=1", "surrogate=cole", f"surrogate.min_history={own_seeds + 1}",
                                  "surrogate.explore_fraction=0", f"surrogate.prior=[{prior}]"),
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    decisions = [c["surrogate"] for c in rows(run_dir, "SELECT surrogate FROM children WHERE round = 0 "
                                                       "AND surrogate IS NOT NULL")]
    assert decisions and "all" not in decisions and "train" in decisions
    # The head learned from the prior's programs: their embeddings are in this run's cache.
    cached = {x["code_hash"] for x in rows(run_dir, "SELECT code_hash FROM embeddings")}
    assert {x["code_hash"] for x in prior_trained} <= cached

"""The COLE surrogate in the search loop: a real tiny search with surrogate=cole (real MiniLM embeddings,
a real ridge head) trains only the share it ranks best, records every prediction and decision, and
a later run with surrogate.train_skipped=true trains what it skipped, each child once."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from runs import REPO, rows, search_cmd

COLE = ("surrogate=cole", "surrogate.min_history=2", "surrogate.train_fraction=0.5", "surrogate.explore_fraction=0",
        "search.alpha=1.0")


@pytest.mark.slow
def test_surrogate_trains_the_predicted_best_half_and_records_predictions(tiny_lm_dir, tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    r = subprocess.run(search_cmd(run_dir, tiny_lm_dir, cache, *COLE), cwd=REPO, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    children = rows(run_dir, "SELECT * FROM children WHERE round >= 0 AND status != 'duplicate' ORDER BY id")
    screened = [c for c in children if c["surrogate"] is not None]
    # Static-check failures are recorded before ranking and never screened.
    assert all(c["status"] in ("syntax_error", "forbidden") for c in children if c["surrogate"] is None)
    assert len(screened) >= 2, "the tiny LM wrote too few programs that pass the static checks to rank"
    for t in sorted({c["round"] for c in screened}):
        ranked = [c for c in screened if c["round"] == t]
        trained = [c for c in ranked if c["surrogate"] == "train"]
        skipped = [c for c in ranked if c["surrogate"] == "skip"]
        assert len(trained) == math.ceil(0.5 * len(ranked)) and len(trained) + len(skipped) == len(ranked)
        # The trained ones are the ones predicted best, and every decision keeps its prediction.
        assert min(c["predicted"] for c in trained) >= max((c["predicted"] for c in skipped), default=-math.inf)
        assert all(c["status"] == "skipped_by_surrogate" and c["num_params"] is None for c in skipped)
        assert all(c["status"] != "skipped_by_surrogate" and c["status"] != "pending" for c in trained)
    # Predicted and true values side by side for every trained child.
    assert all(c["predicted"] is not None for c in screened)
    trained_ok = [c for c in screened if c["status"] in ("ok", "filtered")]
    assert all(c["num_params"] and c["val_accuracy"] is not None for c in trained_ok)
    # Embeddings are cached by code hash: every screened program and every trained one the head saw.
    cached = {r["code_hash"] for r in rows(run_dir, "SELECT code_hash FROM embeddings WHERE embedder = 'minilm'")}
    assert {c["code_hash"] for c in screened} <= cached
    assert not rows(run_dir, "SELECT child_id FROM events WHERE kind = 'evaluated' AND child_id IN "
                             "(SELECT id FROM children WHERE status = 'skipped_by_surrogate')")
    screens = [json.loads(e["detail"]) for e in rows(run_dir, "SELECT detail FROM events WHERE kind = 'surrogate_screened'")]
    assert screens and all(s["seconds"] >= 0 for s in screens)

    # Later, on demand: train what was skipped. Each child is evaluated once, none twice.
    skipped_ids = [c["id"] for c in screened if c["surrogate"] == "skip"]
    assert skipped_ids, "precondition: the surrogate skipped no child, so there is nothing to train later"
    r = subprocess.run(search_cmd(run_dir, tiny_lm_dir, cache, *COLE, "surrogate.train_skipped=true"), cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    after = {c["id"]: c for c in rows(run_dir, "SELECT * FROM children")}
    assert all(after[i]["status"] not in ("skipped_by_surrogate", "pending") for i in skipped_ids)
    evaluated = rows(run_dir, "SELECT child_id, COUNT(*) AS n FROM events WHERE kind = 'evaluated' GROUP BY child_id")
    # Now every program is evaluated, once: the skipped ones too (only duplicates never are).
    assert {e["child_id"]: e["n"] for e in evaluated} == {i: 1 for i, c in after.items() if c["status"] != "duplicate"}

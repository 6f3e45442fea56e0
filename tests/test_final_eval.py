"""`python -m evo.final_eval`: the paper's final CLRS evaluation. Checks before compute, the published
Table 3 as data, and one real end-to-end run (tiny BFS: a child and the v1 baseline, each trained in the
sandbox) that writes the tables and plot and resumes without evaluating anything twice."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from evo.tasks.clrs import published
from evo.tasks.clrs.task import CLRS30

REPO = Path(__file__).resolve().parents[1]

# A CLRS setting small enough for a test (as in test_clrs_search.py): BFS on 5-node graphs, hidden 16,
# 4 training steps; "OOD" here is size 8.
TINY = ("task.train_lengths=[5]", "task.train_samples=16", "task.val_length=5", "task.val_samples=8",
        "task.test_length=8", "task.test_samples=8", "task.train_steps=4", "task.batch_size=4",
        "task.eval_batch_size=8", "task.hidden_dim=16", "task.eval_every=2")


def final_eval(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "evo.final_eval", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_published_table_is_the_papers():
    assert set(published.TABLE3) == set(CLRS30) and len(published.TABLE3) == 30
    bfs = published.TABLE3["bfs"]
    assert (bfs.best_model, bfs.size_best, bfs.size_base) == ("MAXMEAN", 522931, 523963)
    assert (bfs.new_mean, bfs.own_base_mean, bfs.ibarz_mean, bfs.ibarz_sd) == (99.99, 99.80, 99.73, 0.04)
    assert published.TABLE3["heapsort"].new_mean == 69.90 and published.TABLE3["heapsort"].ibarz_mean == 31.04
    assert round(published.average("ibarz_mean"), 2) == published.IBARZ_AVERAGE == 75.98
    assert sum(r.best_model == "Baseline" for r in published.TABLE3.values()) == 9   # "best on 21 of 30"


@pytest.mark.slow   # dm-clrs imports tensorflow (~6 s)
def test_published_table_names_are_dm_clrs_own():
    # The keys are dm-clrs's own names (a subprocess: dm-clrs imports tensorflow).
    names = subprocess.run([sys.executable, "-c", "import clrs, json; print(json.dumps(sorted(clrs.CLRS_30_ALGS_SETTINGS)))"],
                           capture_output=True, text=True, timeout=300)
    assert names.returncode == 0, names.stderr[-2000:]
    assert json.loads(names.stdout.strip().splitlines()[-1]) == sorted(CLRS30)


@pytest.mark.parametrize("override, key, hint", [
    ("final_eval.algorithms=[bfs,dfss]", "final_eval.algorithms", "dfss -> dfs"),
    ("final_eval.algorithms=bellmanford", "final_eval.algorithms", "bellman_ford"),
    ("final_eval.train_seeds=0", "final_eval.train_seeds", ""),
    ("task=mnist1d", "task=", "task=clrs"),
    ("final_eval.baseline=missing.py", "final_eval.baseline", "readable"),
])
def test_bad_options_fail_before_compute(tmp_path, override, key, hint):
    r = final_eval("child_file=seeds/clrs/v1.py", override, f"cache_dir={tmp_path / 'cache'}",
                   f"final_eval.out_dir={tmp_path / 'out'}", timeout=120)
    assert r.returncode == 2 and key in r.stderr and "Fix:" in r.stderr and hint in r.stderr, r.stderr[-2000:]
    if key == "final_eval.algorithms":   # the valid names are listed
        assert "strongly_connected_components" in r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()   # nothing generated or trained


@pytest.mark.slow
def test_final_eval_end_to_end_and_resume(tmp_path):
    # The child: v1 with the sum instead of the max over triplets (same size, another program).
    v1 = (REPO / "seeds" / "clrs" / "v1.py").read_text()
    child = tmp_path / "v1_sum.py"
    child.write_text(v1.replace("jnp.max(triplets, axis=1)", "jnp.sum(triplets, axis=1)"))
    out = tmp_path / "out"
    args = [f"child_file={child}", "final_eval.algorithms=[bfs]", "final_eval.train_seeds=1",
            f"final_eval.out_dir={out}", f"cache_dir={tmp_path / 'cache'}", "progress=false", *TINY]
    r = final_eval(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 to run" in r.stdout and str(out / "results.md") in r.stdout
    lines = (out / "results.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert sorted(x["role"] for x in records) == ["baseline", "child"]
    for rec in records:   # both trained (the alpha filter sets the status only): scores recorded
        assert rec["algorithm"] == "bfs" and rec["train_seed"] == 0 and rec["status"] in ("ok", "filtered"), rec
        assert 0 <= rec["test_accuracy"] <= 1 and rec["num_params"] > 0

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["algorithm"] for row in rows] == ["bfs"]
    row = rows[0]
    by_role = {x["role"]: x for x in records}
    assert float(row["ours_mean"]) == pytest.approx(100 * by_role["child"]["test_accuracy"], abs=1e-3)
    assert float(row["baseline_mean"]) == pytest.approx(100 * by_role["baseline"]["test_accuracy"], abs=1e-3)
    assert row["ours_n"] == row["baseline_n"] == "1" and row["ours_sd"] == ""   # one seed: no sd
    assert int(row["ours_params"]) == int(row["baseline_params"]) == by_role["child"]["num_params"]
    assert (float(row["ibarz_mean"]), float(row["paper_new_mean"]), row["paper_best_model"]) == (99.73, 99.99, "MAXMEAN")
    md = (out / "results.md").read_text()
    bfs_line = next(x for x in md.splitlines() if x.startswith("| bfs |"))
    assert f"{float(row['ours_mean']):.2f}" in bfs_line and "99.73 ± 0.04" in bfs_line
    assert "of 1 task(s)" in md and "Summary" in md
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Same command, same out_dir: nothing is evaluated again.
    again = final_eval(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 skipped" in again.stdout and "0 to run" in again.stdout
    assert (out / "results.jsonl").read_text().splitlines() == lines

    # The baseline itself as the child: the same program (by normalised code), already evaluated.
    same = final_eval(*[a if not a.startswith("child_file=") else "child_file=seeds/clrs/v1.py" for a in args])
    assert same.returncode == 0 and "1 skipped" in same.stdout and "0 to run" in same.stdout, same.stdout
    assert len((out / "results.jsonl").read_text().splitlines()) == 2

    # Other task settings in the same out_dir are refused before compute.
    other = final_eval(*args, "task.train_steps=8", timeout=120)
    assert other.returncode == 2 and "task.train_steps" in other.stderr and "final_eval.out_dir" in other.stderr

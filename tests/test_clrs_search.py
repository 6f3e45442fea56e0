"""`python -m evo.run task=clrs`: the CLRS search composes, validates before compute, and runs for real
(tiny LM, tiny BFS, children trained a few steps in the sandbox) with the same archive and summary as
MNIST-1D."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from evo import outcome
from evo.config import ConfigError, validate
from runs import REPO, rows, search_cmd

# A CLRS setting small enough for a test: BFS on 5-node graphs, hidden 16, children trained 4 steps.
TINY_CLRS = ("task=clrs", "task.algorithm=bfs", "task.train_lengths=[5]", "task.train_samples=16", "task.val_length=5",
             "task.val_samples=8", "task.test_length=8", "task.test_samples=8", "task.train_steps=4",
             "task.batch_size=4", "task.eval_batch_size=8", "task.hidden_dim=16", "task.eval_every=2")
SEARCH = ("lm.max_new_tokens=60", "search.rounds=1", "search.prompts_per_round=1", "crossmut.samples_per_prompt=2",
          "search.alpha=1.0", "selection.survivors=2", "progress=false")


def test_card_command_composes_and_names_what_is_missing(cfg_factory):
    cfg = cfg_factory("task=clrs", "lm=codegen")
    assert cfg.task.algorithm == "articulation_points" and cfg.task.train_steps == 2000
    assert list(cfg.task.train_lengths) == [4, 7, 11, 13, 16] and cfg.task.test_length == 64
    validate(cfg, needs_lm=False)   # the task node itself is valid; the LM check follows below
    proc = subprocess.run(["python", "-m", "evo.run", "task=clrs", "lm=codegen", f"cache_dir={cfg.cache_dir}",
                           f"hydra.run.dir={cfg.run_dir}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "codegen-350M-mono" in proc.stderr and "huggingface-cli download" in proc.stderr


@pytest.mark.parametrize("override, key", [("task.algorithm=bfss", "task.algorithm"),
                                           ("task.train_lengths=[2,16]", "task.train_lengths"),
                                           ("task.batch_size=64", "task.batch_size")])
def test_bad_clrs_values_fail_before_compute(cfg_factory, override, key):
    cfg = cfg_factory("task=clrs", "task.train_samples=32", override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        validate(cfg, needs_lm=False)
    assert "Fix:" in str(err.value)


@pytest.mark.slow
def test_clrs_search_runs_end_to_end(tmp_path, tiny_lm_dir):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    v1 = (REPO / "seeds" / "clrs" / "v1.py").read_text()
    (seeds / "v1.py").write_text(v1)
    # A second seed: v1 with the sum instead of the max over triplets.
    (seeds / "v1_sum.py").write_text(v1.replace("jnp.max(triplets, axis=1)", "jnp.sum(triplets, axis=1)"))
    run_dir = tmp_path / "run"
    cmd = search_cmd(run_dir, tiny_lm_dir, tmp_path / "cache", *TINY_CLRS, f"task.seeds_dir={seeds}", settings=SEARCH)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seed_rows = rows(run_dir, "SELECT * FROM children WHERE round = -1 ORDER BY id")
    assert len(seed_rows) == 2 and all(r["status"] == "ok" for r in seed_rows), seed_rows
    # Same processor, same settings: the two seeds differ only in the reduction, so their sizes are equal.
    assert seed_rows[0]["num_params"] == seed_rows[1]["num_params"] > 0
    children = rows(run_dir, "SELECT * FROM children WHERE round = 0")
    assert len(children) == 2
    for c in children:   # each got its final status through the cascade, and says why
        assert c["status"] in {*outcome.WORKING, *outcome.FAILED, outcome.DUPLICATE} and c["reason"], c
    prompt = rows(run_dir, "SELECT prompt FROM prompts")[0]["prompt"]
    assert prompt.count("def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):") == 3
    assert prompt.endswith("    tri_1 =")
    for c in children:   # every child, whatever the LM wrote, is one complete function after the prelude
        assert c["code"].startswith("import haiku as hk\n") and "def get_triplet_msgs(" in c["code"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sorted(s["seed_name"] for s in summary["seeds"]) == ["v1", "v1_sum"]
    assert (run_dir / "summary.md").exists()
    from evo.analysis import lineage   # lineage.html, with CLRS's names for the two scores
    page = lineage.read_page(run_dir / "lineage.html")
    assert page["task"] == "clrs" and page["labels"] == lineage.LABELS["clrs"]
    assert [n["id"] for n in page["nodes"]] == [r["id"] for r in rows(run_dir, "SELECT id FROM children ORDER BY id")]

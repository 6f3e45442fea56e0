"""python -m evo.heldout: each variant's best programs retrained for real (sandbox, JAX) under several
training seeds, resumable from its JSON-lines file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_compare import SWEEP_CFG, make_run

from evo import outcome
from evo.archive import Archive
from evo.analysis.heldout import main

REPO = Path(__file__).resolve().parents[1]
TASK = yaml.safe_load((REPO / "conf" / "task" / "mnist1d.yaml").read_text())
SEEDS = REPO / "seeds" / "mnist1d"
STEPS = ["--steps", "30", "--timeout-s", "300"]


def make_program_run(folder: Path, programs: list[tuple[str, float]], cfg: dict, ablation: str, seed: int) -> Path:
    """A run whose scored children are real programs (seed files) with the given search fitness,
    padded with duplicates to the 24 samples of SWEEP_CFG."""
    make_run(folder, [(1, outcome.DUPLICATE, None, None, None)] * (24 - len(programs)), ablation=ablation, seed=seed,
             extra=cfg)
    a = Archive(folder / "archive.sqlite")
    try:
        for name, fit in programs:
            cid = a.insert_child(round=0, code=(SEEDS / name).read_text(), code_hash=f"{name}-{folder.name}")
            a.record_result(cid, status=outcome.OK, num_params=1000, val_accuracy=0.8, test_accuracy=0.8, fitness=fit)
    finally:
        a.close()
    return folder


@pytest.mark.slow
def test_heldout_retrains_the_best_programs_per_variant_and_resumes(tmp_path, capsys):
    runs = tmp_path / "sweep"
    cfg = {**SWEEP_CFG, "task": {**TASK, "eval_every": 10}, "cache_dir": str(tmp_path / "cache"),
           "sandbox": {"timeout_s": 120, "memory_mb": 4096, "cpu_s": None, "max_file_mb": 64, "threads": 1,
                       "isolation": "auto"}}
    for ablation, seed in (("none", 0), ("none", 1), ("random_parents", 0)):
        # the search's fitness decides: in "none", the CNN of its seed-1 run (-50), then the MLP of seed 0 (-100)
        make_program_run(runs / f"{ablation}_{seed}", [("mlp.py", -100.0 - seed), ("cnn.py", -300.0 + 250 * seed),
                                                        ("gru.py", -900.0)], cfg, ablation, seed)
    out = tmp_path / "heldout"
    assert main([str(runs), "--top", "2", "--train-seeds", "2", "--out", str(out), *STEPS]) == 0
    lines = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * 2 * 2            # 2 variants x 2 programs x 2 training seeds
    assert {(r["variant"], r["code_hash"]) for r in lines} == {
        ("ablation=none", "cnn.py-none_1"), ("ablation=none", "mlp.py-none_0"),
        ("ablation=random_parents", "mlp.py-random_parents_0"), ("ablation=random_parents", "cnn.py-random_parents_0")}
    assert {r["train_seed"] for r in lines} == {0, 1} and {r["steps"] for r in lines} == {30}
    assert all(r["status"] in outcome.WORKING and 0 <= r["test_accuracy"] <= 1 and r["fitness"] < 0 for r in lines)
    # a different training seed trains differently (init and batch order)
    mlp = {r["train_seed"]: r for r in lines if r["code_hash"] == "mlp.py-none_0"}
    assert mlp[0]["num_params"] == mlp[1]["num_params"] == 15210 and mlp[0]["val_accuracy"] != mlp[1]["val_accuracy"]
    table = json.loads((out / "heldout.json").read_text())
    none = next(v for v in table["variants"] if v["variant"] == "ablation=none")
    assert [p["code_hash"] for p in none["programs"]] == ["cnn.py-none_1", "mlp.py-none_0"]   # -50 before -100
    assert none["test_accuracy"]["n"] == 4 and none["programs"][0]["test_accuracy"]["sd"] is not None
    assert "ablation=none: all" in (out / "heldout.md").read_text()
    capsys.readouterr()
    # the same command again: everything is in heldout.jsonl, nothing is trained
    assert main([str(runs), "--top", "2", "--train-seeds", "2", "--out", str(out), *STEPS]) == 0
    assert "8 in " in capsys.readouterr().out and len((out / "heldout.jsonl").read_text().splitlines()) == 8
    # one more training seed of each variant's best program: only those 2 trainings run
    assert main([str(runs), "--top", "1", "--train-seeds", "3", "--out", str(out), *STEPS]) == 0
    assert len((out / "heldout.jsonl").read_text().splitlines()) == 10
    assert json.loads((out / "heldout.json").read_text())["variants"][0]["test_accuracy"]["n"] == 3
    # other sandbox settings in the same folder are refused
    assert main([str(runs), "--top", "2", "--out", str(out), "--steps", "30", "--timeout-s", "200"]) == 2
    assert "under other settings (sandbox differ)" in capsys.readouterr().err


@pytest.mark.slow   # trains programs of two runs
def test_runs_of_two_protocols_are_refused_unless_allowed_and_then_flagged(tmp_path, capsys):
    runs = tmp_path / "sweep"
    base = {**SWEEP_CFG, "task": {**TASK, "eval_every": 10}, "cache_dir": str(tmp_path / "cache")}
    for (ablation, seed), cpu_s in zip((("none", 0), ("random_parents", 0)), (None, 130.0)):
        cfg = {**base, "sandbox": {"timeout_s": 120, "memory_mb": 4096, "cpu_s": cpu_s, "max_file_mb": 64,
                                   "threads": 1, "isolation": "auto"}}
        make_program_run(runs / f"{ablation}_{seed}", [("mlp.py", -100.0)], cfg, ablation, seed)
    out = tmp_path / "heldout"
    assert main([str(runs), "--top", "1", "--train-seeds", "1", "--out", str(out), *STEPS]) == 2
    err = capsys.readouterr().err
    assert "sandbox.cpu_s" in err and "--allow-protocol-mismatch" in err and not out.exists()
    assert main([str(runs), "--top", "1", "--train-seeds", "1", "--out", str(out), *STEPS,
                 "--allow-protocol-mismatch"]) == 0
    assert len((out / "heldout.jsonl").read_text().splitlines()) == 2
    assert "PROTOCOL MISMATCH of the searches (--allow-protocol-mismatch): sandbox.cpu_s differs" in \
        (out / "heldout.md").read_text()

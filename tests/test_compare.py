"""evo.compare: runs grouped into variants, Fig. 2 curves and fronts, the table, and the CLI."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from evo import outcome
from evo.archive import Archive
from evo.analysis.compare import (Run, best_so_far_curve, bootstrap_ci, group_variants, load_run, main, parse_wandb_spec,
                                  run_fitnesses, variant_curve)
from evo.analysis.metrics import top_children
from evo.archive.runs import find_run_folders

REPO = Path(__file__).resolve().parents[1]
SEEDS = [("cnn", 5000, 0.80, 0.79), ("mlp", 20000, 0.70, 0.69)]   # name, params, val acc, test acc


def config_of(ablation="none", seed=0, task="mnist1d"):
    return {"seed": seed, "task": {"name": task, "train_steps": 40}, "ablation": {"name": ablation},
            "lm": {"name": "tiny"}, "experiment_name": "default"}


def make_run(folder: Path, children, *, overrides=(), ablation="none", seed=0, task="mnist1d",
             meta=True, hydra=False, seeds=SEEDS, extra=None) -> Path:
    """A real archive: ``seeds`` at round -1, then ``children`` = (round, status, params, val, test)."""
    folder.mkdir(parents=True)
    a = Archive(folder / "archive.sqlite")
    for name, n, val, test in seeds:
        cid = a.insert_child(round=-1, code=f"# seed {name}", code_hash=f"seed-{name}", seed_name=name)
        a.record_result(cid, status=outcome.OK, num_params=n, val_accuracy=val, test_accuracy=test,
                        fitness=-(n * (1 - val)))
    for i, (rnd, status, n, val, test) in enumerate(children):
        cid = a.insert_child(round=rnd, code=f"# child {i}", code_hash=f"{folder.name}-{i}")
        if n is not None:   # a filtered child has scores too (and here even a fitness): never counted
            a.record_result(cid, status=status, num_params=n, val_accuracy=val, test_accuracy=test,
                            fitness=-(n * (1 - val)))
        elif status != outcome.PENDING:
            a.record_result(cid, status=status, reason="test")
    cfg = config_of(ablation, seed, task)
    for key, value in (extra or {}).items():   # more config: {"search": {...}} merged into a section
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    overrides = list(overrides) or ([f"ablation={ablation}"] if ablation != "none" else []) + [f"seed={seed}"]
    if meta:
        a.set_meta("overrides", json.dumps(overrides))
        a.set_meta("config", json.dumps(cfg))
    a.close()
    if hydra:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return folder


def children(scale: float, n: int = 12):
    """A run's children: a failure and a tiny filtered child (fitter than all, but not in G) first, then
    scored ones whose size shrinks over time; ``scale`` multiplies every size (smaller is strictly better)."""
    out = [(0, outcome.BUILD_ERROR, None, None, None), (0, outcome.FILTERED, 10, 0.4, 0.4)]
    for i in range(n):
        out.append((i // 4, outcome.OK, int(scale * (8000 - 500 * i)), 0.85 + 0.005 * i, 0.84 + 0.005 * i))
        if i % 3 == 2:
            out.append((i // 4, outcome.DUPLICATE, None, None, None))
    return out


def fake_run(overrides, config=None, folder="r"):
    return Run(folder=Path(folder), config=config or config_of(), overrides=overrides, archive=None)


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "evo.compare", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


# ---------------------------------------------------------------- pure functions

def test_best_so_far_curve_is_monotone_and_undefined_before_the_first_scored_child():
    curve = best_so_far_curve([None, None, -50.0, None, -80.0, -20.0, None, -30.0])
    assert np.isnan(curve[:2]).all()
    assert curve[2:].tolist() == [-50.0, -50.0, -50.0, -20.0, -20.0, -20.0]
    assert (np.diff(curve[2:]) >= 0).all()
    assert np.isnan(best_so_far_curve([None, None])).all()


def test_variant_curve_uses_the_shortest_run_and_starts_when_every_seed_has_scored(tmp_path):
    a = fake_run([])
    a.children = [{"status": outcome.CRASHED, "fitness": None}] * 3 + [{"status": outcome.OK, "fitness": -10.0}] * 7
    b = fake_run([])
    b.children = [{"status": outcome.OK, "fitness": -30.0}, {"status": outcome.OK, "fitness": -20.0}] * 3
    curve = variant_curve([a, b], 200, seed=0)
    assert curve["x"].tolist() == [1, 2, 3, 4, 5, 6]            # b has 6 children
    assert np.isnan(curve["mean"][:3]).all()                   # a has no scored child before its 4th
    assert curve["mean"][3:].tolist() == [-15.0, -15.0, -15.0]
    assert (curve["lo"][3:] <= curve["mean"][3:]).all() and (curve["mean"][3:] <= curve["hi"][3:]).all()
    one = variant_curve([b], 200, seed=0)
    assert one["lo"] is None and one["mean"].tolist() == [-30.0, -20.0, -20.0, -20.0, -20.0, -20.0]
    never = fake_run([])
    never.children = [{"status": outcome.TIMEOUT, "fitness": None}]
    assert variant_curve([never], 200, seed=0) is None


def test_bootstrap_ci_contains_the_mean_is_deterministic_and_collapses_for_identical_seeds():
    values = [-500.0, -420.0, -610.0, -480.0, -530.0]
    lo, hi = bootstrap_ci(values, 1000, np.random.default_rng(0))
    assert lo < np.mean(values) < hi
    assert min(values) <= lo and hi <= max(values)
    assert bootstrap_ci(values, 1000, np.random.default_rng(0)) == (lo, hi)
    assert bootstrap_ci(values, 1000, np.random.default_rng(1)) != (lo, hi)
    assert bootstrap_ci([7.0, 7.0, 7.0], 1000, np.random.default_rng(0)) == (7.0, 7.0)
    # more spread between seeds: a wider interval
    wide = bootstrap_ci([v * 3 for v in values], 1000, np.random.default_rng(0))
    assert wide[1] - wide[0] > hi - lo


def test_fitness_curve_of_an_archive_counts_only_scored_children_of_the_search(tmp_path):
    run = load_run(make_run(tmp_path / "run", children(1.0)))
    try:
        curve = best_so_far_curve(run_fitnesses(run))
    finally:
        run.archive.close()
    assert len(curve) == 18                          # every child generated, seeds excluded
    assert np.isnan(curve[:2]).all()                 # a build error, then a filtered child (fitness -6)
    assert curve[2] == -(8000 * (1 - 0.85))          # starts at the first scored child
    assert curve[-1] == -(2500 * (1 - 0.905)) and (np.diff(curve[2:]) >= 0).all()


def test_variants_from_the_overrides_that_differ_seed_and_hydra_ignored():
    runs = [fake_run(["ablation=random_parents", "seed=0", "task.train_steps=40"], config_of("random_parents", 0)),
            fake_run(["task.train_steps=40", "seed=1", "ablation=random_parents", "hydra.run.dir=/x"],
                     config_of("random_parents", 1)),
            fake_run(["task.train_steps=40", "seed=0", "run_dir=/y"], config_of("none", 0)),   # the default ablation
            fake_run(["ablation=none", "+seed=1", "task.train_steps=40", "experiment_name=e"], config_of("none", 1))]
    variants = group_variants(runs)
    assert {k: [r.seed for r in v] for k, v in variants.items()} == {"ablation=random_parents": [0, 1],
                                                                      "ablation=none": [0, 1]}
    assert runs[2].variant == "ablation=none"
    # two keys differ: both in the label
    two = group_variants([fake_run(["ablation=random_parents", "selection=pareto"], config_of("random_parents")),
                          fake_run(["seed=1"], config_of())])
    assert list(two) == ["ablation=random_parents, selection=pareto", "ablation=none, selection=(default)"]
    # only seeds differ: one variant, named after the task
    same = group_variants([fake_run(["seed=0", "lm=tiny"]), fake_run(["lm=tiny", "seed=3"])])
    assert list(same) == ["mnist1d"] and len(same["mnist1d"]) == 2


def test_variants_by_a_config_key():
    runs = [fake_run(["seed=0"], config_of("none", 0)),
            fake_run(["ablation=random_parents"], config_of("random_parents")),
            fake_run(["seed=2"], config_of("none", 2))]
    variants = group_variants(runs, by="ablation.name")
    assert {k: len(v) for k, v in variants.items()} == {"ablation.name=none": 2, "ablation.name=random_parents": 1}
    assert list(group_variants(runs, by="lm.name")) == ["lm.name=tiny"]


def test_top_children_pools_seeds_and_keeps_only_scored_children_of_the_search(tmp_path):
    a = make_run(tmp_path / "a", [(0, outcome.OK, 1000, 0.9, 0.9), (0, outcome.FILTERED, 10, 0.4, 0.4),
                                  (1, outcome.OK, 3000, 0.9, 0.9)])
    b = make_run(tmp_path / "b", [(0, outcome.OK, 2000, 0.9, 0.9), (0, outcome.OK, 100, 0.95, 0.9),
                                  (1, outcome.OK, 500, 0.55, 0.5)], seed=1)   # small but poor: fitness -225
    runs = [load_run(a), load_run(b)]
    try:
        top = top_children(runs, 3)
        # seeds (fitter than 3000) are not children; the filtered child is not scored
        assert [c["num_params"] for c in top] == [100, 1000, 2000]
    finally:
        for r in runs:
            r.archive.close()


# ---------------------------------------------------------------- the whole comparison

def test_strictly_better_variant_wins_every_column_and_is_bold(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        make_run(runs / f"full_{seed}", children(0.5 + 0.02 * seed), seed=seed)
        make_run(runs / f"rand_{seed}", children(1.0 + 0.05 * seed), ablation="random_parents", seed=seed)
    out = tmp_path / "out"
    assert main([str(runs / "*"), "--out", str(out), "--bootstrap", "300"]) == 0
    table = json.loads((out / "table.json").read_text())
    v = {row["variant"]: row for row in table["variants"]}
    full, rand = v["ablation=none"], v["ablation=random_parents"]
    assert full["runs"] == rand["runs"] == 3 and sorted(full["seeds"]) == [0, 1, 2]
    assert full["hypervolume"]["mean"] > rand["hypervolume"]["mean"] > 0
    assert full["best_fitness"]["mean"] > rand["best_fitness"]["mean"]
    # best of a run: its last child, 0.5 x 2500 params x (1 - 0.905) for seed 0 (not the filtered one)
    assert math.isclose(full["best_fitness"]["values"][0], -(int(0.5 * 2500) * (1 - 0.905)))
    for stat in ("hypervolume", "best_fitness"):
        lo, hi = full[stat]["ci"]
        assert lo <= full[stat]["mean"] <= hi
    assert table["best"]["hypervolume"] == ["ablation=none"] and table["best"]["best_fitness"] == ["ablation=none"]
    assert table["reference_point"] == [40000.0, 1.0] and table["error"] == "test"
    md = (out / "table.md").read_text()
    full_line = next(line for line in md.splitlines() if line.startswith("| ablation=none"))
    rand_line = next(line for line in md.splitlines() if line.startswith("| ablation=random_parents"))
    # cells: variant, runs, children, scored (a tie: both bold), best fitness, hypervolume
    assert [c.strip().startswith("**") for c in full_line.split("|")[1:7]] == [False] * 3 + [True] * 3
    assert [c.strip().startswith("**") for c in rand_line.split("|")[1:7]] == [False] * 3 + [True, False, False]
    assert "40000 params" in md.splitlines()[0] and "TEST error" in md.splitlines()[0]
    printed = capsys.readouterr().out
    assert full_line in printed and str(out / "pareto.png") in printed
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["variant"] for r in rows} == {"ablation=none", "ablation=random_parents"}
    assert all(int(r["children"]) == 18 and int(r["scored"]) == 12 for r in rows)


def test_one_reference_point_for_all_runs(tmp_path):
    small = make_run(tmp_path / "runs" / "a", children(1.0), seeds=[("s", 5000, 0.8, 0.8)])
    big = make_run(tmp_path / "runs" / "b", children(1.0), seeds=[("s", 50000, 0.8, 0.8)], seed=1)
    assert main([str(small), str(big), "--out", str(tmp_path / "out"), "--bootstrap", "50"]) == 0
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    assert table["reference_point"] == [100000.0, 1.0]
    hv = table["variants"][0]["hypervolume"]["values"]
    assert len(hv) == 2 and math.isclose(hv[0], hv[1])   # same children, same reference: same hypervolume


def test_cli_on_a_sweep_folder_writes_figures_and_tables(tmp_path):
    sweep = tmp_path / "multirun" / "mnist1d" / "default" / "2026-11-24_10-00-00"
    job = 0
    for ablation, scale in (("none", 0.5), ("no_prompt_tuning", 0.7), ("random_parents", 1.0)):
        for seed in (0, 1):
            # job 0 has only Hydra's files (an archive from before meta 'config'): the fallback
            make_run(sweep / str(job), children(scale + 0.1 * seed), ablation=ablation, seed=seed,
                     overrides=[f"ablation={ablation}", f"seed={seed}"], meta=job != 0, hydra=True)
            job += 1
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    out = tmp_path / "figs"
    res = run_cli(sweep, "--out", out, "--top", "5", "--bootstrap", "200")
    assert res.returncode == 0, res.stderr
    for name in ("pareto.png", "fitness_curve.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    table = json.loads((out / "table.json").read_text())
    assert [v["variant"] for v in table["variants"]] == ["ablation=none", "ablation=no_prompt_tuning",
                                                         "ablation=random_parents"]
    assert all(v["runs"] == 2 and v["curve_length"] == 18 for v in table["variants"])
    md = (out / "table.md").read_text()
    variant_table, paired = md.split("Paired tests")
    assert variant_table.count("| ablation=") == 3 and "**" in variant_table
    assert paired.count("| ablation=") == 2 * 3    # ablation=none against the 2 others, on 3 metrics
    assert "table.md" in res.stdout and "| ablation=random_parents |" in res.stdout


def test_cli_help_shows_usage_examples():
    res = run_cli("--help")
    assert res.returncode == 0
    assert "python -m evo.compare multirun/" in res.stdout and "--by ablation.name" in res.stdout


# ---------------------------------------------------------------- errors

def test_error_no_run_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "nothing_*"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: no run folders found")
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "empty has no archive.sqlite" in err
    assert not (tmp_path / "o").exists()


def test_error_folder_without_archive_names_it(tmp_path):
    good = make_run(tmp_path / "runs" / "good", children(1.0))
    (tmp_path / "runs" / "crashed" / ".hydra").mkdir(parents=True)
    res = run_cli(good, tmp_path / "runs" / "crashed", "--out", tmp_path / "o")
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and "crashed has no archive.sqlite" in res.stderr


def test_error_runs_of_different_tasks(tmp_path, capsys):
    make_run(tmp_path / "runs" / "a", children(1.0), task="mnist1d")
    make_run(tmp_path / "runs" / "b", children(1.0), task="clrs")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the runs are of different tasks")
    assert "task.name=mnist1d" in err and "task.name=clrs" in err and str(tmp_path / "runs" / "b") in err


def test_error_by_an_unknown_key_and_bad_wandb_spec(tmp_path, capsys):
    make_run(tmp_path / "runs" / "a", children(1.0))
    assert main([str(tmp_path / "runs"), "--by", "ablation.nmae", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: no run has the config key 'ablation.nmae'")
    assert parse_wandb_spec("team/evo/abl") == ("team", "evo", "abl")
    assert parse_wandb_spec("evo/abl") == (None, "evo", "abl")
    assert main(["--wandb", "just-a-project", "--out", str(tmp_path / "o")]) == 2
    assert "expected ENTITY/PROJECT/GROUP" in capsys.readouterr().err


def test_error_no_config_names_the_folder(tmp_path, capsys):
    bare = make_run(tmp_path / "bare", children(1.0), meta=False, hydra=False)
    assert main([str(bare), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bare}") and ".hydra/config.yaml" in err


def test_variant_without_scored_child_warns_and_the_rest_is_drawn(tmp_path, capsys):
    make_run(tmp_path / "runs" / "a", children(1.0))
    make_run(tmp_path / "runs" / "b", [(0, outcome.TIMEOUT, None, None, None)] * 3, ablation="naive_fewshot")
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--out", str(out), "--bootstrap", "50"]) == 0
    err = capsys.readouterr().err
    assert "warning: variant 'ablation=naive_fewshot' has no scored child" in err
    assert (out / "pareto.png").stat().st_size > 10_000 and (out / "fitness_curve.png").stat().st_size > 10_000
    v = {row["variant"]: row for row in json.loads((out / "table.json").read_text())["variants"]}
    assert v["ablation=naive_fewshot"]["best_fitness"]["mean"] is None
    assert v["ablation=naive_fewshot"]["curve_length"] is None and v["ablation=none"]["curve_length"] == 18
    # nothing scored anywhere: an error
    assert main([str(tmp_path / "runs" / "b"), "--out", str(tmp_path / "o2")]) == 2
    assert "no run has a scored child" in capsys.readouterr().err


def test_find_run_folders_sorts_sweep_jobs_naturally_and_skips_dead_jobs(tmp_path, capsys):
    for job in (10, 2, 1):
        make_run(tmp_path / "sweep" / str(job), children(1.0, n=1))
    (tmp_path / "sweep" / "3" / ".hydra").mkdir(parents=True)   # a job that died before its archive
    assert [p.name for p in find_run_folders([str(tmp_path / "sweep")])] == ["1", "2", "10"]
    assert "3 has no archive.sqlite: skipped" in capsys.readouterr().err
    # the same run named twice (folder and glob) counts once
    assert [p.name for p in find_run_folders([str(tmp_path / "sweep" / "1"), str(tmp_path / "sweep" / "1*")])] == [
        "1", "10"]


# ---------------------------------------------------------------- the paper's comparison: tests, twins, protocol

# What a run of the CPU sweep stores: 2 rounds x 2 prompts x 6 samples = 24 samples, the size of children().
SWEEP_CFG = {"search": {"rounds": 2, "prompts_per_round": 2, "alpha": 0.5},
             "crossmut": {"samples_per_prompt": 6}, "sandbox": {"timeout_s": 120}}


def children_of(scale: float):
    """children() padded to the 24 samples of SWEEP_CFG with duplicates (as a copy of a known program is)."""
    out = children(scale)
    return out + [(1, outcome.DUPLICATE, None, None, None)] * (24 - len(out))


def _table(runs_dir, out, *extra):
    assert main([str(runs_dir), "--out", str(out), "--bootstrap", "500", *map(str, extra)]) == 0
    return json.loads((out / "table.json").read_text())


def test_paired_test_finds_the_variant_built_to_be_better_and_does_not_separate_identical_ones(tmp_path):
    """Six seeds per variant: full EvoPrompting's children are 0.5x the size of random parents' in
    every seed (better in every pair); naive few-shot has the same children as full EvoPrompting
    (identical); no prompt tuning draws its sizes from the same range (differences of both signs)."""
    runs = tmp_path / "runs"
    scales = [0.50, 0.56, 0.47, 0.61, 0.53, 0.58]
    same_range = [0.55, 0.49, 0.60, 0.52, 0.57, 0.48]
    for seed in range(6):
        make_run(runs / f"full_{seed}", children_of(scales[seed]), seed=seed, extra=SWEEP_CFG)
        make_run(runs / f"rand_{seed}", children_of(2 * scales[seed]), ablation="random_parents", seed=seed,
                 extra=SWEEP_CFG)
        make_run(runs / f"naive_{seed}", children_of(scales[seed]), ablation="naive_fewshot", seed=seed,
                 extra=SWEEP_CFG)
        make_run(runs / f"npt_{seed}", children_of(same_range[seed]), ablation="no_prompt_tuning", seed=seed,
                 extra=SWEEP_CFG)
    table = _table(runs, tmp_path / "out")
    assert table["baseline"] == "ablation=none"
    tests = {(t["other"], t["metric"]): t for t in table["paired_tests"]}
    assert len(tests) == 3 * 3
    better = tests[("ablation=random_parents", "best_fitness")]
    assert better["pairs"] == 6 and better["wins"] == 6 and better["exact"]
    assert math.isclose(better["p"], 2 / 2 ** 6)                     # every flip of 6 signs, two-sided
    assert better["mean_difference"] > 0 and better["ci"][0] > 0 and better["d_z"] > 0
    assert better["verdict"].startswith("ablation=none is better than ablation=random_parents on best fitness")
    assert tests[("ablation=random_parents", "hypervolume")]["p"] < 0.05
    same = tests[("ablation=naive_fewshot", "best_fitness")]
    assert same["p"] == 1.0 and same["mean_difference"] == 0 and same["wins"] == same["losses"] == 0
    assert same["verdict"].startswith("The data cannot separate ablation=none from ablation=naive_fewshot")
    shuffled = tests[("ablation=no_prompt_tuning", "best_fitness")]
    assert shuffled["wins"] > 0 and shuffled["losses"] > 0 and shuffled["p"] > 0.05
    assert shuffled["ci"][0] < 0 < shuffled["ci"][1]
    assert "cannot separate" in shuffled["verdict"]
    md = (tmp_path / "out" / "table.md").read_text()
    assert "ablation=none is better than ablation=random_parents on best fitness" in md
    # new working children per sample: 12 ok and 1 filtered of 24 samples in every run
    assert all(v["new_working_per_sample"]["mean"] == 13 / 24 for v in table["variants"])


def test_five_seeds_say_that_no_result_could_reach_significance(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(5):
        make_run(runs / f"full_{seed}", children_of(0.5), seed=seed, extra=SWEEP_CFG)
        make_run(runs / f"rand_{seed}", children_of(1.0), ablation="random_parents", seed=seed, extra=SWEEP_CFG)
    t = next(t for t in _table(runs, tmp_path / "out")["paired_tests"] if t["metric"] == "best_fitness")
    assert t["wins"] == 5 and math.isclose(t["p"], 2 / 32) and t["min_p"] == 2 / 32
    assert "cannot separate" in t["verdict"] and "cannot go below p = 0.0625" in t["verdict"]


def test_best_seed_is_a_reference_and_runs_that_beat_it_are_counted(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(2):   # the CNN seed: 5000 params, val 0.80 -> fitness -1000
        make_run(runs / f"good_{seed}", children_of(0.5), seed=seed, extra=SWEEP_CFG)          # best -118.75
        make_run(runs / f"bad_{seed}", children_of(20.0 if seed else 0.5), ablation="random_parents", seed=seed,
                 extra=SWEEP_CFG)                                                            # seed 1: best -4750
    table = _table(runs, tmp_path / "out")
    assert table["best_seed"]["seed_name"] == "cnn" and math.isclose(table["best_seed"]["fitness"], -1000.0)
    v = {row["variant"]: row for row in table["variants"]}
    assert v["ablation=none"]["beat_best_seed"] == 2 and v["ablation=random_parents"]["beat_best_seed"] == 1
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| 2 of 2 |" in md and "| 1 of 2 |" in md and "Best seed: cnn, fitness -1000.0; 3 of 4 runs beat it." in md


def test_a_run_and_its_copied_or_resumed_twin_count_as_one_seed(tmp_path, capsys):
    import shutil
    runs = tmp_path / "runs"
    for seed in range(3):
        make_run(runs / f"full_{seed}", children_of(0.5 + 0.1 * seed), seed=seed, extra=SWEEP_CFG)
    shutil.copytree(runs / "full_1", runs / "full_1_copy")                        # a copied folder
    make_run(runs / "full_2_resumed", children_of(0.9)[:24], seed=2, extra=SWEEP_CFG)  # another folder, same seed
    table = _table(runs, tmp_path / "out")
    err = capsys.readouterr().err
    row = table["variants"][0]
    assert row["runs"] == 3 and sorted(row["seeds"]) == [0, 1, 2]
    assert len(row["best_fitness"]["values"]) == 3
    twins = {t["seed"]: t for t in table["twins"]}
    assert set(twins) == {1, 2}
    assert twins[1]["kept"].endswith("full_1") and twins[1]["dropped"][0].endswith("full_1_copy")
    assert "2 runs with seed 1" in err and "are one replicate" in err
    assert "Twins (one replicate counted once)" in (tmp_path / "out" / "table.md").read_text()


def test_an_incomplete_run_is_left_out_unless_asked_for(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in range(2):
        make_run(runs / f"full_{seed}", children_of(0.5), seed=seed, extra=SWEEP_CFG)
    make_run(runs / "full_2", children_of(0.5)[:10], seed=2, extra=SWEEP_CFG)    # stopped after 10 of 24 samples
    table = _table(runs, tmp_path / "out")
    assert table["variants"][0]["runs"] == 2 and table["incomplete"][0].endswith("full_2")
    assert "full_2 is incomplete (10 of 24 samples" in capsys.readouterr().err
    assert _table(runs, tmp_path / "out2", "--include-incomplete")["variants"][0]["runs"] == 3


def test_variants_run_under_different_protocols_are_refused_naming_the_keys(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs / "full_0", children_of(0.5), seed=0, extra=SWEEP_CFG)
    make_run(runs / "rand_0", children_of(0.5), ablation="random_parents", seed=0,
             extra={**SWEEP_CFG, "task": {"train_steps": 8000}, "crossmut": {"samples_per_prompt": 8}})
    assert main([str(runs), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the runs were made under different protocols")
    assert "task.train_steps: 40 in 1 run(s)" in err and "8000 in 1 run(s)" in err
    assert "budget (search.rounds x search.prompts_per_round x crossmut.samples_per_prompt): 24" in err
    assert "--allow-protocol-mismatch" in err and not (tmp_path / "o").exists()
    # a variant that differs only in what the operator may write, or in how fast children train, is comparable
    make_run(tmp_path / "ok" / "a", children_of(0.5), seed=0, extra=SWEEP_CFG)
    make_run(tmp_path / "ok" / "b", children_of(0.5), ablation="random_parents", seed=0,
             extra={**SWEEP_CFG, "task": {"banned_words": ["self."], "train_loop": "scan"}})
    assert main([str(tmp_path / "ok"), "--out", str(tmp_path / "o_ok"), "--bootstrap", "50"]) == 0
    # compared anyway on request: flagged in the table
    table = _table(runs, tmp_path / "o2", "--allow-protocol-mismatch", "--include-incomplete")
    assert set(table["protocol_mismatch"]) == {"task.train_steps",
                                               "budget (search.rounds x search.prompts_per_round x crossmut.samples_per_prompt)"}
    assert "PROTOCOL MISMATCH" in (tmp_path / "o2" / "table.md").read_text()

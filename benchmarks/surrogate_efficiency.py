"""Search efficiency of the COLE surrogate: how many children must be trained to reach the best
fitness of a search that trains every child (the paper's), with and without ``surrogate=cole``.

For each seed, two real searches with the same LM, the same settings and the same sample budget:

    none_seed<S>   surrogate=none: every child that passes the static checks is trained
    cole_seed<S>   surrogate=cole: after each round's sampling COLE ranks the children and only the
                   predicted best half plus a 10% random share are trained

The target of seed S is the best fitness in none_seed<S>'s history (its scored children, seeds
excluded). For each run, "trainings to target" counts the children that reached training (trained
to the end, or failed while training; not those a cheap build or shape check stopped), in the order
they finished, up to and including the first with
fitness >= the target. The cole run may not reach it within the same sample budget: then it is
"not reached". The saving is 1 - (cole trainings / none trainings), summed over seeds.

``--prior loo`` (default) warm-starts the cole run of seed S from the none runs of the OTHER seeds
(``surrogate.prior``: earlier searches of the same task, as a lab would have); ``--prior none``
starts it cold (it ranks nothing until ``surrogate.min_history`` children of its own have trained).

Also measured: the surrogate's own cost per screened child (embedding + fit + predict, from the
runs' ``surrogate_screened`` events) next to a trained child's sandbox seconds.

    python benchmarks/surrogate_efficiency.py                    # seeds 1 2 3, ~80 min on 2 CPU cores
    python benchmarks/surrogate_efficiency.py --seeds 1 2 3 4 --prior none

Every run lives in outputs/benchmarks/surrogate_efficiency/<name> and resumes when the command is
run again (a killed benchmark loses nothing). Results: benchmarks/results/surrogate_efficiency.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "outputs" / "benchmarks" / "surrogate_efficiency"
# The demo's operator settings (conf/experiment/demo.yaml: 2 prompts x 8 samples a round, children
# trained 2000 steps), 6 rounds, and a 2-minute wall per child (a normal child takes 5-15 s here).
# The operator is held at the demo's of the time it was measured (unconstrained, no copy penalty; the demo samples
# under the grammar since 2026-12-01), so that its runs resume and repeat.
PROTOCOL = ["experiment=demo", "search.rounds=6", "sandbox.timeout_s=120", "progress=false",
            "crossmut.constrain=none", "crossmut.resample_copies=0", "lm.copy_penalty=0"]
# Statuses of a child that reached training: trained to the end (ok, filtered) or failed while training
# (timeout, memory and crashes are counted here even when they struck earlier: the conservative side).
# Build, shape and batch-dependence failures end in the sandbox's cheap checks, before any training.
TRAINED = ("ok", "filtered", "nan", "timeout", "memory", "crashed")


def run_search(name: str, overrides: list[str]) -> Path:
    """Run (or resume, or find finished) one search; returns its folder."""
    run_dir = ROOT / name
    cmd = [sys.executable, "-m", "evo.run", *PROTOCOL, *overrides, f"hydra.run.dir={run_dir}"]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[3:])}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(ROOT / f"{name}.log", "a") as log:
        r = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed (exit {r.returncode}); see {ROOT / (name + '.log')}")
    return run_dir


def none_overrides(seed: int) -> list[str]:
    return [f"seed={seed}"]


def cole_overrides(seed: int, prior: list[Path]) -> list[str]:
    listed = ",".join(str(p.relative_to(REPO)) for p in prior)
    return [f"seed={seed}", "surrogate=cole", f"surrogate.prior=[{listed}]"]


def leave_one_out(none_runs: dict[int, Path], seed: int) -> list[Path]:
    """The prior of seed's cole run: the no-surrogate runs of the other seeds."""
    return [run for s, run in none_runs.items() if s != seed]


def _db(run_dir: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{run_dir / 'archive.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


def best_fitness(run_dir: Path) -> float:
    """The best fitness of the run's history G (scored children, seeds excluded)."""
    with _db(run_dir) as db:
        return db.execute("SELECT MAX(fitness) FROM children WHERE round >= 0 AND status = 'ok'").fetchone()[0]


def trained_in_order(run_dir: Path) -> list[sqlite3.Row]:
    """The run's children (seeds excluded) that reached training, in finishing order."""
    marks = ",".join("?" * len(TRAINED))
    with _db(run_dir) as db:
        return db.execute(f"SELECT id, round, status, fitness, eval_seconds FROM children WHERE round >= 0 AND "
                          f"status IN ({marks}) ORDER BY evaluated_at, id", TRAINED).fetchall()


def trainings_to_reach(trained: list[sqlite3.Row], target: float):
    """How many of ``trained`` (trained_in_order) it took until a child reached ``target`` fitness
    (None: never)."""
    for i, row in enumerate(trained, 1):
        if row["status"] == "ok" and row["fitness"] is not None and row["fitness"] >= target:
            return i
    return None


def run_summary(run_dir: Path, target: float) -> dict:
    trained = trained_in_order(run_dir)
    with _db(run_dir) as db:
        samples = db.execute("SELECT COUNT(*) FROM children WHERE round >= 0").fetchone()[0]
        skipped = db.execute("SELECT COUNT(*) FROM children WHERE status = 'skipped_by_surrogate'").fetchone()[0]
        sandbox_runs = db.execute("SELECT COUNT(*) FROM children WHERE round >= 0 AND status NOT IN "
                                  "('pending', 'duplicate', 'syntax_error', 'forbidden', 'skipped_by_surrogate')"
                                  ).fetchone()[0]
        screens = [json.loads(r[0]) for r in db.execute("SELECT detail FROM events WHERE kind = 'surrogate_screened'")]
        ledger = db.execute("SELECT MIN(created_at), MAX(evaluated_at) FROM children").fetchone()
    screened = sum(s.get("train", 0) + s.get("explore", 0) + s.get("skip", 0) for s in screens)
    ranked = [s for s in screens if s.get("all", 0) == 0]
    return {"run_dir": str(run_dir.relative_to(REPO)), "samples": samples, "trained": len(trained),
            "trained_to_the_end": sum(r["status"] in ("ok", "filtered") for r in trained), "skipped": skipped,
            "sandbox_runs": sandbox_runs,
            "best_fitness": best_fitness(run_dir), "trainings_to_target": trainings_to_reach(trained, target),
            "train_seconds_per_child": (sum(r["eval_seconds"] or 0 for r in trained) / len(trained)) if trained else None,
            "surrogate_rounds_ranked": len(ranked), "surrogate_children_screened": screened,
            "surrogate_seconds": sum(s.get("seconds", 0.0) for s in screens),
            "wall_seconds": (ledger[1] - ledger[0]) if ledger[0] and ledger[1] else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--prior", choices=("loo", "none"), default="loo",
                    help="loo: warm-start each cole run from the none runs of the other seeds; none: cold start")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "surrogate_efficiency.json")
    args = ap.parse_args()
    if args.prior == "loo" and len(args.seeds) < 2:
        ap.error("--prior loo needs at least 2 seeds (each cole run learns from the others' none runs)")
    ROOT.mkdir(parents=True, exist_ok=True)
    none = {s: run_search(f"none_seed{s}", none_overrides(s)) for s in args.seeds}
    suffix = "" if args.prior == "loo" else "_cold"
    cole = {}
    for s in args.seeds:
        prior = leave_one_out(none, s) if args.prior == "loo" else []
        cole[s] = run_search(f"cole{suffix}_seed{s}", cole_overrides(s, prior))
    per_seed = []
    for s in args.seeds:
        target = best_fitness(none[s])
        a, b = run_summary(none[s], target), run_summary(cole[s], target)
        per_seed.append({"seed": s, "target_fitness": target, "none": a, "cole": b,
                         "saving": (1 - b["trainings_to_target"] / a["trainings_to_target"])
                         if b["trainings_to_target"] else None})
    reached = [p for p in per_seed if p["cole"]["trainings_to_target"] is not None]
    sum_none = sum(p["none"]["trainings_to_target"] for p in per_seed)
    sum_cole = sum(p["cole"]["trainings_to_target"] for p in reached)
    total_saving = 1 - sum_cole / sum_none if len(reached) == len(per_seed) else None
    screened = sum(p["cole"]["surrogate_children_screened"] for p in per_seed)
    surrogate_seconds = sum(p["cole"]["surrogate_seconds"] for p in per_seed)
    train_costs = [p[k]["train_seconds_per_child"] for p in per_seed for k in ("none", "cole")
                   if p[k]["train_seconds_per_child"]]
    payload = {
        "protocol": PROTOCOL, "lm": "gemma3-270m (default)", "seeds": args.seeds, "prior": args.prior,
        "surrogate": "cole: MiniLM embedder, ridge head, log_fitness, train_fraction 0.5, explore_fraction 0.1",
        "per_seed": per_seed, "seeds_reached": len(reached),
        "trainings_to_target": {"none": sum_none, "cole": sum_cole if total_saving is not None else None},
        "saving": total_saving, "goal_saving": 0.34,
        "goal_met": total_saving is not None and total_saving >= 0.34,
        "cost": {"surrogate_seconds_per_screened_child": surrogate_seconds / screened if screened else None,
                 "train_seconds_per_trained_child": sum(train_costs) / len(train_costs) if train_costs else None},
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print("\n| seed | target fitness | none: trainings to target / all | cole: trainings to target / all | "
          "cole best fitness | saving |\n|---|---:|---:|---:|---:|---:|")
    for p in per_seed:
        a, b = p["none"], p["cole"]
        reach = b["trainings_to_target"] if b["trainings_to_target"] is not None else "not reached"
        saving = f"{p['saving']:.0%}" if p["saving"] is not None else "-"
        print(f"| {p['seed']} | {p['target_fitness']:.0f} | {a['trainings_to_target']} / {a['trained']} | "
              f"{reach} / {b['trained']} | {b['best_fitness']:.0f} | {saving} |")
    c = payload["cost"]
    print(f"\nsaving over all seeds: {'-' if total_saving is None else f'{total_saving:.0%}'} (goal 34%); "
          f"surrogate {c['surrogate_seconds_per_screened_child']:.3f} s per screened child vs "
          f"{c['train_seconds_per_trained_child']:.1f} s per trained child\nwritten: {args.out}")


if __name__ == "__main__":
    main()

"""How many new, distinct, working children the LM operator writes per sample, per prompt variant.

Runs one real search round per variant (same LM, same seeds, same sample budget) through
``python -m evo.run`` and reads each run's archive. Writes JSON and prints a Markdown table.

    python benchmarks/operator_yield.py                      # all variants, 6 prompts x 8 samples each
    python benchmarks/operator_yield.py --variants paper demo --prompts 4

"new working" = trained to the end (status ok or filtered) and not a copy of any earlier program;
"scored" = also passed alpha; "copies" = the sample was a known program (a parent, a seed, or an
earlier sample).
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Each variant: overrides on top of the shared round below. "paper" is the method as published
# (with our stop rule and repairs, which every variant has); the others change one thing each.
VARIANTS = {
    "paper": [],
    "no_banned_words": ["task.banned_words=[]"],
    "fittest_last": ["crossmut.parent_order=fittest_last"],
    "no_low_temperature": ["crossmut.temperatures=[0.6,0.8,1.0]"],
    "fittest_last_no_low_temperature": ["crossmut.parent_order=fittest_last", "crossmut.temperatures=[0.6,0.8,1.0]"],
    "plus_resample_copies": ["crossmut.parent_order=fittest_last", "crossmut.temperatures=[0.6,0.8,1.0]",
                             "crossmut.resample_copies=1"],
}


def run_variant(name: str, overrides: list[str], args, out_root: Path) -> dict:
    run_dir = out_root / name
    cmd = [sys.executable, "-m", "evo.run", *overrides, "search.rounds=1",
           f"search.prompts_per_round={args.prompts}", f"crossmut.samples_per_prompt={args.samples}",
           f"task.train_steps={args.train_steps}", "progress=false", f"seed={args.seed}", f"hydra.run.dir={run_dir}"]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{r.stderr[-3000:]}")
    db = sqlite3.connect(run_dir / "archive.sqlite")
    rows = db.execute("SELECT status, repairs FROM children WHERE round >= 0").fetchall()
    status = Counter(s for s, _ in rows)
    repairs = Counter(rep.split(":")[0] for _, reps in rows for rep in json.loads(reps))
    n = len(rows)
    working = status["ok"] + status["filtered"]
    return {"variant": name, "overrides": overrides, "samples": n, "new_working": working,
            "new_working_per_sample": working / n, "scored": status["ok"], "scored_per_sample": status["ok"] / n,
            "copies": status["duplicate"], "statuses": dict(status), "repairs": dict(repairs),
            "seconds": round(time.time() - t0, 1), "run_dir": str(run_dir)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "operator_yield.json"))
    args = ap.parse_args()
    out_root = REPO / "outputs" / "benchmarks" / f"operator_yield_{time.strftime('%Y%m%d_%H%M%S')}"
    results = []
    for name in args.variants:
        res = run_variant(name, VARIANTS[name], args, out_root)
        results.append(res)
        print(f"{name}: {res['new_working']}/{res['samples']} new working, {res['scored']} scored, "
              f"{res['copies']} copies ({res['seconds']} s)", flush=True)
    # Variants not run this time keep their earlier figures (each is a separate run of the same protocol).
    out = Path(args.out)
    earlier = json.loads(out.read_text())["results"] if out.exists() else []
    ran = {r["variant"] for r in results}
    results = [r for r in earlier if r["variant"] not in ran and r["variant"] in VARIANTS] + results
    results.sort(key=lambda r: list(VARIANTS).index(r["variant"]))
    payload = {"lm": "gemma3-270m (default)", "prompts": args.prompts, "samples_per_prompt": args.samples,
               "train_steps": args.train_steps, "seed": args.seed, "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d"), "results": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    print("\n| variant | samples | new working / sample | scored / sample | copies |\n|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['variant']} | {r['samples']} | {r['new_working_per_sample']:.2f} | "
              f"{r['scored_per_sample']:.2f} | {r['copies']} |")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()

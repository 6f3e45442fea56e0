"""How many new, distinct, working children the LM operator writes per sample, per prompt variant.

Runs one real search round per variant (same LM, same seeds, same sample budget) through
``python -m evo.run`` and reads each run's archive. Writes JSON and prints a Markdown table.

    python benchmarks/operator_yield.py                      # all variants, 6 prompts x 8 samples each
    python benchmarks/operator_yield.py --variants paper demo --prompts 4
    python benchmarks/operator_yield.py --variants demo_generate demo_cached demo_code_head demo_grammar demo_all
        # issue 14: today's sampler, each speed-up, the grammar, all together (demo settings, 48 samples each)

"new working" = trained to the end (status ok or filtered) and not a copy of any earlier program;
"scored" = also passed alpha; "copies" = the sample was a known program (a parent, a seed, or an
earlier sample). "invented names" = build errors from a name or keyword argument that does not exist
(NameError, unexpected keyword argument, no such attribute). LM figures (tokens/s, samples and new working
per LM-hour) sum the children's ``lm_seconds`` (each row's share of its batch's wall time): they are taken
while other jobs share the CPU, and the runs are consecutive, so compare them with the interleaved ratios of
benchmarks/sampling_speed.py.
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
# Issue 14, at the demo's operator settings (conf/experiment/demo.yaml): the sampler before it
# (transformers generate), evo's cached decoder (same distribution), the code-token head, the grammar,
# and everything together with one resampling batch for copies.
DEMO = ["crossmut.parent_order=fittest_last", "crossmut.temperatures=[0.6,0.8,1.0]"]
VARIANTS.update({
    "demo_generate": [*DEMO, "lm.decoder=generate"],
    "demo_cached": [*DEMO, "lm.decoder=cached"],
    "demo_code_head": [*DEMO, "lm.head_vocab=code"],
    "demo_grammar": [*DEMO, "crossmut.constrain=grammar"],
    "demo_grammar_resample": [*DEMO, "crossmut.constrain=grammar", "crossmut.resample_copies=1"],   # the demo preset
    "demo_all": [*DEMO, "lm.head_vocab=code", "crossmut.constrain=grammar", "crossmut.resample_copies=1"],
    # the copy penalty (evo/lm/copying.py), alone and with the grammar (which alone doubles the copies)
    "demo_copy_penalty": [*DEMO, "lm.copy_penalty=1"],
    "demo_grammar_copy_penalty": [*DEMO, "crossmut.constrain=grammar", "lm.copy_penalty=1"],
    # and the copies the penalty leaves (samples that became copies anyway) resampled once
    "demo_grammar_copy_penalty_resample": [*DEMO, "crossmut.constrain=grammar", "lm.copy_penalty=1",
                                           "crossmut.resample_copies=1"],
    # ...and the penalty widened to every program the run holds (crossmut.avoid_known), not only the prompt's
    "demo_grammar_copy_penalty_known_resample": [*DEMO, "crossmut.constrain=grammar", "lm.copy_penalty=1",
                                                 "crossmut.avoid_known=true", "crossmut.resample_copies=1"],
    "demo_all_copy_penalty": [*DEMO, "lm.head_vocab=code", "crossmut.constrain=grammar", "lm.copy_penalty=1"],
    # the fastest sampler (both speed-ups that change the distribution) without resampling: yield x speed
    "demo_grammar_code_head": [*DEMO, "lm.head_vocab=code", "crossmut.constrain=grammar"],
})
INVENTED = ("NameError", "unexpected keyword argument", "has no attribute", "is not defined")


def _commit() -> str:
    """The commit the variants ran at (the grammar, for one, changes between commits)."""
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def run_variant(name: str, overrides: list[str], args, out_root: Path) -> dict:
    run_dir = out_root / name
    cmd = [sys.executable, "-m", "evo.run", *overrides, "search.rounds=1",
           f"search.prompts_per_round={args.prompts}", f"crossmut.samples_per_prompt={args.samples}",
           f"task.train_steps={args.train_steps}", "progress=false", f"seed={args.seed}", f"hydra.run.dir={run_dir}"]
    t0 = time.time()
    if not (run_dir / "archive.sqlite").exists() or args.rerun:   # resumable: a finished variant is read back
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"variant {name} failed:\n{r.stderr[-3000:]}")
    db = sqlite3.connect(run_dir / "archive.sqlite")
    rows = db.execute("SELECT status, repairs, reason, tokens_out, lm_seconds FROM children WHERE round >= 0").fetchall()
    status = Counter(r[0] for r in rows)
    repairs = Counter(rep.split(":")[0] for r in rows for rep in json.loads(r[1]))
    invented = sum(1 for r in rows if r[0] == "build_error" and any(k in (r[2] or "") for k in INVENTED))
    n = len(rows)
    working = status["ok"] + status["filtered"]
    tokens, lm_s = sum(r[3] or 0 for r in rows), sum(r[4] or 0.0 for r in rows)
    return {"variant": name, "overrides": overrides, "samples": n, "new_working": working,
            "new_working_per_sample": working / n, "scored": status["ok"], "scored_per_sample": status["ok"] / n,
            "copies": status["duplicate"], "statuses": dict(status), "repairs": dict(repairs),
            "syntax_error_share": status["syntax_error"] / n, "invented_name_build_errors": invented,
            "invented_name_share": invented / n, "tokens_out": tokens, "lm_seconds": round(lm_s, 1),
            "tokens_per_s": round(tokens / lm_s, 2) if lm_s else None,
            "samples_per_lm_hour": round(3600 * n / lm_s, 1) if lm_s else None,
            "new_working_per_lm_hour": round(3600 * working / lm_s, 1) if lm_s else None,
            "seconds": round(time.time() - t0, 1), "run_dir": str(run_dir)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "operator_yield.json"))
    ap.add_argument("--run-root", default=None,
                    help="folder of the variants' runs; a variant whose run is there is read back, not rerun")
    ap.add_argument("--rerun", action="store_true", help="run variants again even if --run-root holds them")
    args = ap.parse_args()
    out_root = Path(args.run_root) if args.run_root else \
        REPO / "outputs" / "benchmarks" / f"operator_yield_{time.strftime('%Y%m%d_%H%M%S')}"
    results = []
    for name in args.variants:
        res = run_variant(name, VARIANTS[name], args, out_root)
        results.append(res)
        print(f"{name}: {res['new_working']}/{res['samples']} new working, {res['scored']} scored, "
              f"{res['copies']} copies, {res['new_working_per_lm_hour']} new working per LM-hour "
              f"({res['seconds']} s)", flush=True)
    # Variants not run this time keep their earlier figures (each is a separate run of the same protocol).
    out = Path(args.out)
    earlier = json.loads(out.read_text())["results"] if out.exists() else []
    ran = {r["variant"] for r in results}
    results = [r for r in earlier if r["variant"] not in ran and r["variant"] in VARIANTS] + results
    results.sort(key=lambda r: list(VARIANTS).index(r["variant"]))
    payload = {"lm": "gemma3-270m (default)", "prompts": args.prompts, "samples_per_prompt": args.samples,
               "train_steps": args.train_steps, "seed": args.seed, "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d"), "commit": _commit(), "results": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    print("\n| variant | samples | new working / sample | scored / sample | copies | syntax err | invented names "
          "| tokens/s | samples / LM-h | new working / LM-h |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['variant']} | {r['samples']} | {r['new_working_per_sample']:.2f} | "
              f"{r['scored_per_sample']:.2f} | {r['copies']} | {r.get('syntax_error_share', float('nan')):.0%} | "
              f"{r.get('invented_name_share', float('nan')):.0%} | {r.get('tokens_per_s')} | "
              f"{r.get('samples_per_lm_hour')} | {r.get('new_working_per_lm_hour')} |")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()

"""``python -m evo.heldout SWEEP_OR_RUNS``: retrain each variant's best programs at the paper's full
protocol, under several training seeds, to check that the comparison was not won on validation noise.

    python -m evo.heldout multirun/mnist1d/mnist1d_cpu_ablations                  # 3 best x 3 seeds, 8000 steps
    python -m evo.heldout multirun/mnist1d/mnist1d_cpu_ablations --top 5 --train-seeds 5 --by ablation.name
    python -m evo.heldout outputs/mnist1d/demo/* --steps 2000 --out outputs/heldout_2000

Runs are read and grouped into variants exactly as ``python -m evo.compare`` does (same refusals:
different tasks or protocols; twins counted once; incomplete runs left out unless
``--include-incomplete``). For each variant, its ``--top`` fittest scored children by VALIDATION
fitness during the search (pooled over its seeds, one per distinct program) are trained again with
``task.train_steps = --steps`` (default 8000, the paper's EVAL) under ``--train-seeds`` training seeds
(``task.train_seed`` + 0, 1, ...), through the search's own FILTERANDEVAL path (static checks, sandbox,
trainer) with every other task setting as the runs stored it. Reported per program and per variant:
test accuracy and fitness -(params x validation error) as mean +- sd over the trainings.

In ``--out`` (default ``<first folder>/heldout``): ``heldout.jsonl`` (one line per finished training,
appended as each ends), ``heldout.md`` and ``heldout.json`` (the tables), ``settings.json``. A rerun
with the same ``--out`` skips every training already in ``heldout.jsonl`` (key: variant, program
hash, training seed, steps), so an interrupted re-evaluation resumes; one with other task settings is
refused. Exit code 0 when every training completed (whatever the programs did), 2 on a bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from hydra.utils import instantiate

from evo import outcome
from evo.analysis.compare import (CompareError, check_same_protocol, check_same_task, drop_twins, group_variants,
                                  incomplete_runs, load_run, mismatch_note)
from evo.archive.runs import command, find_run_folders, opened
from evo.sandbox.runner import SandboxLimits
from evo.search.evaluators import cpu_slots
from evo.search.filter_eval import FilterAndEval, fitness

RESULTS = "heldout.jsonl"
SETTINGS = "settings.json"


def _cache_dir(config: dict) -> Path:
    value = config.get("cache_dir")
    if not isinstance(value, str) or "${" in value:
        value = os.environ.get("EVO_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "evo"))
    return Path(os.path.expanduser(value))


def train_program(code: str, task_cfg: dict, sandbox_cfg: dict, alpha: float, cache_dir: Path,
                  cpus: Optional[list] = None) -> dict:
    """One program trained and scored under ``task_cfg`` (a task node with ``_target_``) through
    FILTERANDEVAL, as the search trains a child. Returns the evaluation's dict, without the log tail
    unless it failed; ``fitness`` is also filled in for a child above alpha (it is still a score)."""
    task = instantiate(task_cfg)
    limits = SandboxLimits(**sandbox_cfg)
    ev = FilterAndEval(task, task.prepare(cache_dir), limits, alpha)(code, cpus=cpus).as_dict()
    log_tail = ev.pop("log_tail")
    if ev["status"] not in outcome.WORKING and log_tail:
        ev["log_tail"] = log_tail[-1000:]
    if ev["fitness"] is None and ev["num_params"] is not None and ev["val_accuracy"] is not None:
        ev["fitness"] = fitness(ev["num_params"], ev["val_accuracy"])
    return ev


def best_programs(runs, top: int) -> list[dict]:
    """The ``top`` fittest scored children (by the search's validation fitness) pooled over ``runs``,
    one per distinct program (normalised code hash), with their code and where they came from."""
    pool = []
    for run in runs:
        for c in run.archive.rows(("id", "round", "code", "code_hash", "num_params", "val_accuracy", "test_accuracy",
                                   "fitness"), min_round=0, status=outcome.OK, not_null=("fitness",)):
            pool.append({**c, "run": str(run.folder), "run_seed": run.seed})
    pool.sort(key=lambda c: (-c["fitness"], c["run"], c["id"]))
    out, seen = [], set()
    for c in pool:
        if c["code_hash"] not in seen:
            seen.add(c["code_hash"])
            out.append(c)
        if len(out) == top:
            break
    return out


def load_results(path: Path) -> list[dict]:
    records = []
    if path.exists():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:   # a line cut off by a kill: that training runs again
                    print(f"warning: {path}:{n} is not JSON; ignored", file=sys.stderr)
    return records


def _key(r: dict) -> tuple:
    return r["variant"], r["code_hash"], int(r["train_seed"]), int(r["steps"])


def _mean_sd(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def summarise(records: list[dict], plan: dict) -> list[dict]:
    """Per variant: each program's test accuracy and fitness over its trainings, then all of them."""
    rows = []
    for variant, programs in plan.items():
        prog_rows = []
        for rank, p in enumerate(programs, 1):
            rs = [r for r in records if r["variant"] == variant and r["code_hash"] == p["code_hash"]]
            ok = [r for r in rs if r["status"] in outcome.WORKING]
            prog_rows.append({
                "rank": rank, "code_hash": p["code_hash"], "run": p["run"], "child_id": p["id"],
                "num_params": p["num_params"], "search_fitness": p["fitness"],
                "search_val_accuracy": p["val_accuracy"], "search_test_accuracy": p["test_accuracy"],
                "trainings": len(rs), "failed": [r["status"] for r in rs if r["status"] not in outcome.WORKING],
                "test_accuracy": _mean_sd([r["test_accuracy"] for r in ok]),
                "fitness": _mean_sd([r["fitness"] for r in ok])})
        every = [r for r in records if r["variant"] == variant and r["status"] in outcome.WORKING
                 and any(r["code_hash"] == p["code_hash"] for p in programs)]
        rows.append({"variant": variant, "programs": prog_rows,
                     "test_accuracy": _mean_sd([r["test_accuracy"] for r in every]),
                     "fitness": _mean_sd([r["fitness"] for r in every])})
    return rows


def _pm(s: dict, spec: str) -> str:
    if s["mean"] is None:
        return "–"
    return format(s["mean"], spec) + ("" if s["sd"] is None else f" ± {format(s['sd'], spec)}")


def markdown(rows: list[dict], steps: int, seeds: list[int]) -> str:
    lines = [f"Held-out re-evaluation: each variant's best programs by validation fitness in the search, trained "
             f"again for {steps} steps under training seeds {seeds} (everything else as in the search). Mean ± sd "
             "over the trainings; search: the one training the search made (its steps, training seed).", "",
             "| variant | program | params | search fitness | search test acc | test accuracy | fitness | trainings |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        for p in row["programs"]:
            failed = f" ({', '.join(p['failed'])} failed)" if p["failed"] else ""
            lines.append(f"| {row['variant']} | #{p['rank']} {p['code_hash'][:10]} | {p['num_params']} | "
                         f"{p['search_fitness']:.1f} | {p['search_test_accuracy']:.3f} | {_pm(p['test_accuracy'], '.3f')} | "
                         f"{_pm(p['fitness'], '.1f')} | {p['trainings']}{failed} |")
        lines.append(f"| **{row['variant']}: all** | {len(row['programs'])} programs | | | | "
                     f"**{_pm(row['test_accuracy'], '.3f')}** | **{_pm(row['fitness'], '.1f')}** | "
                     f"{row['test_accuracy']['n']} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m evo.heldout", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, globs, or a sweep folder (as evo.compare)")
    p.add_argument("--by", metavar="KEY", help="group runs by this dotted config key (as evo.compare)")
    p.add_argument("--top", type=int, default=3, help="programs per variant (default 3)")
    p.add_argument("--train-seeds", type=int, default=3, help="trainings per program (default 3)")
    p.add_argument("--steps", type=int, default=8000, help="training steps (default 8000, the paper's)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="sandbox wall clock per training (default 900)")
    p.add_argument("--out", type=Path, help="output folder (default: <first RUN>/heldout); a rerun resumes it")
    p.add_argument("--include-incomplete", action="store_true", help="keep runs stopped part-way (as evo.compare)")
    p.add_argument("--retry-failed", action="store_true", help="train again what failed (timeout, crash, ...)")
    p.add_argument("--allow-protocol-mismatch", action="store_true", help="take runs made under different task/"
                   "training settings, sandbox limits or sample budgets (refused by default, as evo.compare), flagging "
                   "the keys; every program is retrained here under one protocol (the first run's task and sandbox)")
    args = p.parse_args(argv)
    for name in ("top", "train_seeds", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.timeout_s <= 0:
        p.error("--timeout-s must be positive")
    return args


def heldout(args: argparse.Namespace) -> dict:
    folders = find_run_folders(args.runs)
    out = args.out or (Path(args.runs[0]) if Path(args.runs[0]).is_dir() else folders[0]) / "heldout"
    with opened(folders, load_run) as runs:
        check_same_task(runs)
        mismatch = check_same_protocol(runs, allow=args.allow_protocol_mismatch)
        variants = group_variants(runs, args.by)
        drop_twins(variants)
        incomplete = [] if args.include_incomplete else incomplete_runs([r for rs in variants.values() for r in rs])
        for label in variants:
            variants[label] = [r for r in variants[label] if not any(r is i for i in incomplete)]
        for r in incomplete:
            print(f"warning: {r.folder} is incomplete: left out (--include-incomplete keeps it)", file=sys.stderr)
        plan = {label: best_programs(rs, args.top) for label, rs in variants.items() if rs}
        if not any(plan.values()):
            raise CompareError("no run has a scored child (status 'ok', round >= 0): nothing to re-evaluate")
        config = runs[0].config
        task_cfg = dict(config["task"])
        if "_target_" not in task_cfg:
            raise CompareError(f"{runs[0].folder}: its stored task config has no _target_, so the task cannot be built")
        base_seed = int(task_cfg.get("train_seed", 0))
        seeds = [base_seed + i for i in range(args.train_seeds)]
        sandbox_cfg = {**dict(config.get("sandbox") or {}), "timeout_s": args.timeout_s}
        alpha = float(config.get("search", {}).get("alpha", 0.5))
        settings = {"task": {k: v for k, v in task_cfg.items() if k not in ("train_seed", "train_steps", "seeds_dir",
                                                                            "banned_words")},
                    "sandbox": sandbox_cfg, "alpha": alpha}
        out.mkdir(parents=True, exist_ok=True)
        settings_path = out / SETTINGS
        if settings_path.exists():
            before = json.loads(settings_path.read_text())
            if before != json.loads(json.dumps(settings)):
                diff = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
                raise CompareError(f"{out} holds trainings made under other settings ({', '.join(diff)} differ): "
                                   "pass another --out")
        settings_path.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
        results = out / RESULTS
        records = load_results(results)
        done = {_key(r) for r in records if not (args.retry_failed and r["status"] not in outcome.WORKING)}
        jobs = [(variant, p, seed) for seed in seeds for variant, programs in plan.items() for p in programs]
        pending = [j for j in jobs if (j[0], j[1]["code_hash"], j[2], args.steps) not in done]
        print(f"held-out re-evaluation: {sum(map(len, plan.values()))} programs of {len(plan)} variant(s) x "
              f"{len(seeds)} training seeds at {args.steps} steps: {len(jobs) - len(pending)} in {results}, "
              f"{len(pending)} to run", flush=True)
        cpus = cpu_slots(1, True)[0]
        cache_dir = _cache_dir(config)
        for n, (variant, p, seed) in enumerate(pending, 1):
            ev = train_program(p["code"], {**task_cfg, "train_steps": args.steps, "train_seed": seed}, sandbox_cfg,
                               alpha, cache_dir, cpus)
            record = {"variant": variant, "code_hash": p["code_hash"], "train_seed": seed, "steps": args.steps,
                      "run": p["run"], "child_id": p["id"], **ev, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            with open(results, "a") as f:   # appended as each ends: a kill loses only the training in flight
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
            records.append(record)
            acc = "" if ev["test_accuracy"] is None else f", test {ev['test_accuracy']:.3f}, fitness {ev['fitness']:.1f}"
            print(f"[{n}/{len(pending)}] {variant} {p['code_hash'][:10]} seed {seed}: {ev['status']}{acc}", flush=True)
        current = [r for r in records if r["steps"] == args.steps and r["train_seed"] in seeds]
        rows = summarise(current, plan)
        text = markdown(rows, args.steps, seeds)
        if mismatch:
            text += mismatch_note(mismatch, " of the searches")
        (out / "heldout.md").write_text(text)
        (out / "heldout.json").write_text(json.dumps({"steps": args.steps, "train_seeds": seeds, "top": args.top,
                                                      "variants": rows}, indent=2))
        print(text + f"wrote {out / 'heldout.md'}, {out / 'heldout.json'}, {results}")
        return {"out": out, "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return command(lambda: heldout(args))   # exit code 2 for a RunsError (CompareError among them)


if __name__ == "__main__":
    sys.exit(main())

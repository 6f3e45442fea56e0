"""Cost of the CLRS trust boundary on one whole child evaluation, both paths alternated in one run.

The seed ``seeds/clrs/v1.py`` (Triplet-GMPNN's own triplet function) through ``evo.sandbox.runner.run_in_sandbox``
(bwrap where usable, rlimits, cgroup, pinned to ``--cpu``), on

- ``single_process``: the former path (``evo.tasks.clrs.harness:evaluate_in_child``: the child's function is
  checked, trained and scored in the process that runs it), and
- ``two_stage``: the path the search uses (``harness:evaluate_source`` in ``evo.sandbox.runner.TWO_STAGE``: check and
  export in the sandboxed child, then checks, dm-clrs training and scoring in a pooled trusted worker that runs
  no child Python; its first run also starts that worker),

alternately (round r runs them in the order single, two-stage when r is even, else the reverse) so that load
from other jobs hits both alike. Reported per run: wall seconds of the whole evaluation, what the trainer
measured (``train_s``, ``compile_s``, ``s_per_step``, ``init_s``, ``eval_s``) and the scores, which must agree.

    python benchmarks/clrs_trust_cost.py                                  # tiny BFS (hidden 16, 5 nodes)
    python benchmarks/clrs_trust_cost.py --algorithm graham_scan --hidden 32 --length 8 --test-length 16 \
        --samples 200 --batch 16 --steps 300 --repeats 3                  # experiment=clrs_demo's child
    python benchmarks/clrs_trust_cost.py --hidden 128 --length 16 --samples 64 --batch 32 --steps 200 \
        --memory-mb 16384                                                 # the paper's sizes

Writes benchmarks/results/clrs_trust_cost.json (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evo.tasks.clrs.harness import CHILD_ENV  # noqa: E402  (light: no jax, no clrs)

PATHS = {"single_process": "evo.tasks.clrs.harness:evaluate_in_child",
         "two_stage": "evo.tasks.clrs.harness:evaluate_source"}
SCORES = ("num_params", "val_accuracy", "test_accuracy", "best_step")
TIMINGS = ("train_s", "compile_s", "s_per_step", "init_s", "eval_s", "test_s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algorithm", default="bfs")
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--length", type=int, default=5, help="training and validation graph size")
    ap.add_argument("--test-length", type=int, default=8)
    ap.add_argument("--samples", type=int, default=16, help="training trajectories (validation/test: 8)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="rounds; each runs both paths once")
    ap.add_argument("--cpu", type=int, default=1, help="core the children are pinned to")
    ap.add_argument("--memory-mb", type=int, default=4096,
                    help="sandbox.memory_mb of both paths (the paper's size, hidden 128 on 16 nodes, needs ~16384)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "clrs_trust_cost.json"))
    args = ap.parse_args(argv)

    for key, value in CHILD_ENV.items():
        os.environ.setdefault(key, value)
    from evo.sandbox import runner as sandbox
    from evo.sandbox.runner import SandboxLimits, run_in_sandbox
    from evo.tasks.clrs import data

    folder = pathlib.Path(tempfile.mkdtemp(prefix="clrs-trust-cost-"))
    names = {}
    for split, length, num, seed in (("train", args.length, args.samples, 5), ("val", args.length, 8, 1005),
                                     ("test", args.test_length, 8, 2008)):
        names[split] = data.pool_name(args.algorithm, split, length, num, seed)
        data.save(data.generate(args.algorithm, split, length, num, seed), folder, names[split])
    kwargs = {"data_dir": str(folder), "train_pools": [names["train"]], "val_pool": names["val"],
              "test_pool": names["test"], "nb_triplet_fts": 8, "use_ln": True, "steps": args.steps,
              "batch_size": args.batch, "eval_batch_size": 8, "hidden_dim": args.hidden,
              "eval_every": max(1, args.steps // 2), "seed": 0}
    code = (ROOT / "seeds" / "clrs" / "v1.py").read_text()
    limits = SandboxLimits(timeout_s=3600, memory_mb=args.memory_mb)
    runs = []
    load = [os.getloadavg()[0]]
    for r in range(args.repeats):
        order = list(PATHS) if r % 2 == 0 else list(reversed(PATHS))
        for name in order:
            t0 = time.perf_counter()
            res = run_in_sandbox(PATHS[name], kwargs, code, limits, readonly_paths=[str(folder)],
                                 extra_env=CHILD_ENV, cpus=[args.cpu])
            wall = time.perf_counter() - t0
            load.append(os.getloadavg()[0])
            if res.status != "ok":
                print(f"{name}: {res.status}: {res.reason}\n{res.log_tail[-2000:]}", file=sys.stderr)
                return 1
            run = {"round": r, "path": name, "wall_s": round(wall, 2),
                   **{k: res.payload[k] for k in SCORES},
                   **{k: round(res.payload[k], 4) for k in TIMINGS if k in res.payload},
                   "isolation": res.isolation}
            run["outside_training_s"] = round(wall - res.payload["train_s"] - res.payload.get("test_s", 0.0), 2)
            runs.append(run)
            print(json.dumps(run), flush=True)
    sandbox.close_trusted_pool()

    def best(name, key):
        return min(r[key] for r in runs if r["path"] == name)

    same = all(all(r[k] == runs[0][k] for k in SCORES) for r in runs)
    # the two paths train the same model through differently compiled steps: bit-identical for the first ~10 steps
    # (tests/test_clrs_trust.py), then float rounding differences grow; each path must repeat itself exactly
    same_within = {name: all(all(r[k] == first[k] for k in SCORES) for r in runs if r["path"] == name)
                   for name, first in ((n, next(r for r in runs if r["path"] == n)) for n in PATHS)}
    summary = {name: {key: best(name, key) for key in ("wall_s", "outside_training_s", "train_s", "s_per_step",
                                                       "compile_s")} for name in PATHS}
    ratios = {key: round(summary["two_stage"][key] / summary["single_process"][key], 3)
              for key in ("wall_s", "outside_training_s", "train_s", "s_per_step")}
    out = {"benchmark": "clrs_trust_cost", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "host": platform.node(), "python": platform.python_version(), "args": vars(args),
           "protocol": "seed v1, whole sandboxed evaluation per path, paths alternated per round, fastest of the "
                       "rounds per path (min over rounds of each quantity); load average (1 min) before and after "
                       "each run in load_average",
           "load_average": [round(x, 2) for x in load], "scores_identical_on_all_runs": same,
           "scores_identical_within_each_path": same_within,
           "best": summary, "ratio_two_stage_to_single_process": ratios, "runs": runs}
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"best": summary, "ratios": ratios, "scores_identical": same, "within_each_path": same_within},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a ``lax.scan`` over CLRS training steps could save: the per-step cost outside the computation.

A scan (issue 20: the MNIST-1D trainer has ``task.train_loop=scan``) removes one thing per step, the Python-side
dispatch of the jitted step: flattening its arguments (parameters, optimiser state, the batch), the call into XLA
and the outputs' wrapping. This measures that cost directly, in one process pinned to one core:

- ``step_s``: dm-clrs's ``BaselineModel.feedback`` of seed v1 (evo's trainer, ``evo.tasks.clrs.train``), mean of
  ``--steps`` steps after warm-up, blocked on at the end (as the trainer does between evaluations);
- ``dispatch_s``: a jitted function of the same arguments (params, key, batch, optimiser state) that returns the
  parameters unchanged: everything a step pays outside its computation, and nothing of it.

``dispatch_s / step_s`` bounds what a scan could buy. At ``experiment=clrs_demo``'s child size by default; the
paper's with ``--hidden 128 --length 16 --batch 32``.

    python benchmarks/clrs_step_overhead.py
    python benchmarks/clrs_step_overhead.py --algorithm bfs --hidden 128 --length 16 --batch 32 --samples 64

Writes benchmarks/results/clrs_step_overhead.json (``--out``); add ``--tag`` to keep several settings in it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algorithm", default="graham_scan")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--length", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--calls", type=int, default=400, help="calls of the do-nothing step")
    ap.add_argument("--cpu", type=int, default=1)
    ap.add_argument("--tag", default=None, help="key of this setting in the JSON (default: from the sizes)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "clrs_step_overhead.json"))
    args = ap.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jax

    from evo.tasks.clrs import data
    from evo.tasks.clrs.harness import load_program
    from evo.tasks.clrs.processor import evolved_factory
    from evo.tasks.clrs.train import TrainBatches, build_model

    folder = pathlib.Path(tempfile.mkdtemp(prefix="clrs-step-overhead-"))
    name = data.pool_name(args.algorithm, "train", args.length, args.samples, 5)
    data.save(data.generate(args.algorithm, "train", args.length, args.samples, 5), folder, name)
    pool = data.load(folder, name)
    batches = TrainBatches([pool], args.batch, seed=0)
    first = batches.batch(0)
    fn = load_program((ROOT / "seeds" / "clrs" / "v1.py").read_text())
    model = build_model(evolved_factory(fn, True, 8), pool.spec, first, hidden_dim=args.hidden)
    model.init(first.features, 1)
    key = jax.random.PRNGKey(0)
    fbs = [batches.batch(s) for s in range(args.steps + 3)]
    for fb in fbs[:3]:   # compile and warm up
        jax.block_until_ready(model.feedback(key, fb))
    t0 = time.perf_counter()
    for fb in fbs[3:]:
        loss = model.feedback(key, fb)
    jax.block_until_ready(loss)
    step_s = (time.perf_counter() - t0) / args.steps

    noop = jax.jit(lambda params, rng, feedback, opt_state: params)
    args_ = (model._device_params, key, fbs[0], model._device_opt_state)
    jax.block_until_ready(noop(*args_))
    t0 = time.perf_counter()
    for _ in range(args.calls):
        out = noop(*args_)
    jax.block_until_ready(out)
    dispatch_s = (time.perf_counter() - t0) / args.calls

    tag = args.tag or f"{args.algorithm}_h{args.hidden}_n{args.length}_b{args.batch}"
    path = pathlib.Path(args.out)
    results = json.loads(path.read_text()).get("results", {}) if path.exists() else {}
    results[tag] = {"args": vars(args), "step_s": round(step_s, 6), "dispatch_s": round(dispatch_s, 7),
                    "dispatch_share": round(dispatch_s / step_s, 5), "load_average": round(os.getloadavg()[0], 2),
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    out = {"benchmark": "clrs_step_overhead", "host": platform.node(), "python": platform.python_version(),
           "jax": jax.__version__, "backend": jax.default_backend(), "results": results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(results[tag], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

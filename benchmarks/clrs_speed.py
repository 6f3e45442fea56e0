"""Speed of evo's CLRS child trainer against dm-clrs's own training loop (run.py), same processor.

Protocol (BFS by default): batch 32, hidden 128, one training length (16; ``--train-lengths 4 7 11
13 16`` cycles them as run.py does), out-of-distribution test at length 64 (64 graphs, batches of 32).

- ``evo``: exactly what a child does. Pools from ``evo.tasks.clrs.data.generate`` (generated once, in
  its own process, and timed apart: a real run caches them on disk), read back with ``data.load``;
  batches from ``train.TrainBatches``; the model from ``train.build_model(processor.evolved_factory(
  v1))`` (the seed ``seeds/clrs/v1.py`` = Triplet-GMPNN's own triplet function, loaded with
  ``harness.load_program``; AdamW, weight decay 1e-4 as the task's default); ``model.feedback`` per
  step; the OOD test with ``train.evaluate_pool``.
- ``dmclrs``: run.py's own pipeline on ``clrs.get_processor_factory("triplet_gmpnn", use_ln=True,
  nb_triplet_fts=8)``: its ``make_multi_sampler`` (online sampler, ``num_samples=-1`` with
  ``track_max_steps``, run.py's p, ``process_random_pos``/``process_pred_as_input``/
  ``process_permutations``), ``clrs.models.BaselineModel`` with run.py's hyperparameters (Adam lr
  1e-3, clip 1.0, encoded+decoded hints, soft re-prediction, xavier_on_scalars), its training loop
  (``next(sampler)``, ``model.feedback``), and the OOD test with its ``collect_and_eval`` on a
  length-64 test sampler (2 x 32 graphs, as run.py builds a generated test split).

Each measurement runs in a fresh subprocess (as a child does: nothing compiled is shared), pinned to
one core (``--cpu``, default 0) with single-threaded XLA. Per side: ``init`` (run.py's eager init vs
evo's jitted one), step 0 (the training step's compilation + first step), then ``--steps`` timed
steps, each one blocked on (``block_until_ready`` on the loss, as run.py's per-step loss logging
does), then the OOD evaluation: first call (compiles predict at the test shape) and ``--eval-repeats``
steady calls. Compilations are counted with ``jax.monitoring`` (XLA backend compile events); a timed
step is flagged as a recompile when it compiled something (>= 0.5 s), or took > 5x the median step
(with several training lengths, the first step at each further length is one, on both sides).

Steady-state s/step = mean of the timed steps that did not compile. The repetitions alternate the
sides (evo, dmclrs, dmclrs, evo, ...) so that load from other jobs hits both alike; results are
medians over repetitions, ratios are medians of the per-repetition ratios dmclrs_s / evo_s
(>= 0.95: no overhead from evo's wrapper). A training step's work grows with the batch's padded
hint length T (evo: its pool's longest trajectory; dm-clrs: the longest seen by its online sampler,
estimated from 1000 samples at start), so T is reported and the s/step ratio is also given per hint
step (``s_per_step_per_hint_step``).

    python benchmarks/clrs_speed.py                       # BFS, 30 steps, 2 repeats (~9 min)
    python benchmarks/clrs_speed.py --steps 10 --repeats 1 --out /tmp/clrs_speed.json

Writes benchmarks/results/clrs_speed.json (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evo.tasks.clrs.harness import CHILD_ENV  # noqa: E402  (light: no jax, no clrs)

# Single-threaded XLA, set before jax is imported (here and, inherited, in every worker).
for _key, _value in CHILD_ENV.items():
    os.environ.setdefault(_key, _value)
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

SEED_FILE = ROOT / "seeds/clrs/v1.py"
RECOMPILE_FACTOR = 5.0
BIG_COMPILE_S = 0.5   # XLA compiles shorter than this are jax's small helper ops (random.split, ...)


# ----------------------------------------------------------------------------------------------
# Worker side (runs in a subprocess; imports jax and dm-clrs).

class CompileLog:
    """XLA backend compile events (jax.monitoring), with the time they were reported."""

    def __init__(self):
        import jax
        self.events = []
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.events.append((time.perf_counter(), float(duration)))

    def between(self, t0, t1):
        return [d for t, d in self.events if t0 <= t <= t1]


def timed_steps(step_fn, steps: int, log: CompileLog) -> dict:
    """Step 0 (compile) then ``steps`` timed steps; ``step_fn(i)`` returns (loss, data_s)."""
    import jax
    times, data_times, compiles = [], [], []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss, data_s = step_fn(i)
        jax.block_until_ready(loss)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        data_times.append(data_s)
        compiles.append(log.between(t0, t1))
    timed, timed_compiles = times[1:], compiles[1:]
    med = statistics.median(timed)
    flagged = [i + 1 for i, (s, c) in enumerate(zip(timed, timed_compiles))
               if any(d >= BIG_COMPILE_S for d in c) or s > RECOMPILE_FACTOR * med]
    clean = [s for i, s in enumerate(timed) if i + 1 not in flagged]
    return {
        "first_step_s": times[0],                                  # compile + first step
        "first_step_compile_s": sum(compiles[0]),
        "step_s": times,                                           # all steps, step 0 first
        "data_s": data_times,                                      # host-side batch production, per step
        "s_per_step": sum(clean) / len(clean),                     # steady state: timed steps without compiles
        "s_per_step_median": statistics.median(clean),
        "data_s_per_step": statistics.mean([data_times[i] for i in range(1, steps + 1) if i not in flagged]),
        "recompile_steps": flagged,
        "recompiles": len(flagged),
        "recompile_s": sum(times[i] for i in flagged),             # whole steps (compile + step)
        "recompile_compile_s": sum(sum(compiles[i]) for i in flagged),
        "timed_window_s": sum(timed),                              # the N timed steps, recompiles included
        "final_loss": float(loss),
    }


def timed_evals(eval_fn, repeats: int, num_batches: int, log: CompileLog) -> dict:
    t0 = time.perf_counter()
    score = eval_fn()
    t1 = time.perf_counter()
    first = t1 - t0
    steady = []
    for _ in range(repeats):
        ts = time.perf_counter()
        eval_fn()
        steady.append(time.perf_counter() - ts)
    return {"first_call_s": first, "first_call_compile_s": sum(log.between(t0, t1)),
            "steady_calls_s": steady, "batches_per_call": num_batches,
            "s_per_batch": statistics.median(steady) / num_batches,
            "compiles_in_steady_calls": len([d for d in log.between(t1, time.perf_counter()) if d >= BIG_COMPILE_S]),
            "score": score}


def worker_gen(args) -> dict:
    """Generate the evo pools (train lengths + OOD test) and save them, timing each."""
    t0 = time.perf_counter()
    import clrs  # noqa: F401  (tensorflow: outside the generation time)

    from evo.tasks.clrs import data
    import_s = time.perf_counter() - t0
    out = {"import_s": import_s, "pools": {}}
    for split, name, length, num, seed in pool_list(args):
        t0 = time.perf_counter()
        pool = data.generate(args.algorithm, split, length, num, seed)
        t1 = time.perf_counter()
        data.save(pool, pathlib.Path(args.data), name)
        out["pools"][name] = {"split": split, "length": length, "num_samples": num, "seed": seed,
                              "generate_s": t1 - t0, "save_s": time.perf_counter() - t1,
                              "hint_steps": int(pool.feedback.features.hints[0].data.shape[0])}
    out["generate_s"] = sum(p["generate_s"] for p in out["pools"].values())
    return out


def pool_list(args):
    """The pools a CLRSTask with these settings would hand its children (names and seeds as task.py)."""
    from evo.tasks.clrs.task import CLRSTask
    task = CLRSTask(algorithm=args.algorithm, train_lengths=args.train_lengths, train_samples=args.train_samples,
                    test_length=args.test_length, test_samples=args.test_samples, data_seed=args.data_seed)
    specs = task.pool_specs()
    out = []
    for split in ("train", "test"):
        for name, arg in specs[split]:
            _, length, num, seed = arg.split(":")
            out.append((split, name, int(length), int(num), int(seed)))
    return out


def worker_evo(args) -> dict:
    t0 = time.perf_counter()
    import jax

    from evo.tasks.clrs import data, train
    from evo.tasks.clrs.harness import load_program
    from evo.tasks.clrs.processor import evolved_factory
    log = CompileLog()
    import_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    pools = pool_list(args)
    train_pools = [data.load(pathlib.Path(args.data), name) for split, name, *_ in pools if split == "train"]
    test_pool = data.load(pathlib.Path(args.data), [name for split, name, *_ in pools if split == "test"][0])
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    fn = load_program(SEED_FILE.read_text())
    batches = train.TrainBatches(train_pools, args.batch_size, args.seed)
    first = batches.batch(0)
    model = train.build_model(evolved_factory(fn, True, 8), train_pools[0].spec, first, hidden_dim=args.hidden,
                              learning_rate=1e-3, grad_clip=1.0, weight_decay=args.weight_decay)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.init(first.features, args.seed + 1)
    init_s = time.perf_counter() - t0
    state = {"key": jax.random.PRNGKey(args.seed)}

    def step(i):
        td = time.perf_counter()
        fb = first if i == 0 else batches.batch(i)
        data_s = time.perf_counter() - td
        state["key"], sub = jax.random.split(state["key"])
        return model.feedback(sub, fb), data_s

    train_r = timed_steps(step, args.steps, log)
    num_batches = -(-test_pool.size // args.eval_batch_size)
    eval_key = jax.random.PRNGKey(args.seed + 3)
    eval_r = timed_evals(lambda: train.evaluate_pool(model, test_pool, args.eval_batch_size, eval_key),
                         args.eval_repeats, num_batches, log)
    return {"import_s": import_s, "load_pools_s": load_s, "setup_s": setup_s, "init_s": init_s,
            "num_params": train.count_params(model.params),
            "train_hint_steps": sorted({int(p.feedback.features.hints[0].data.shape[0]) for p in train_pools}),
            "test_hint_steps": int(test_pool.feedback.features.hints[0].data.shape[0]),
            "train": train_r, "ood_eval": eval_r}


def worker_dmclrs(args) -> dict:
    """run.py's main() for one algorithm, non-chunked, without its periodic validation/checkpoints."""
    import functools

    t0 = time.perf_counter()
    import clrs
    import jax
    import numpy as np
    from clrs.examples import run   # dm-clrs's own make_sampler / collect_and_eval
    from evo.tasks.clrs.train import count_params
    log = CompileLog()
    import_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    rng = np.random.RandomState(args.seed)
    rng_key = jax.random.PRNGKey(rng.randint(2**32))
    p = tuple(0.1 + 0.1 * i for i in range(9))
    if args.algorithm in ("articulation_points", "bridges", "mst_kruskal", "bipartite_matching"):
        p = tuple(np.array(p) / 2)
    common = dict(algorithm=args.algorithm, rng=rng, enforce_pred_as_input=True, enforce_permutations=True,
                  chunk_length=16)
    train_sampler, _, spec = run.make_multi_sampler(
        args.train_lengths, split="train", batch_size=args.batch_size, multiplier=-1, randomize_pos=True,
        chunked=False, sampler_kwargs=dict(p=p, length_needle=-8), **common)
    train_sampler_s = time.perf_counter() - t0
    mult = clrs.CLRS_30_ALGS_SETTINGS[args.algorithm]["num_samples_multiplier"]
    val_sampler, _, spec = run.make_multi_sampler(
        [max(args.train_lengths)], split="val", batch_size=args.eval_batch_size, multiplier=2 * mult,
        randomize_pos=True, chunked=False, sampler_kwargs=dict(p=p, length_needle=-8), **common)
    # run.py's test split is the CLRS-30 files (length 64, 2 x 32 graphs for BFS); generated here alike.
    test_samples = args.test_samples
    test_sampler, _, spec = run.make_multi_sampler(
        [args.test_length], split="test", batch_size=args.eval_batch_size, multiplier=test_samples // 32,
        randomize_pos=False, chunked=False, sampler_kwargs={}, **common)
    processor_factory = clrs.get_processor_factory("triplet_gmpnn", use_ln=True, nb_triplet_fts=8, nb_heads=1)
    model = clrs.models.BaselineModel(
        spec=[spec], dummy_trajectory=[next(val_sampler)], processor_factory=processor_factory,
        hidden_dim=args.hidden, encode_hints=True, decode_hints=True, encoder_init="xavier_on_scalars",
        use_lstm=False, learning_rate=1e-3, grad_clip_max_norm=1.0, checkpoint_path=tempfile.gettempdir(),
        freeze_processor=False, dropout_prob=0.0, hint_teacher_forcing=0.0, hint_repred_mode="soft",
        nb_msg_passing_steps=1)
    setup_s = time.perf_counter() - t0

    first = next(train_sampler)
    t0 = time.perf_counter()
    model.init([first.features], args.seed + 1)   # run.py: eager Haiku init
    init_s = time.perf_counter() - t0
    state = {"key": rng_key}
    hint_steps = []

    def step(i):
        td = time.perf_counter()
        fb = first if i == 0 else next(train_sampler)
        data_s = time.perf_counter() - td
        hint_steps.append(int(fb.features.hints[0].data.shape[0]))
        rng_key, new_rng_key = jax.random.split(state["key"])   # as run.py
        loss = model.feedback(rng_key, fb, 0)
        state["key"] = new_rng_key
        return loss, data_s

    train_r = timed_steps(step, args.steps, log)
    # collect_and_eval draws batches from the test sampler until test_samples graphs are predicted.
    # Each call gets a fresh sampler over the same dataset, so that every call sees the same data.
    num_batches = -(-test_samples // args.eval_batch_size)
    eval_key = jax.random.PRNGKey(args.seed + 3)
    predict = functools.partial(model.predict, algorithm_index=0)
    eval_r = timed_evals(lambda: run.collect_and_eval(test_sampler, predict, test_samples, eval_key, None)["score"],
                         args.eval_repeats, num_batches, log)
    return {"import_s": import_s, "train_sampler_init_s": train_sampler_s, "setup_s": setup_s, "init_s": init_s,
            "num_params": count_params(model.params),
            "train_hint_steps": sorted(set(hint_steps)),
            "test_hint_steps": int(next(test_sampler).features.hints[0].data.shape[0]),
            "train": train_r, "ood_eval": eval_r}


def run_worker(kind: str, args, data_dir: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", kind, "--data", data_dir,
           "--result", result_path, *args.passthrough]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=os.environ.copy(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(pathlib.Path(result_path).read_text())
    os.unlink(result_path)
    result["process_wall_s"] = wall
    return result


# ----------------------------------------------------------------------------------------------
# Parent side.

def machine_info() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("jax", "jaxlib", "dm-clrs", "dm-haiku", "optax", "numpy", "tensorflow"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {"cpu_count": os.cpu_count(), "cpu_affinity": sorted(os.sched_getaffinity(0)),
            "cpu_model": cpu, "platform": platform.platform(), "python": platform.python_version(),
            **versions, "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "")}


def med(values):
    return statistics.median(values)


def summarise(runs: list) -> dict:
    tr = [r["train"] for r in runs]
    ev = [r["ood_eval"] for r in runs]
    return {
        "s_per_step": med([t["s_per_step"] for t in tr]),
        "data_s_per_step": med([t["data_s_per_step"] for t in tr]),
        "first_step_s": med([t["first_step_s"] for t in tr]),
        "first_step_compile_s": med([t["first_step_compile_s"] for t in tr]),
        "init_s": med([r["init_s"] for r in runs]),
        "recompiles": med([t["recompiles"] for t in tr]),
        "recompile_s": med([t["recompile_s"] for t in tr]),
        "total_s": med([total_s(r) for r in runs]),
        "ood_s_per_batch": med([e["s_per_batch"] for e in ev]),
        "ood_first_call_s": med([e["first_call_s"] for e in ev]),
        "ood_score": med([e["score"] for e in ev]),
        "final_loss": med([t["final_loss"] for t in tr]),
        "train_hint_steps": sorted({n for r in runs for n in r["train_hint_steps"]}),
        "test_hint_steps": sorted({r["test_hint_steps"] for r in runs}),
        **({"train_sampler_init_s": med([r["train_sampler_init_s"] for r in runs])}
           if "train_sampler_init_s" in runs[0] else {}),
    }


def total_s(r: dict) -> float:
    """init + step 0 (compile) + the N timed steps, recompiles included."""
    return r["init_s"] + r["train"]["first_step_s"] + r["train"]["timed_window_s"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--algorithm", default="bfs")
    parser.add_argument("--train-lengths", type=int, nargs="+", default=[16],
                        help="training graph sizes, cycled one per step (run.py: 4 7 11 13 16)")
    parser.add_argument("--test-length", type=int, default=64, help="OOD test graph size")
    parser.add_argument("--test-samples", type=int, default=64, help="OOD test graphs (a multiple of 32)")
    parser.add_argument("--train-samples", type=int, default=1000, help="evo's training pool size (task default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="evo's AdamW decay (task default)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per side (after step 0)")
    parser.add_argument("--eval-repeats", type=int, default=5, help="steady-state OOD evaluation calls per side")
    parser.add_argument("--repeats", type=int, default=2, help="repetitions, sides alternated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=0, help="pin every process to this core")
    parser.add_argument("--data", default=None, help="pool folder (default: a temporary one)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/clrs_speed.json"))
    parser.add_argument("--worker", choices=["gen", "evo", "dmclrs"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.test_samples % 32:
        parser.error("--test-samples must be a multiple of 32 (run.py's test split is 32 x multiplier graphs)")

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    if args.worker:
        result = {"gen": worker_gen, "evo": worker_evo, "dmclrs": worker_dmclrs}[args.worker](args)
        pathlib.Path(args.result).write_text(json.dumps(result))
        return result

    args.passthrough = ["--algorithm", args.algorithm, "--train-lengths", *map(str, args.train_lengths),
                        "--test-length", str(args.test_length), "--test-samples", str(args.test_samples),
                        "--train-samples", str(args.train_samples), "--batch-size", str(args.batch_size),
                        "--eval-batch-size", str(args.eval_batch_size), "--hidden", str(args.hidden),
                        "--weight-decay", str(args.weight_decay), "--steps", str(args.steps),
                        "--eval-repeats", str(args.eval_repeats), "--seed", str(args.seed),
                        "--data-seed", str(args.data_seed), "--cpu", str(args.cpu)]
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="clrs_speed_")
        args.data = tmp.name
    print(f"generating evo pools in {args.data} ...", flush=True)
    gen = run_worker("gen", args, args.data)
    print(f"  {gen['generate_s']:.1f} s: " + ", ".join(f"{k} {v['generate_s']:.1f} s" for k, v in gen["pools"].items()),
          flush=True)

    runs = {"evo": [], "dmclrs": []}
    for rep in range(args.repeats):
        order = ("evo", "dmclrs") if rep % 2 == 0 else ("dmclrs", "evo")
        for kind in order:
            r = run_worker(kind, args, args.data)
            r["repeat"] = rep
            runs[kind].append(r)
            t = r["train"]
            print(f"  repeat {rep} {kind:6s}: {t['s_per_step']:.3f} s/step (data {t['data_s_per_step'] * 1e3:.1f} ms), "
                  f"step0 {t['first_step_s']:.1f} s, init {r['init_s']:.1f} s, recompiles {t['recompiles']} "
                  f"({t['recompile_s']:.1f} s), OOD {r['ood_eval']['s_per_batch']:.3f} s/batch "
                  f"(first call {r['ood_eval']['first_call_s']:.1f} s), total {total_s(r):.1f} s", flush=True)

    per_rep = []
    for e, d in zip(runs["evo"], runs["dmclrs"]):
        per_rep.append({"s_per_step": d["train"]["s_per_step"] / e["train"]["s_per_step"],
                        "ood_s_per_batch": d["ood_eval"]["s_per_batch"] / e["ood_eval"]["s_per_batch"],
                        "total_s": total_s(d) / total_s(e),
                        # the step's work grows with the padded hint length T (the scan over time):
                        # the same ratio per hint step, i.e. with the padding difference taken out
                        # (meaningful for one training length: one T per side)
                        "s_per_step_per_hint_step": (d["train"]["s_per_step"] / max(d["train_hint_steps"]))
                        / (e["train"]["s_per_step"] / max(e["train_hint_steps"]))
                        if len(args.train_lengths) == 1 else None})
    ratios = {k: med([r[k] for r in per_rep]) if per_rep[0][k] is not None else None for k in per_rep[0]}
    summary = {"evo": summarise(runs["evo"]), "dmclrs": summarise(runs["dmclrs"])}
    result = {
        "protocol": {
            "algorithm": args.algorithm, "train_lengths": args.train_lengths, "batch_size": args.batch_size,
            "hidden": args.hidden, "test_length": args.test_length, "test_samples": args.test_samples,
            "eval_batch_size": args.eval_batch_size, "evo_train_pool_samples": args.train_samples,
            "evo_weight_decay": args.weight_decay, "timed_steps": args.steps, "eval_repeats": args.eval_repeats,
            "repeats": args.repeats, "seed": args.seed, "pinned_cpu": args.cpu,
            "evo": "data.generate pools -> data.load -> TrainBatches -> build_model(evolved_factory(seeds/clrs/v1.py)) "
                   "(AdamW) -> model.feedback; OOD: evaluate_pool",
            "dmclrs": "run.py make_multi_sampler (online, num_samples=-1, track_max_steps) -> BaselineModel("
                      "get_processor_factory('triplet_gmpnn', use_ln=True, nb_triplet_fts=8)) (Adam) -> "
                      "model.feedback; OOD: run.collect_and_eval (model.predict + clrs.evaluate)",
            "timing": "fresh process per side and repeat; every step blocked on; steady s/step = mean of timed steps "
                      "without a compile (XLA compile event >= 0.5 s or > 5x median); total = init + step 0 + "
                      "timed steps; ratios = median over repeats of dmclrs / evo (>= 0.95: no evo overhead)",
        },
        "summary": summary,
        "ratios_dmclrs_over_evo": ratios,
        "ratios_per_repeat": per_rep,
        "evo_data_generation": gen,
        "runs": runs,
        "loadavg_before_after": [load_before, os.getloadavg()],
        "benchmark_wall_s": time.perf_counter() - t_start,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()

    print(f"\nCLRS {args.algorithm}, batch {args.batch_size}, hidden {args.hidden}, train lengths "
          f"{args.train_lengths}, OOD {args.test_samples} graphs at {args.test_length}; medians of {args.repeats} "
          f"repeats, 1 pinned core (load avg {load_before[0]:.2f})\n")
    print("| | evo | dm-clrs run.py | ratio dm-clrs/evo |\n|---|---|---|---|")
    s, r = summary, ratios
    print(f"| s/step (steady) | {s['evo']['s_per_step']:.3f} | {s['dmclrs']['s_per_step']:.3f} "
          f"| {r['s_per_step']:.3f} |")
    print(f"| OOD eval s/batch (steady) | {s['evo']['ood_s_per_batch']:.3f} | {s['dmclrs']['ood_s_per_batch']:.3f} "
          f"| {r['ood_s_per_batch']:.3f} |")
    print(f"| total for {args.steps} steps (init + compiles) | {s['evo']['total_s']:.1f} | "
          f"{s['dmclrs']['total_s']:.1f} | {r['total_s']:.3f} |")
    print(f"| step 0 (compile + step) | {s['evo']['first_step_s']:.1f} | {s['dmclrs']['first_step_s']:.1f} | |")
    print(f"| recompiles in window | {s['evo']['recompiles']} | {s['dmclrs']['recompiles']} | |")
    print(f"| padded hint steps T (train) | {s['evo']['train_hint_steps']} | {s['dmclrs']['train_hint_steps']} "
          f"| per hint step: {r['s_per_step_per_hint_step'] or float('nan'):.3f} |")
    print(f"| init | {s['evo']['init_s']:.1f} | {s['dmclrs']['init_s']:.1f} | |")
    print(f"| OOD first call | {s['evo']['ood_first_call_s']:.1f} | {s['dmclrs']['ood_first_call_s']:.1f} | |")
    print(f"\nevo pool generation (one-off, cached on disk): {gen['generate_s']:.1f} s -> {out}")
    return result


if __name__ == "__main__":
    main()

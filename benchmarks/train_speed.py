"""Speed of evo's MNIST-1D child trainer against a plain PyTorch loop (same net, data, batches).

Trains the seed CNN (Greydanus 2020, 5,210 params) for the paper's protocol (8000 steps, batch 128,
AdamW lr 0.01, weight decay 1e-4, evaluation every 250 steps) with
``evo.tasks.mnist1d.train.train_and_evaluate``, then the same network written in PyTorch
(``torch.set_num_threads(1)``, its best setting on this VM) on the same batches, and writes JSON.

    python benchmarks/train_speed.py [--steps 8000] [--out benchmarks/results/train_speed.json]

Both run in this process, one after the other, single-threaded; ``--repeats N`` runs each N times
alternately and keeps the fastest run of each (the VM's 2 cores are shared: timings are noisy);
``--cpu N`` pins the whole process to core N, as the sandbox pins a child.

    python benchmarks/train_speed.py --sandbox [--repeats 2] [--out benchmarks/results/train_speed_sandbox.json]

``--sandbox`` instead measures the cost of the trust boundary on one whole child evaluation: the seed CNN
through ``evo.sandbox.runner.run_in_sandbox`` (bwrap where usable, rlimits, cgroup, pinned to ``--cpu``, default 0)
on the former single-process path (``harness:evaluate_in_child``: build, check and train where the child's
Python runs) and on the two-process path the search uses (``harness:evaluate_source``: export in the
sandboxed child, checks, training and scoring in a fresh trusted process), alternately, keeping the fastest
run of each.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evo.tasks.mnist1d.harness import CHILD_ENV  # noqa: E402  (light: no jax)

# Single-threaded XLA, set before jax is imported: the same settings a sandboxed child gets.
for _key, _value in CHILD_ENV.items():
    os.environ.setdefault(_key, _value)
# --cpu N pins this process to core N before jax and torch start their thread pools.
if "--cpu" in sys.argv[1:-1]:
    os.sched_setaffinity(0, {int(sys.argv[sys.argv.index("--cpu") + 1])})

import numpy as np  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from evo.tasks.mnist1d.train import batch_order, train_and_evaluate  # noqa: E402  (imports jax)

torch.set_num_threads(1)  # 2 threads are pathological on this VM (platform notes)


def build_jax_model():
    namespace = {"__name__": "child"}
    exec(compile((ROOT / "seeds/mnist1d/cnn.py").read_text(), "child.py", "exec"), namespace)  # noqa: S102
    return namespace["Model"]()


def run_jax(splits, steps, seed):
    t0 = time.perf_counter()
    r = train_and_evaluate(build_jax_model(), splits, steps=steps, seed=seed)
    r["total_s"] = time.perf_counter() - t0
    return r


def run_torch(splits, steps, seed, batch_size=128, learning_rate=0.01, weight_decay=1e-4, eval_every=250):
    torch.manual_seed(seed)

    class ConvBase(nn.Module):  # Greydanus (2020), mnist1d repository notebooks/models.py
        def __init__(self, channels=25, linear_in=125):
            super().__init__()
            self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
            self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
            self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
            self.linear = nn.Linear(linear_in, 10)

        def forward(self, x):
            x = x.view(-1, 1, x.shape[-1])
            h = self.conv3(self.conv2(self.conv1(x).relu()).relu()).relu()
            return self.linear(h.view(h.shape[0], -1))

    t0 = time.perf_counter()
    model = ConvBase()
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    x, y = torch.from_numpy(splits["x_train"]), torch.from_numpy(splits["y_train"]).long()
    xv, yv = torch.from_numpy(splits["x_val"]), torch.from_numpy(splits["y_val"]).long()
    xt, yt = torch.from_numpy(splits["x_test"]), torch.from_numpy(splits["y_test"]).long()
    order = torch.from_numpy(batch_order(len(y), steps, batch_size, seed)).long().view(steps, batch_size)
    loss_fn = nn.CrossEntropyLoss()
    best_val, best_test, best_step = -1.0, 0.0, 0
    t1 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = order[step - 1]
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                val = (model(xv).argmax(-1) == yv).sum().item() / len(yv)
                if val > best_val:
                    best_val, best_step = val, step
                    best_test = (model(xt).argmax(-1) == yt).sum().item() / len(yt)
    t2 = time.perf_counter()
    return {"num_params": sum(p.numel() for p in model.parameters()), "val_accuracy": best_val,
            "test_accuracy": best_test, "best_step": best_step, "final_train_loss": float(loss.item()),
            "train_s": t2 - t1, "steps_per_s": steps / (t2 - t1), "total_s": t2 - t0}


def machine_info():
    import flax
    import jax
    import jaxlib
    import optax

    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu, "platform": platform.platform(), "python": platform.python_version(),
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
        "optax": optax.__version__, "torch": torch.__version__, "numpy": np.__version__,
        "jax_backend": jax.default_backend(), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "torch_threads": torch.get_num_threads(),
    }


def run_sandbox_comparison(args) -> dict:
    """Per-child wall time, single-process (old) vs export + trusted process (new), same run, alternated."""
    import tempfile

    from evo.sandbox import runner as sandbox
    from evo.sandbox.runner import SandboxLimits, run_in_sandbox
    from evo.tasks.mnist1d.data import make_splits, save_splits

    code = (ROOT / "seeds/mnist1d/cnn.py").read_text()
    # the trusted stage on the pool of long-lived trusted workers (what the search uses), and on a fresh process
    paths = {"single_process": "evo.tasks.mnist1d.harness:evaluate_in_child",
             "trusted_two_process": "evo.tasks.mnist1d.harness:evaluate_source",
             "trusted_two_process_no_pool": "evo.tasks.mnist1d.harness:evaluate_source"}
    runs = {name: [] for name in paths}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "splits.npz")
        save_splits(make_splits(), data)
        kwargs = {"data_path": data, "steps": args.steps, "eval_every": 250, "seed": args.seed}
        for _ in range(args.repeats):
            for name, entry in paths.items():
                sandbox.TRUSTED_POOL = not name.endswith("no_pool")
                res = run_in_sandbox(entry, kwargs, code, SandboxLimits(timeout_s=1800), readonly_paths=[data],
                                     extra_env=CHILD_ENV, cpus=[args.cpu if args.cpu is not None else 0])
                if res.status != "ok":
                    raise SystemExit(f"{name}: {res.status} {res.reason}\n{res.log_tail}")
                runs[name].append({"wall_s": res.wall_s, "outside_training_s": res.wall_s - res.payload["train_s"],
                                   **{k: res.payload[k] for k in (
                                       "num_params", "val_accuracy", "test_accuracy", "compile_s", "train_s")}})
                print(f"  {name:20s} {res.wall_s:6.1f} s  (compile {res.payload['compile_s']:.1f} s, "
                      f"train {res.payload['train_s']:.1f} s)  {res.isolation}", flush=True)
    sandbox.TRUSTED_POOL = True
    sandbox.close_trusted_pool()
    best = {name: min(r["wall_s"] for r in rs) for name, rs in runs.items()}
    best_outside = {name: min(r["outside_training_s"] for r in rs) for name, rs in runs.items()}
    return {
        "protocol": {"model": "seeds/mnist1d/cnn.py", "steps": args.steps, "batch_size": 128, "eval_every": 250,
                     "seed": args.seed, "repeats": args.repeats, "pinned_cpu": args.cpu or 0,
                     "paths": paths, "note": "wall_s: the whole sandboxed evaluation of one child (both "
                     "processes for the two-process paths), fastest of the repeats; outside_training_s: wall_s "
                     "less the training loop (the same computation on every path: process starts, imports, "
                     "export, checks, compilation); the pool's first run includes starting its trusted worker"},
        "best_wall_s": best,
        "best_outside_training_s": best_outside,
        "ratio_two_process_over_single": best["trusted_two_process"] / best["single_process"],
        "ratio_two_process_no_pool_over_single": best["trusted_two_process_no_pool"] / best["single_process"],
        "ratio_outside_training_two_process_over_single":
            best_outside["trusted_two_process"] / best_outside["single_process"],
        "same_scores": all(a["val_accuracy"] == b["val_accuracy"] and a["test_accuracy"] == b["test_accuracy"]
                           and a["num_params"] == b["num_params"]
                           for other in ("trusted_two_process", "trusted_two_process_no_pool")
                           for a, b in zip(runs["single_process"], runs[other])),
        "runs": runs,
        "loadavg_before_after": [load_before, os.getloadavg()],
        "machine": machine_info(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="alternate runs; keep the fastest of each")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core (as a sandboxed child is)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/train_speed[_sandbox].json")
    parser.add_argument("--sandbox", action="store_true",
                        help="compare whole sandboxed child evaluations: single process vs trusted two-process")
    args = parser.parse_args(argv)
    if args.sandbox:
        result = run_sandbox_comparison(args)
        out = pathlib.Path(args.out or ROOT / "benchmarks/results/train_speed_sandbox.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"two-process / single-process wall time per child: {result['ratio_two_process_over_single']:.3f} "
              f"(no pool: {result['ratio_two_process_no_pool_over_single']:.3f}; outside training: "
              f"{result['ratio_outside_training_two_process_over_single']:.3f}; best {result['best_wall_s']}), "
              f"same scores: {result['same_scores']} -> {out}")
        return result
    args.out = args.out or str(ROOT / "benchmarks/results/train_speed.json")

    from evo.tasks.mnist1d.data import make_splits

    splits = make_splits()
    load_before = os.getloadavg()
    jax_runs, torch_runs = [], []
    for _ in range(args.repeats):
        jax_runs.append(run_jax(splits, args.steps, args.seed))
        torch_runs.append(run_torch(splits, args.steps, args.seed))
    jx = max(jax_runs, key=lambda r: r["steps_per_s"])
    pt = max(torch_runs, key=lambda r: r["steps_per_s"])
    result = {
        "protocol": {"model": "seeds/mnist1d/cnn.py", "steps": args.steps, "batch_size": 128,
                     "optimizer": "AdamW lr 0.01 weight_decay 1e-4", "eval_every": 250, "seed": args.seed,
                     "repeats": args.repeats, "pinned_cpu": args.cpu},
        "jax": {k: jx[k] for k in ("num_params", "steps_per_s", "compile_s", "train_s", "total_s",
                                   "val_accuracy", "test_accuracy", "best_step", "final_train_loss")},
        "torch": {k: pt[k] for k in ("num_params", "steps_per_s", "train_s", "total_s", "val_accuracy",
                                     "test_accuracy", "best_step", "final_train_loss")},
        "all_steps_per_s": {"jax": [r["steps_per_s"] for r in jax_runs],
                            "torch": [r["steps_per_s"] for r in torch_runs]},
        "ratio_jax_over_torch_steps_per_s": jx["steps_per_s"] / pt["steps_per_s"],
        "loadavg_before_after": [load_before, os.getloadavg()],
        "machine": machine_info(),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"MNIST-1D seed CNN, {args.steps} steps, batch 128, AdamW lr 0.01, 1 thread "
          f"(load avg {load_before[0]:.2f})")
    print(f"  jax/evo : {jx['steps_per_s']:7.1f} steps/s  ({1e3 / jx['steps_per_s']:.3f} ms/step), "
          f"compile {jx['compile_s']:.2f} s, total {jx['total_s']:.1f} s, "
          f"val {jx['val_accuracy']:.3f} test {jx['test_accuracy']:.3f}")
    print(f"  pytorch : {pt['steps_per_s']:7.1f} steps/s  ({1e3 / pt['steps_per_s']:.3f} ms/step), "
          f"total {pt['total_s']:.1f} s, val {pt['val_accuracy']:.3f} test {pt['test_accuracy']:.3f}")
    print(f"  ratio jax/torch steps/s: {result['ratio_jax_over_torch_steps_per_s']:.2f}x  -> {out}")
    return result


if __name__ == "__main__":
    main()

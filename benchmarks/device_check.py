"""The GPU check's measurements of evo's own trainer and evaluator (benchmarks/device_check.sh runs it).

    python benchmarks/device_check.py train    [--steps 8000] [--chunks 10 50] [--device cuda|cpu] --out F.json
    python benchmarks/device_check.py children [--levels 1 2 4 8] [--child-steps 2000] [--device gpu|cpu] --out F.json

``train``: the seed CNN (seeds/mnist1d/cnn.py) on MNIST-1D, batch 128, AdamW lr 0.01 (the paper's EVAL), in
one process, one after the other on the same device: evo's trainer (``train_and_evaluate``, evaluations every
250 steps included), the same jitted step from a bare Python loop, the same step ``--chunks`` at a time inside
``lax.scan`` (the per-backend choice of evo.tasks.mnist1d.train.TRAIN_LOOP_MEASURED rests on loop vs scan), and a plain PyTorch loop of
the same net on the same batches (with the same evaluations). Ratios are in the same run.

``children``: children per hour through ``evaluator=local`` (evo.search.evaluators.LocalEvaluator, the real sandbox,
the two-process MNIST-1D path) with 1, 2, 4, 8 children at once sharing the device (``workers_per_gpu``):
``2 x level`` seed children per level (the seeds cycled), wall clock from the first submission to the last
result. On a CPU machine ``--device cpu`` runs the same code path with small sizes (the check of the script).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _machine(device: str) -> dict:
    import jax
    info = {"python": platform.python_version(), "jax": jax.__version__, "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()], "cpus": os.cpu_count(), "device_arg": device}
    try:
        import torch
        info.update(torch=torch.__version__, cuda=torch.cuda.is_available(),
                    gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except ImportError:
        pass
    return info


# ------------------------------------------------------------------------------------------ train

def _seed_cnn():
    ns = {"__name__": "child"}
    exec(compile((ROOT / "seeds/mnist1d/cnn.py").read_text(), "child.py", "exec"), ns)  # noqa: S102 (our seed)
    return ns["Model"]()


def _state(model, x_train, seed):
    import jax
    import jax.numpy as jnp
    import optax

    from evo.tasks.mnist1d.train import INIT_BATCH, TrainState, init_variables
    params = init_variables(model, jax.random.key(seed), x_train[:INIT_BATCH]).get("params", {})
    return TrainState.create(apply_fn=model.apply, params=params, tx=optax.adamw(0.01, weight_decay=1e-4),
                             loss_sum=jnp.zeros((), jnp.float32), bad_step=jnp.full((), -1, jnp.int32))


def bare_jax(splits, steps: int, chunk: int, seed: int = 0) -> dict:
    """evo's train step without evaluations: chunk=1 a Python loop of jitted steps, chunk>1 lax.scan chunks."""
    import jax
    import jax.numpy as jnp

    from evo.tasks.mnist1d.train import batch_order, make_train_step
    x = jnp.asarray(splits["x_train"], jnp.float32)
    y = jnp.asarray(splits["y_train"], jnp.int32)
    steps = steps // chunk * chunk
    order = jnp.asarray(batch_order(len(splits["y_train"]), steps, 128, seed))
    step = make_train_step(128)
    if chunk == 1:
        fn = step
    else:
        def fn(state, x, y, order):
            return jax.lax.scan(lambda s, _: (step(s, x, y, order), None), state, None, length=chunk)[0]
    state = _state(_seed_cnn(), x, seed)
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=0).lower(state, x, y, order).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps // chunk):
        state = compiled(state, x, y, order)
    loss = float(jax.device_get(state.loss_sum)) / steps
    train_s = time.perf_counter() - t0
    return {"chunk": chunk, "steps": steps, "compile_s": compile_s, "train_s": train_s,
            "steps_per_s": steps / train_s, "mean_train_loss": loss}


def torch_loop(splits, steps: int, device: str, seed: int = 0, eval_every: int = 250) -> dict:
    """The same net (Greydanus 2020's ConvBase), batches and evaluations in plain PyTorch on ``device``."""
    import torch
    from torch import nn

    from evo.tasks.mnist1d.train import batch_order
    torch.manual_seed(seed)

    class ConvBase(nn.Module):
        def __init__(self, channels=25, linear_in=125):
            super().__init__()
            self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
            self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
            self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
            self.linear = nn.Linear(linear_in, 10)

        def forward(self, x):
            h = self.conv3(self.conv2(self.conv1(x.view(-1, 1, x.shape[-1])).relu()).relu()).relu()
            return self.linear(h.view(h.shape[0], -1))

    dev = torch.device(device)
    model = ConvBase().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=1e-4)
    as_t = lambda a, long=False: (torch.from_numpy(a).long() if long else torch.from_numpy(a)).to(dev)  # noqa: E731
    x, y = as_t(splits["x_train"]), as_t(splits["y_train"], True)
    xv, yv = as_t(splits["x_val"]), as_t(splits["y_val"], True)
    order = as_t(batch_order(len(splits["y_train"]), steps, 128, seed), True).view(steps, 128)
    loss_fn, best_val = nn.CrossEntropyLoss(), -1.0
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = order[step - 1]
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                best_val = max(best_val, (model(xv).argmax(-1) == yv).float().mean().item())
    sync()
    train_s = time.perf_counter() - t0
    return {"steps": steps, "train_s": train_s, "steps_per_s": steps / train_s, "val_accuracy": best_val}


def run_train(args) -> dict:
    from evo.tasks.mnist1d.data import make_splits
    from evo.tasks.mnist1d.train import train_and_evaluate
    splits = make_splits()
    out = {"what": "seed CNN, batch 128, AdamW lr 0.01; all on one device in one process"}
    t0 = time.perf_counter()
    r = train_and_evaluate(_seed_cnn(), splits, steps=args.steps, seed=0)
    out["evo_trainer"] = {**r, "total_s": time.perf_counter() - t0}
    out["bare_loop"] = bare_jax(splits, args.steps, 1)
    out["scan"] = [bare_jax(splits, args.steps, k) for k in args.chunks]
    try:
        out["torch"] = torch_loop(splits, args.steps, "cuda" if args.device in ("cuda", "gpu") else "cpu")
        out["evo_vs_torch"] = out["evo_trainer"]["steps_per_s"] / out["torch"]["steps_per_s"]
    except ImportError as exc:
        out["torch"] = f"not run: {exc}"
    best_scan = max(out["scan"], key=lambda s: s["steps_per_s"], default=None)
    if best_scan:
        out["scan_vs_loop"] = best_scan["steps_per_s"] / out["bare_loop"]["steps_per_s"]
        out["faster_loop"] = "scan" if out["scan_vs_loop"] > 1.0 else "loop"
    return out


# ------------------------------------------------------------------------------------------ children

def run_children(args) -> dict:
    from evo.config import compose_config
    from evo.search.evaluators import LocalEvaluator
    from evo.search.filter_eval import FilterAndEval
    from evo.sandbox.runner import SandboxLimits

    cfg = compose_config([f"task.train_steps={args.child_steps}"])
    from hydra.utils import instantiate
    task = instantiate(cfg.task)
    cache = pathlib.Path(tempfile.mkdtemp(prefix="evo-device-check-"))
    prepared = task.prepare(cache)
    seeds = list(task.seed_programs().values())
    limits = SandboxLimits(timeout_s=args.child_timeout_s, memory_mb=None if args.device == "gpu" else 4096)
    base = FilterAndEval(task, prepared, limits, alpha=1.0, scratch_root=cache)
    levels = []
    for level in args.levels:
        ev = LocalEvaluator(workers=level, workers_per_gpu=level, device=args.device, lm_device="cpu",
                            pin_cpus=args.device != "gpu" or (os.cpu_count() or 1) >= level)
        ev.start(base, cache)
        batch = [(i, seeds[i % len(seeds)]) for i in range(2 * level)]
        t0 = time.perf_counter()
        results = [f.result() for f in ev.submit(batch)]
        wall = time.perf_counter() - t0
        ev.close()
        ok = [r for r in results if r.status == "ok"]
        levels.append({"at_once": level, "children": len(batch), "ok": len(ok), "wall_s": wall,
                       "children_per_hour": len(batch) / wall * 3600,
                       "devices": sorted({str(r.device) for r in results}),
                       "plan": ev.plan.describe(),
                       "failures": [f"{r.status}: {r.reason[:200]}" for r in results if r.status != "ok"][:3]})
        print(json.dumps(levels[-1]), flush=True)
    one = levels[0]["children_per_hour"]
    return {"what": f"seed children, {args.child_steps} steps each, evaluator=local, device={args.device}",
            "levels": levels, "speedup_vs_1": {str(lv["at_once"]): lv["children_per_hour"] / one for lv in levels}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["train", "children"])
    ap.add_argument("--device", default="cuda", help="train: cuda|cpu; children: gpu|cpu (evaluator.device)")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--chunks", type=int, nargs="*", default=[10, 50])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--child-steps", type=int, default=2000)
    ap.add_argument("--child-timeout-s", type=float, default=300)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.part == "children" and args.device == "cuda":
        args.device = "gpu"
    if args.device == "cpu":   # a sandboxed child's single-threaded XLA settings (set before jax is imported)
        from evo.tasks.mnist1d.harness import CHILD_ENV
        for key, value in CHILD_ENV.items():
            os.environ.setdefault(key, value)
        import torch
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = run_train(args) if args.part == "train" else run_children(args)
    result = {"machine": _machine(args.device), **result, "wall_s": time.perf_counter() - t0}
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k in ("evo_vs_torch", "scan_vs_loop", "faster_loop",
                                                                 "speedup_vs_1", "wall_s")}))


if __name__ == "__main__":
    main()

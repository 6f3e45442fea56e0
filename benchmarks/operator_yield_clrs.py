"""What the CLRS grammar buys the operator, up to "builds and exports" (no training): one round of prompts.

    python benchmarks/operator_yield_clrs.py                          # 4 prompts x 8 samples, none vs grammar
    python benchmarks/operator_yield_clrs.py --prompts 6 --variants grammar

The sibling of benchmarks/operator_yield.py for task=clrs. A CLRS child trains for about a minute on this CPU
(experiment=clrs_demo, ~30 s of it XLA compiling dm-clrs's step), so a round of 32 children per variant is out
of reach next to the other jobs here; this benchmark stops where the grammar acts: each sample goes through
the search's own stages up to the sandbox's build, i.e. duplicate (normalised AST against the seeds and the
variant's earlier samples), static checks (FilterAndEval.static), and the untrusted sandbox stage
(``evo.tasks.clrs.harness:export_source`` in ``run_in_sandbox``: build on random inputs, output shape, batch
independence, jax.export), which is what a child must pass before it trains. "new building" = not a copy and
built and exported. "invented names" = build errors from a name, attribute or keyword that does not exist.

Prompts are built as the search's round 0 builds them (evo.search.loop: the same derived seeds for parents,
temperatures and the LM, crossmut.choose_parents over the nine seeds) with experiment=clrs_demo's operator
settings, so every variant sees the same prompts. The seeds' metrics in the prompts are stand-ins (no seed is
trained here): their triplet function's parameter count and validation accuracy 0.94 (the middle of the
0.92-0.96 a clrs_demo run measured, README). LM figures are taken while other jobs share the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo.config import compose_config  # noqa: E402  (evo from this checkout)

VARIANTS = {"none": ["crossmut.constrain=none"], "grammar": ["crossmut.constrain=grammar"]}
# Build errors by cause, from the sandbox's reason (the exception's last line). "invented" = a name, a module
# attribute or a keyword that does not exist where it is read; the rest are shapes and types
# (a list where an array goes, an axis past the rank).
CAUSES = (("undefined_name", ("NameError", "UnboundLocalError", "cannot access local variable")),
          ("no_such_attribute", ("module 'haiku' has no attribute", "module 'jax", "has no attribute 'nets'")),
          ("no_such_keyword", ("unexpected keyword argument",)),
          ("shape_or_type", ("broadcast", "shape", "out of bounds", "object has no attribute", "TypeError")))
INVENTED = ("undefined_name", "no_such_attribute", "no_such_keyword")
VAL_ACCURACY = 0.94


def triplet_params(code: str, hidden: int, nb_triplet_fts: int) -> int:
    """Parameters of a seed's triplet function (the repository's seeds: trusted code, run here)."""
    import haiku as hk
    import jax
    import numpy as np
    from evo.tasks.clrs.harness import load_program
    fn = load_program(code)
    z, e, g = np.zeros((1, 4, 2 * hidden), np.float32), np.zeros((1, 4, 4, hidden), np.float32), np.zeros((1, hidden), np.float32)
    params = hk.transform(lambda z, e, g: fn(z, e, g, nb_triplet_fts, hidden)).init(jax.random.PRNGKey(0), z, e, g)
    return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))


def run_variant(name: str, args, lm) -> dict:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from evo import outcome
    from evo.sandbox.runner import SandboxLimits, run_in_sandbox
    from evo.search.crossmut import CrossMut
    from evo.search.filter_eval import FilterAndEval
    from evo.search.loop import derive_seed
    from evo.search.program import code_hash
    from evo.search.prompt import Example
    from evo.tasks.base import Prepared

    cfg = compose_config(["experiment=clrs_demo", f"seed={args.seed}", *VARIANTS[name]])
    task = instantiate(cfg.task)
    crossmut = CrossMut(**{**OmegaConf.to_container(cfg.crossmut), "samples_per_prompt": args.samples})
    limits = SandboxLimits(**OmegaConf.to_container(cfg.sandbox))
    static = FilterAndEval(task, Prepared(harness_kwargs={}), limits, cfg.search.alpha).static
    hidden, fts = int(cfg.task.hidden_dim), int(cfg.task.nb_triplet_fts)
    seeds = task.seed_programs()
    population = [Example(code=c, num_params=triplet_params(c, hidden, fts), val_accuracy=VAL_ACCURACY, child_id=i)
                  for i, (_, c) in enumerate(sorted(seeds.items()))]
    seen = {code_hash(c) for c in seeds.values()}
    rows, lm_s, tokens = [], 0.0, 0
    for j in range(args.prompts):   # round 0, as evo.search.loop._prompt draws it
        parents = crossmut.choose_parents(population, random.Random(derive_seed(args.seed, "prompt", 0, j)))
        prompt, _ = crossmut.make_prompt(task, parents)
        temps = crossmut.draw_temperatures(args.samples, random.Random(derive_seed(args.seed, "temps", 0, j, 0)))
        samples = crossmut.sample(lm, task, prompt, temps, seed=derive_seed(args.seed, "lm", 0, j, 0))
        for s in samples:
            c = s.completion
            lm_s += c.seconds
            tokens += c.tokens_out
            row = {"prompt": j, "temperature": c.temperature, "stop_reason": c.stop_reason, "tokens_out": c.tokens_out,
                   "repairs": s.repairs, "code": s.code}
            if s.code_hash in seen:
                row.update(status=outcome.DUPLICATE, reason="a copy of a seed or an earlier sample")
            else:
                seen.add(s.code_hash)
                failed = static(s.code)
                if failed is not None:
                    row.update(status=failed.status, reason=failed.reason)
                else:
                    t0 = time.time()
                    res = run_in_sandbox("evo.tasks.clrs.harness:export_source",
                                         {"hidden_dim": hidden, "nb_triplet_fts": fts}, s.code, limits)
                    row.update(status="builds" if res.status == outcome.OK else res.status,
                               reason=res.reason if res.status != outcome.OK else "built and exported",
                               build_seconds=round(time.time() - t0, 1))
            rows.append(row)
            print(f"  {name} prompt {j}: {row['status']} ({row['stop_reason']}, {c.tokens_out} tokens) {row['reason'][:100]}",
                  flush=True)
    return summarise(name, rows, lm_s, tokens)


def build_cause(reason: str) -> str:
    return next((cause for cause, keys in CAUSES if any(k in reason for k in keys)), "other")


def summarise(name: str, rows: list[dict], lm_s: float, tokens: int) -> dict:
    """A variant's figures from its rows (also run on a results file's rows: --resummarise)."""
    from evo import outcome
    n = len(rows)
    status = Counter(r["status"] for r in rows)
    causes = Counter(build_cause(r["reason"]) for r in rows if r["status"] == "build_error")
    invented = sum(causes[c] for c in INVENTED)
    return {"variant": name, "overrides": VARIANTS[name], "samples": n, "new_building": status["builds"],
            "new_building_per_sample": status["builds"] / n, "copies": status[outcome.DUPLICATE],
            "syntax_errors": status[outcome.SYNTAX_ERROR], "invented_name_build_errors": invented,
            "statuses": dict(status), "build_error_causes": dict(causes), "stop_reasons": dict(Counter(r["stop_reason"] for r in rows)),
            "repairs": dict(Counter(rep.split(":")[0] for r in rows for rep in r["repairs"])),
            "tokens_out": tokens, "lm_seconds": round(lm_s, 1), "tokens_per_s": round(tokens / lm_s, 2) if lm_s else None,
            "new_building_per_lm_hour": round(3600 * status["builds"] / lm_s, 1) if lm_s else None, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "operator_yield_clrs.json"))
    ap.add_argument("--resummarise", action="store_true",
                    help="recompute the figures of --out from the rows it holds (no sampling)")
    args = ap.parse_args()
    if args.resummarise:
        payload = json.loads(Path(args.out).read_text())
        payload["results"] = [{**summarise(r["variant"], r["rows"], r["lm_seconds"], r["tokens_out"]),
                               "seconds": r["seconds"]} for r in payload["results"]]
        write(payload, args.out)
        return
    from hydra.utils import instantiate
    cfg = compose_config(["experiment=clrs_demo", f"seed={args.seed}"])
    lm = instantiate(cfg.lm)   # one LM for all variants (the grammar is per call)
    results = []
    for name in args.variants:
        t0 = time.time()
        res = run_variant(name, args, lm)
        res["seconds"] = round(time.time() - t0, 1)
        results.append(res)
        print(f"{name}: {res['new_building']}/{res['samples']} new building, {res['copies']} copies, "
              f"{res['syntax_errors']} syntax errors, {res['invented_name_build_errors']} invented names "
              f"({res['seconds']} s)", flush=True)
    # Variants not run this time keep their earlier figures (each is a separate run of the same protocol).
    out = Path(args.out)
    ran = {r["variant"] for r in results}
    earlier = json.loads(out.read_text())["results"] if out.exists() else []
    results = sorted([r for r in earlier if r["variant"] not in ran and r["variant"] in VARIANTS] + results,
                     key=lambda r: list(VARIANTS).index(r["variant"]))
    payload = {"task": "clrs (experiment=clrs_demo: graham_scan, hidden 32)", "lm": f"{cfg.lm.name} (default)",
               "lm_max_new_tokens": int(cfg.lm.max_new_tokens), "prompts": args.prompts,
               "samples_per_prompt": args.samples, "seed": args.seed, "stage": "up to build and export (no training)",
               "seed_metrics": f"stand-ins: triplet-function parameters, validation accuracy {VAL_ACCURACY}",
               "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), "results": results}
    write(payload, args.out)


def write(payload: dict, path: str) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    results = payload["results"]
    print("\n| variant | samples | new building / sample | copies | syntax errors | invented names | other | "
          "tokens/s | new building / LM-h |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        other = r["samples"] - r["new_building"] - r["copies"] - r["syntax_errors"] - r["invented_name_build_errors"]
        print(f"| {r['variant']} | {r['samples']} | {r['new_building_per_sample']:.2f} ({r['new_building']}) | "
              f"{r['copies']} | {r['syntax_errors']} | {r['invented_name_build_errors']} | {other} | "
              f"{r['tokens_per_s']} | {r['new_building_per_lm_hour']} |")
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()

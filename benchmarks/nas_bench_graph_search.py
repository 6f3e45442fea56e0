"""Surrogate-assisted search on NAS-Bench-Graph with the COLE paper's protocol: BANANAS with each
encoding (COLE's MiniLM / operator-LM embeddings of the class text, adjacency + one-hot, path) and
random search, on several datasets and seeds.

    python benchmarks/nas_bench_graph_search.py --set-size 5000 --encodings adjacency,path,minilm
    python benchmarks/nas_bench_graph_search.py --set-size 1000 --encodings adjacency,path,minilm,operator
    python benchmarks/nas_bench_graph_search.py --set-size 0 --encodings adjacency,path   # the whole space

The search set of a dataset: the first --set-size architectures of the fixed random order (0: the
whole space), the same for every method. A run evaluates --budget distinct architectures (each one
table lookup). Reported per method: evaluations until the first architecture within 1% of the best
validation performance in the search set (val >= 0.99 x best; a run that never gets there counts as
--budget, a lower bound, and the share that got there is given), the same to the set's best, the test
performance of the best-by-validation architecture found, and COLE's saving against the path encoding
(1 - its mean evaluations / the path encoding's). Writes benchmarks/results/nas_bench_graph_search_<set>.json
and a plot of best-so-far validation performance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nas_bench_graph_common import DEFAULT_CACHE, RESULTS, bootstrap_ci, search_set, torch_one_thread  # noqa: E402


def summarise(runs: list, budget: int) -> dict:
    import numpy as np
    out = {}
    for key in ("to_1pct", "to_best"):
        hits = [r[key] for r in runs]
        counted = [budget if h is None else h for h in hits]
        out[key] = {"mean": float(np.mean(counted)), "ci95": bootstrap_ci(counted), "median": float(np.median(counted)),
                    "reached": sum(h is not None for h in hits), "runs": len(hits)}
    for key in ("final_val", "final_test"):
        v = [r[key] for r in runs]
        out[key] = {"mean": float(np.mean(v)), "ci95": bootstrap_ci(v)}
    out["seconds_per_run"] = float(np.mean([r["seconds"] for r in runs]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="cora,citeseer,pubmed")
    ap.add_argument("--set-size", type=int, default=5000, help="0: the whole space")
    ap.add_argument("--encodings", default="adjacency,path,minilm")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch_one_thread()
    import numpy as np
    from evo.tasks.nas_bench_graph.bananas import bananas, evaluations_to_reach, neighbour_table, random_search
    from evo.tasks.nas_bench_graph.encodings import ENCODINGS, EmbeddingCache, encode
    from evo.tasks.nas_bench_graph.space import arrays
    encodings = args.encodings.split(",")
    for e in encodings:
        if e not in ENCODINGS:
            ap.error(f"unknown encoding {e!r}: choose from {', '.join(ENCODINGS)}")
    cache = EmbeddingCache(args.cache)
    size = args.set_size or None
    tag = args.set_size or "full"
    out = {"set_size": tag, "budget": args.budget, "seeds": args.seeds, "threshold": "val >= 0.99 x best in the set",
           "protocol": "BANANAS: 10 random to start, 10 per iteration chosen by ITS from 100 candidates (mutations of the "
                       "10 best, topped up at random), ensemble of 5 MLPs refit each iteration; seed s: the same 10 "
                       "initial architectures for every encoding; random search: a uniform order of the set",
           "note": "timings on a 2-core CPU shared with other jobs, 1 thread", "datasets": {}}
    curves = {}
    for dataset in args.datasets.split(","):
        archs = search_set(dataset, size)
        _, val, test = arrays(dataset, archs)
        best = float(val.max())
        near = neighbour_table(archs)
        res = out["datasets"][dataset] = {"architectures": len(archs), "best_val": best,
                                         "test_of_best_val": float(test[int(np.argmax(val))]),
                                         "within_1pct": int((val >= 0.99 * best).sum()), "methods": {}}
        methods = {"random": None, **{e: encode(e, archs, cache) for e in encodings}}
        for name, X in methods.items():
            runs = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                if X is None:
                    r = random_search(val, args.budget, seed)
                else:
                    r = bananas(val, lambda idx, X=X: X[idx], near, args.budget, seed)
                found = np.array(r.order)
                pick = int(found[np.argmax(val[found])])
                runs.append({"seed": seed, "to_1pct": evaluations_to_reach(r.values, 0.99 * best),
                             "to_best": evaluations_to_reach(r.values, best), "final_val": float(val[pick]),
                             "final_test": float(test[pick]), "seconds": time.perf_counter() - t0,
                             "best_so_far": np.maximum.accumulate(r.values).round(5).tolist()})
            s = res["methods"][name] = {"summary": summarise(runs, args.budget), "runs": runs}
            curves[(dataset, name)] = np.mean([r["best_so_far"] for r in runs], axis=0)
            print(f"{dataset} {name}: to 1% {s['summary']['to_1pct']['mean']:.1f} "
                  f"({s['summary']['to_1pct']['reached']}/{args.seeds} reached), final test "
                  f"{s['summary']['final_test']['mean']:.4f}, {s['summary']['seconds_per_run']:.1f} s/run", flush=True)
        m = res["methods"]
        res["saving_vs_path"] = {e: 1 - m[e]["summary"]["to_1pct"]["mean"] / m["path"]["summary"]["to_1pct"]["mean"]
                                 for e in m if e != "path"} if "path" in m else {}
    path = args.out or RESULTS / f"nas_bench_graph_search_{tag}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    plot(curves, out, path.with_suffix(".png"))
    print(f"wrote {path}")
    return 0


def plot(curves: dict, out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    datasets = list(out["datasets"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        best = out["datasets"][d]["best_val"]
        for (dd, name), c in curves.items():
            if dd == d:
                ax.plot(range(1, len(c) + 1), best - c, label=name)
        ax.axhline(0.01 * best, color="grey", ls=":", lw=1, label="1% of best")
        ax.set_yscale("log")
        ax.set_title(f"{d} (set of {out['datasets'][d]['architectures']})")
        ax.set_xlabel("evaluations (table lookups)")
        ax.set_ylabel("best val in set - best val found (mean)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"BANANAS per encoding vs random search, {out['seeds']} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())

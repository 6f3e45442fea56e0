"""Predictor quality on NAS-Bench-Graph, per encoding: COLE (MiniLM, operator LM) beside the structural
encodings (adjacency + one-hot, path), as in evo.surrogate_quality.

    python benchmarks/nas_bench_graph_quality.py --set-size 5000 --encodings adjacency,path,minilm
    python benchmarks/nas_bench_graph_quality.py --set-size 1500 --encodings adjacency,path,minilm,operator

On each dataset, the first --set-size architectures of the fixed random order (those embedded first);
per training size (50, 100, 200, 400) and --repeats random splits (the same splits for every encoding
and head), a head is fit on that many architectures' validation performance and scored on ALL the
others: Kendall tau, Spearman rho, top-10% precision (evo.analysis.surrogate_quality.cross_validate).
Heads: BANANAS's MLP ensemble (evo.tasks.nas_bench_graph.bananas.MLPEnsemble) and ridge
(evo.search.surrogate.ridge_head). Writes benchmarks/results/nas_bench_graph_quality_<set>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nas_bench_graph_common import DEFAULT_CACHE, RESULTS, bootstrap_ci, search_set, torch_one_thread  # noqa: E402

HEADS = ("mlp_ensemble", "ridge")


def head(name: str):
    if name == "mlp_ensemble":
        from evo.tasks.nas_bench_graph.bananas import MLPEnsemble
        return lambda: MLPEnsemble(seed=0)
    from evo.search.surrogate import ridge_head
    return ridge_head


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="cora,citeseer,pubmed")
    ap.add_argument("--set-size", type=int, default=5000)
    ap.add_argument("--encodings", default="adjacency,path,minilm")
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--sizes", default="50,100,200,400")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch_one_thread()
    import numpy as np
    from evo.analysis.surrogate_quality import cross_validate
    from evo.tasks.nas_bench_graph.encodings import ENCODINGS, EmbeddingCache, encode
    from evo.tasks.nas_bench_graph.space import arrays
    encodings, heads = args.encodings.split(","), args.heads.split(",")
    for e in encodings:
        if e not in ENCODINGS:
            ap.error(f"unknown encoding {e!r}: choose from {', '.join(ENCODINGS)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    cache = EmbeddingCache(args.cache)
    out = {"set_size": args.set_size, "repeats": args.repeats, "seed": args.seed, "sizes": sizes,
           "target": "validation performance (the table's valid_perf)",
           "note": "the same random splits for every encoding and head (seed); scored on all held-out architectures; "
                   "2-core CPU shared with other jobs, 1 thread", "datasets": {}}
    for dataset in args.datasets.split(","):
        archs = search_set(dataset, args.set_size)
        _, val, _ = arrays(dataset, archs)
        res = out["datasets"][dataset] = {"architectures": len(archs)}
        for e in encodings:
            X = encode(e, archs, cache)
            for h in heads:
                t0 = time.perf_counter()
                runs = cross_validate(X, val, head(h), sizes, args.repeats, args.seed)
                res[f"{e}/{h}"] = {"features": int(X.shape[1]), "sizes": {str(size): {
                    m: {"mean": float(np.mean(v)), "ci95": bootstrap_ci(v), "values": [float(x) for x in v]}
                    for m, v in r.items()} for size, r in runs.items()}}
                line = "  ".join(f"{size}: tau {np.mean(r['tau']):.3f} p10 {np.mean(r['p10']):.3f}" for size, r in runs.items())
                print(f"{dataset} {e}/{h} ({X.shape[1]} features, {time.perf_counter() - t0:.0f} s): {line}", flush=True)
    path = args.out or RESULTS / f"nas_bench_graph_quality_{args.set_size}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

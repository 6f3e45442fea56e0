"""Embed NAS-Bench-Graph architectures' class texts once into a resumable cache (COLE's input).

    python benchmarks/nas_bench_graph_embed.py --embedder minilm                 # the whole space (26,206)
    python benchmarks/nas_bench_graph_embed.py --embedder operator --limit 2000  # a random subset

Architectures are taken in one fixed random order (--order-seed), so a run stopped early, or one
with --limit N, holds a uniform random subset, and reruns extend it. The cache is
<cache_dir>/nas_bench_graph/embeddings.sqlite (by table key: the same vectors serve every dataset,
the text does not depend on the dataset). One thread: the CPU is shared. Writes the cost to
benchmarks/results/nas_bench_graph_embed_<embedder>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nas_bench_graph_common import DEFAULT_CACHE, REPO, ordered_space  # noqa: E402


def embedder_name(embedder: str, lm_model: str) -> str:
    return "minilm" if embedder == "minilm" else f"operator:{lm_model}:mean"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedder", choices=("minilm", "operator"), required=True)
    ap.add_argument("--lm-model", default="packaged:gemma3-270m", help="for --embedder operator")
    ap.add_argument("--limit", type=int, default=None, help="embed only the first N of the fixed random order")
    ap.add_argument("--order-seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from evo.analysis.surrogate_quality import make_embedder
    from evo.tasks.nas_bench_graph.encodings import EmbeddingCache, embed_into
    archs = ordered_space(args.order_seed)[:args.limit]
    name = embedder_name(args.embedder, args.lm_model)
    cache = EmbeddingCache(args.cache)
    embedder = make_embedder(args.embedder, args.lm_model if args.embedder == "operator" else None, threads=1)
    embed_into(cache, embedder, name, archs, batch=args.batch, log=lambda m: print(m, flush=True))
    cost = {"embedder": name, "cache": str(args.cache), "order_seed": args.order_seed, "limit": args.limit,
            **cache.cost(name), "note": "seconds measured on a 2-core CPU shared with other jobs, 1 thread"}
    out = REPO / "benchmarks" / "results" / f"nas_bench_graph_embed_{args.embedder}.json"
    out.write_text(json.dumps(cost, indent=2) + "\n")
    print(json.dumps(cost, indent=2))
    cache.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

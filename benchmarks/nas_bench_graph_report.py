"""Markdown tables of the committed NAS-Bench-Graph results (benchmarks/results/nas_bench_graph_*.json).

    python benchmarks/nas_bench_graph_report.py > /tmp/tables.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = {"random": "random search", "adjacency": "BANANAS, adjacency + one-hot", "path": "BANANAS, path encoding",
          "minilm": "BANANAS, COLE MiniLM", "operator": "BANANAS, COLE operator LM (Gemma-3-270M)"}


def ci(s: dict, digits: int = 1) -> str:
    lo, hi = s["ci95"]
    return f"{s['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def search_table(path: Path) -> str:
    d = json.loads(path.read_text())
    lines = [f"Search set: {d['set_size']} architectures per dataset; budget {d['budget']} evaluations; "
             f"{d['seeds']} seeds; mean [95% bootstrap CI]; a run that never reaches 1% counts as {d['budget']}.", "",
             "| dataset | method | evaluations to within 1% (reached) | to the set's best (reached) | test perf. of the pick | saving vs path |",
             "|---|---|---:|---:|---:|---:|"]
    for name, ds in d["datasets"].items():
        for m, r in ds["methods"].items():
            s = r["summary"]
            saving = ds.get("saving_vs_path", {}).get(m)
            lines.append(f"| {name} ({ds['architectures']}; {ds['within_1pct']} within 1%) | {LABELS.get(m, m)} | "
                         f"{ci(s['to_1pct'])} ({s['to_1pct']['reached']}/{s['to_1pct']['runs']}) | "
                         f"{ci(s['to_best'])} ({s['to_best']['reached']}/{s['to_best']['runs']}) | "
                         f"{ci(s['final_test'], 4)} | {'' if saving is None else f'{100 * saving:+.0f}%'} |")
    lines += ["", pooled_savings(d)]
    return "\n".join(lines)


def pooled_savings(d: dict, reps: int = 10000) -> str:
    """Each method's saving against the path encoding over all (dataset, seed) runs together:
    1 - sum of its evaluations to 1% / the path encoding's, with a paired bootstrap CI over the runs
    (seed s of a dataset starts every BANANAS encoding from the same 10 architectures)."""
    import numpy as np
    budget = d["budget"]
    def counts(m):
        return np.array([budget if r["to_1pct"] is None else r["to_1pct"]
                         for ds in d["datasets"].values() for r in ds["methods"][m]["runs"]], float)
    first = next(iter(d["datasets"].values()))["methods"]
    if "path" not in first:
        return ""
    path = counts("path")
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(path), size=(reps, len(path)))
    out = ["| method | pooled evaluations to 1% (all datasets, mean) | saving vs path [95% paired bootstrap CI] |",
           "|---|---:|---:|"]
    for m in first:
        c = counts(m)
        boot = 1 - c[idx].sum(1) / path[idx].sum(1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out.append(f"| {LABELS.get(m, m)} | {c.mean():.1f} | {100 * (1 - c.sum() / path.sum()):+.0f}% "
                   f"[{100 * lo:+.0f}%, {100 * hi:+.0f}%] |")
    return "\n".join(out)


def quality_table(path: Path) -> str:
    d = json.loads(path.read_text())
    sizes = d["sizes"]
    lines = [f"Search set: {d['set_size']} architectures; {d['repeats']} random splits per size (paired); "
             "Kendall tau / top-10% precision on all held-out architectures, mean.", "",
             "| dataset | encoding / head | " + " | ".join(f"n={s}: tau / p10" for s in sizes) + " |",
             "|---|---|" + "---:|" * len(sizes)]
    for name, ds in d["datasets"].items():
        for key, r in ds.items():
            if not isinstance(r, dict):
                continue
            cells = [f"{r['sizes'][str(s)]['tau']['mean']:.3f} / {r['sizes'][str(s)]['p10']['mean']:.3f}" for s in sizes]
            lines.append(f"| {name} | {key} ({r['features']} features) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    for path in sorted(RESULTS.glob("nas_bench_graph_quality_*.json")):
        print(f"### {path.name}\n\n{quality_table(path)}\n")
    for path in sorted(RESULTS.glob("nas_bench_graph_search_*.json")):
        print(f"### {path.name}\n\n{search_table(path)}\n")
    for path in sorted(RESULTS.glob("nas_bench_graph_embed_*.json")):
        c = json.loads(path.read_text())
        print(f"- {c['embedder']}: {c['embedded']} architectures, {c['seconds_per_architecture']:.3f} s/architecture "
              f"(mean text {c['mean_chars']:.0f} characters; {c['note']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

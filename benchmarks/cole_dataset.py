"""The COLE benchmark dataset: evaluated MNIST-1D children of our own searches, in one file.

    python benchmarks/cole_dataset.py            # ~3 h on 2 CPU cores; resumes where it stopped

Runs the searches of benchmarks/surrogate_efficiency.py (seeds 1-3, with and without the surrogate),
then one-round searches (8 prompts x 16 samples, each prompt two of the four seeds as parents;
seeds 11, 12, ...; --first-round-runs of them), and writes the children of all these runs with
``python -m evo.dataset`` to benchmarks/data/mnist1d_children.jsonl.gz: every program that was
evaluated (trained, or stopped by a check), once, with its code, status, parameter count, validation and test accuracy and
fitness. All runs share one training protocol (benchmarks/surrogate_efficiency.py's PROTOCOL: the
demo's settings, children trained 2000 steps), so their scores are comparable. Why one-round runs:
with Gemma-3-270M, prompts whose parents are the hand-written seeds give several times more working
children per sample than the later rounds of a search (whose parents the LM wrote, and which it
mostly copies), and sampling is the cost here (~5-6 s a sample on one core); the searches' own
children keep later-round programs in the set.

Check a predictor on it without running anything:

    python -m evo.surrogate_quality benchmarks/data/mnist1d_children.jsonl.gz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from surrogate_efficiency import REPO, ROOT, cole_overrides, leave_one_out, none_overrides, run_search  # noqa: E402

from evo.analysis import dataset  # noqa: E402

OUT = REPO / "benchmarks" / "data" / "mnist1d_children.jsonl.gz"
BENCHMARK_SEEDS = (1, 2, 3)
FIRST_ROUND = ["search.rounds=1", "search.prompts_per_round=8", "crossmut.samples_per_prompt=16"]
FIRST_ROUND_SEED = 11
FIRST_ROUND_RUNS = 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first-round-runs", type=int, default=FIRST_ROUND_RUNS,
                    help=f"one-round searches after the benchmark's (default {FIRST_ROUND_RUNS}: the committed file's)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    none = {s: run_search(f"none_seed{s}", none_overrides(s)) for s in BENCHMARK_SEEDS}
    cole = {s: run_search(f"cole_seed{s}", cole_overrides(s, leave_one_out(none, s))) for s in BENCHMARK_SEEDS}
    first = [run_search(f"first_round_seed{seed}", FIRST_ROUND + [f"seed={seed}"])
             for seed in range(FIRST_ROUND_SEED, FIRST_ROUND_SEED + args.first_round_runs)]
    runs = [*none.values(), *cole.values(), *first]
    header, rows = dataset.build(runs, [str(p.relative_to(REPO)) for p in runs])
    dataset.write(args.out, header, rows)
    print(dataset.summary_text(header) + f"\nwritten: {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

"""Search efficiency of COLE, replayed on the dataset: many seeds, no LM, no training.

benchmarks/surrogate_efficiency.py runs real searches, which this CPU affords for 3 seeds only. This
replay asks the same question of the surrogate's decision many times over, the way surrogate papers
use tabular NAS benchmarks (COLE's 34% is BANANAS on NAS-Bench): the dataset's evaluated children
(benchmarks/data/mnist1d_children.jsonl.gz, all trained under one protocol) are the LM's proposals,
and "training" a child is looking up its recorded result.

Per replay seed, one random order of the dataset's children (without the seeds and the children the
static checks reject, which the surrogate never sees) is the proposal stream, ``--per-round`` a round:

    none      trains every proposal. Its target is the best fitness among the first
              ``--rounds`` rounds' proposals (its whole budget); trainings to target are counted
              as in the real benchmark (children that reached training, in order).
    cole      the search's surrogate (evo.search.surrogate: MiniLM or --embedder operator, ridge head on log fitness,
              refitted each round; trains the predicted best half + a random 10%) on the same
              stream, starting from the four seeds (cold) or also from every dataset child outside
              this replay's budget (warm, as surrogate.prior would).
    random    the same shares, chosen at random: the control that tells ranking from mere skipping.

Each screened run is scored two ways: within the same budget of proposals (reached or not, and the
trainings it took), and with the stream continued until it reaches the target (trainings, and the
proposals it needed). Results: benchmarks/results/surrogate_replay_<embedder>.json.

    python benchmarks/surrogate_replay.py                     # 200 replays, ~2 min after embedding
    python benchmarks/surrogate_replay.py --embedder operator          # Gemma-3-270M's hidden states
    python benchmarks/surrogate_replay.py --rounds 10 --per-round 16
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from surrogate_efficiency import REPO, TRAINED  # noqa: E402  what counts as a training, as in real searches

from evo.archive.runs import read_dataset  # noqa: E402

from evo import outcome
from evo.search.surrogate import ColeSurrogate, ridge_head, target_value  # noqa: E402

STATIC = (outcome.SYNTAX_ERROR, outcome.FORBIDDEN)


def embeddings(rows: list[dict], embedder_name: str, lm_model: str) -> dict[str, np.ndarray]:
    """Vectors by code hash, cached per embedder in outputs/benchmarks/surrogate_replay/ between runs."""
    from evo.analysis.surrogate_quality import make_embedder
    cache = REPO / "outputs" / "benchmarks" / "surrogate_replay" / f"{embedder_name}.npz"
    held = dict(np.load(cache)) if cache.exists() else {}
    missing = [r for r in rows if r["code_hash"] not in held]
    if missing:
        print(f"embedding {len(missing)} programs ({embedder_name}) ...", flush=True)
        embedder = make_embedder(embedder_name, lm_model)
        held.update(zip((r["code_hash"] for r in missing), embedder.embed([r["code"] for r in missing])))
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **held)
    return held


def working(r: dict) -> bool:
    return r["status"] in outcome.WORKING and r["num_params"] is not None and r["val_accuracy"] is not None


def reaches(r: dict, target: float) -> bool:
    return r["status"] == outcome.OK and r["fitness"] is not None and r["fitness"] >= target


def screened_run(stream, budget, per_round, history, vectors, policy, surrogate, target, rng):
    """Replay one screened search over ``stream``: (trainings to target within the first ``budget``
    proposals or None, trainings to target with the stream continued or None, proposals used then)."""
    history = list(history)
    trainings, within = 0, None
    for start in range(0, len(stream), per_round):
        batch = stream[start:start + per_round]
        if len(history) < surrogate.min_history:   # as the loop: too little data to rank, train all
            decisions = ["all"] * len(batch)
        elif policy == "random":
            decisions = surrogate.decide([rng.random() for _ in batch], rng)
        else:
            head = ridge_head()
            head.fit(np.stack([vectors[h["code_hash"]] for h in history]),
                     [target_value("log_fitness", h["num_params"], h["val_accuracy"]) for h in history])
            decisions = surrogate.decide(head.predict(np.stack([vectors[r["code_hash"]] for r in batch])), rng)
        for i, (r, d) in enumerate(zip(batch, decisions)):
            if d == "skip" or r["status"] not in TRAINED:
                continue
            trainings += 1
            if working(r):
                history.append(r)
            if reaches(r, target):
                used = start + i + 1
                return (trainings if used <= budget else within), trainings, used
    return within, None, None


def replay(rows, vectors, seeds, args, prior: str) -> list[dict]:
    start = [r for r in rows if r["round"] == -1 and working(r)]
    pool = [r for r in rows if r["round"] >= 0 and r["status"] not in STATIC]
    budget = args.rounds * args.per_round
    surrogate = ColeSurrogate(embedder=None, head=ridge_head, train_fraction=0.5, explore_fraction=0.1,
                              min_history=10)
    out = []
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(pool))
        stream = [pool[i] for i in order]
        first = stream[:budget]
        trained = [r for r in first if r["status"] in TRAINED]
        scored = [r for r in first if reaches(r, -np.inf)]
        if not scored:
            continue
        target = max(r["fitness"] for r in scored)
        t_none = next(i for i, r in enumerate(trained, 1) if reaches(r, target))
        history = start + ([r for r in stream[budget:] if working(r)] if prior == "warm" else [])
        row = {"seed": seed, "target": target, "none": t_none, "none_trained": len(trained)}
        for policy in ("cole", "random"):
            within, until, used = screened_run(stream, budget, args.per_round, history, vectors, policy, surrogate,
                                               target, random.Random(seed))
            row[policy] = {"within_budget": within, "until_reached": until, "proposals_until_reached": used}
        out.append(row)
    return out


def summarise(runs: list[dict]) -> dict:
    n = len(runs)
    res = {"replays": n}
    none_total = sum(r["none"] for r in runs)
    for policy in ("cole", "random"):
        reached = [r for r in runs if r[policy]["within_budget"] is not None]
        ever = [r for r in runs if r[policy]["until_reached"] is not None]
        res[policy] = {
            "reached_within_budget": len(reached) / n,
            # over the replays where it reached the target: trainings saved against none's
            "saving_when_reached": (1 - sum(r[policy]["within_budget"] for r in reached)
                                    / sum(r["none"] for r in reached)) if reached else None,
            "reached_ever": len(ever) / n,
            "saving_until_reached": (1 - sum(r[policy]["until_reached"] for r in ever)
                                     / sum(r["none"] for r in ever)) if ever else None,
            "proposals_until_reached": float(np.mean([r[policy]["proposals_until_reached"] for r in ever]))
                                       if ever else None}
    res["none_trainings_to_target_mean"] = none_total / n if n else None
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO / "benchmarks" / "data" / "mnist1d_children.jsonl.gz")
    ap.add_argument("--replays", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=6, help="rounds of the budget (6, as the real benchmark)")
    ap.add_argument("--per-round", type=int, default=8,
                    help="proposals a round that pass the static checks and are new (8: what 16 samples give here)")
    ap.add_argument("--embedder", choices=("minilm", "operator"), default="minilm",
                    help="minilm (surrogate/embedder=minilm) or operator (the LM's mean hidden state, --lm-model)")
    ap.add_argument("--lm-model", default="packaged:gemma3-270m", help="for --embedder operator (Gemma-3-270M)")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/surrogate_replay_<embedder>.json")
    args = ap.parse_args()
    args.out = args.out or REPO / "benchmarks" / "results" / f"surrogate_replay_{args.embedder}.json"
    header, rows = read_dataset(args.dataset)
    vectors = embeddings([r for r in rows if r["status"] not in STATIC], args.embedder, args.lm_model)
    t0 = time.time()
    results = {}
    for prior in ("cold", "warm"):
        runs = replay(rows, vectors, range(args.replays), args, prior)
        results[prior] = {**summarise(runs), "runs": runs}
    payload = {"dataset": str(args.dataset.relative_to(REPO)) if args.dataset.is_relative_to(REPO) else str(args.dataset),
               "dataset_children": header["children"], "dataset_trained": header["trained"],
               "rounds": args.rounds, "per_round": args.per_round, "budget": args.rounds * args.per_round,
               "embedder": args.embedder if args.embedder == "minilm" else f"operator ({args.lm_model}, mean pooling)",
               "surrogate": "ridge head on log_fitness, train_fraction 0.5, explore_fraction 0.1, min_history 10",
               "goal_saving": 0.34, "seconds": round(time.time() - t0, 1), "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d"), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"{header['trained']} trained of {header['children']} children; budget {args.rounds} x {args.per_round} = "
          f"{args.rounds * args.per_round} "
          f"proposals; none needs {results['cold']['none_trainings_to_target_mean']:.1f} trainings to its best "
          f"(mean of {results['cold']['replays']} replays)\n")
    print("| start | screening | reached within budget | saving when reached | reached at all | "
          "saving until reached | proposals until reached |\n|---|---|---:|---:|---:|---:|---:|")
    for prior, res in results.items():
        for policy in ("cole", "random"):
            p = res[policy]
            fmt = lambda v, pct=True: "-" if v is None else (f"{v:.0%}" if pct else f"{v:.1f}")  # noqa: E731
            print(f"| {prior} | {policy} | {fmt(p['reached_within_budget'])} | {fmt(p['saving_when_reached'])} | "
                  f"{fmt(p['reached_ever'])} | {fmt(p['saving_until_reached'])} | "
                  f"{fmt(p['proposals_until_reached'], False)} |")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()

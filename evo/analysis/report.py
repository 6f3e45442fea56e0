"""What a person reads after a run: per-round table, the best programs, the Pareto plot, the
soft prompt's loss curves, and lineage.html (the evolution tree explorer, evo/lineage).

Everything is computed from the archive alone, so it can be redrawn for any run folder:
``python -m evo.report outputs/mnist1d/demo/<timestamp>``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from evo import outcome
from evo.analysis.lineage import write_lineage_safely
from evo.analysis.metrics import pareto_front, round_stats
from evo.archive import Archive


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def summary_text(stats: list[dict], best: list[dict], seeds: list[dict]) -> str:
    lines = ["## Rounds", "",
             "| round | samples | new working | rate | new working / LM-hour | scored | copies of a parent "
             "| best fitness (round) | best fitness (so far) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in stats:
        lines.append(f"| {s['round']} | {s['samples']} | {s['new_working']} | {s['new_working_rate']:.2f} | "
                     f"{_fmt(s.get('new_working_per_lm_hour'), '.0f')} | "
                     f"{s['scored']} | {s['copies_of_parent']} | {_fmt(s['best_fitness_round'], '.1f')} | "
                     f"{_fmt(s['best_fitness_so_far'], '.1f')} |")
    total = sum(s["samples"] for s in stats)
    working = sum(s["new_working"] for s in stats)
    statuses = Counter()
    for s in stats:
        statuses.update(s["status_counts"])
    lines += ["", f"New, distinct, working children: {working} of {total} samples"
              + (f" ({working / total:.2f} per sample)" if total else ""),
              "Statuses: " + ", ".join(f"{k} {v}" for k, v in statuses.most_common()), "",
              "## Best programs (fitness = -(num_params x validation error))", "",
              "| id | round | num_params | val acc | test acc | fitness |", "|---:|---:|---:|---:|---:|---:|"]
    for b in best:
        label = b["seed_name"] and f"seed {b['seed_name']}" or str(b["round"])
        lines.append(f"| {b['id']} | {label} | {b['num_params']} | {b['val_accuracy']:.4f} | "
                     f"{b['test_accuracy']:.4f} | {b['fitness']:.1f} |")
    if seeds:
        lines += ["", "Seeds: " + "; ".join(
            f"{s['seed_name']} {s['status']}" + (f" {s['num_params']} params, val {s['val_accuracy']:.3f}"
                                               if s["num_params"] else "") for s in seeds)]
    return "\n".join(lines)


def tuning_text(tuning: list[dict]) -> str:
    if not tuning:
        return ""
    lines = ["", "## Soft prompt tuning (TRAIN after each round but the last)", "",
             "| after round | programs | tokens | loss first epoch | loss last epoch | seconds |",
             "|---:|---:|---:|---:|---:|---:|"]
    for t in tuning:
        first, last = (t["epoch_losses"][0], t["epoch_losses"][-1]) if t["epoch_losses"] else (None, None)
        lines.append(f"| {t['round']} | {t['texts']} | {t['tokens']} | {_fmt(first, '.3f')} | {_fmt(last, '.3f')} | "
                     f"{t['seconds']:.0f} |" + ("" if t["adapter"] or not t["texts"] else " diverged: not used"))
    return "\n".join(lines)


def ledger_text(ledger: dict) -> str:
    """The cost ledger as a table: what each round spent on the LM, on training and on tuning."""
    if not ledger["rounds"]:
        return ""
    lines = ["", "## Cost ledger", "",
             "| round | children | LM tokens in | LM tokens out | LM s | train s (CPU) | train s (GPU) | sandbox s | tuning s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in [*ledger["rounds"], {**ledger["total"], "round": "total"}]:
        label = "seeds" if r["round"] == -1 else r["round"]
        lines.append(f"| {label} | {r['children']} | {r['lm_tokens_in']} | {r['lm_tokens_out']} | {r['lm_seconds']:.0f} | "
                     f"{r['train_seconds_cpu']:.0f} | {r['train_seconds_gpu']:.0f} | {r['eval_seconds']:.0f} | "
                     f"{r['tuning_seconds']:.0f} |")
    return "\n".join(lines)


def tuning_plot(tuning: list[dict], path: Path) -> None:
    """Loss of every optimiser step, one line per round, on one step axis."""
    import matplotlib   # ~1 s to import: only when plotting (not when the search imports this module)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # after use("Agg"): plots are files, no display
    fig, ax = plt.subplots(figsize=(7, 4))
    start = 0
    for t in tuning:
        steps = t["step_losses"]
        if steps:
            ax.plot(range(start, start + len(steps)), steps, marker=".", label=f"after round {t['round']}")
            start += len(steps)
    ax.set_xlabel("optimiser step (all rounds)")
    ax.set_ylabel("token cross-entropy (nats)")
    ax.set_title("Soft prompt tuning loss")
    ax.grid(True, alpha=0.3)
    if start:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto_plot(archive: Archive, path: Path) -> None:
    import matplotlib   # ~1 s to import: only when plotting (not when the search imports this module)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # after use("Agg"): plots are files, no display
    rows = archive.rows(("round", "seed_name", "num_params", "test_accuracy"), status=outcome.WORKING,
                        not_null=("num_params",))
    fig, ax = plt.subplots(figsize=(7, 5))
    children = [r for r in rows if r["round"] >= 0]
    if children:
        rounds = sorted({r["round"] for r in children})
        cmap = plt.get_cmap("viridis", max(rounds[-1] - rounds[0] + 1, 2))  # one colour per round
        sc = ax.scatter([r["num_params"] for r in children], [1 - r["test_accuracy"] for r in children],
                        c=[r["round"] for r in children], cmap=cmap, vmin=rounds[0] - 0.5, vmax=rounds[-1] + 0.5,
                        s=28, label="children")
        fig.colorbar(sc, ax=ax, label="round", ticks=rounds)
        front = pareto_front([(r["num_params"], 1 - r["test_accuracy"]) for r in children])
        ax.step(*zip(*front), where="post", color="tab:red", lw=1.2, label="Pareto front (children)")
    for i, r in enumerate(r for r in rows if r["round"] < 0):
        ax.scatter(r["num_params"], 1 - r["test_accuracy"], marker="*", s=160, color="black")
        ax.annotate(r["seed_name"], (r["num_params"], 1 - r["test_accuracy"]), fontsize=8,
                    xytext=(6, 6 - 10 * (i % 2)), textcoords="offset points")  # alternate: seeds often overlap
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)
    ax.set_xlabel("model size (parameters, log scale)")
    ax.set_ylabel("test error")
    ax.set_title("Size vs test error (stars: seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(archive: Archive, run_dir: Path, survivors: int = 10) -> dict:
    stats = round_stats(archive)
    best = archive.best(survivors)
    seeds = archive.rows(("seed_name", "status", "num_params", "val_accuracy"), round=-1)
    tuning = archive.tuning()
    ledger = archive.cost_ledger()
    text = summary_text(stats, best, seeds) + tuning_text(tuning) + ledger_text(ledger)
    fits = [s["best_fitness_so_far"] for s in stats if s["best_fitness_so_far"] is not None]
    summary = {"rounds": stats, "best": best, "seeds": seeds, "best_fitness": fits[-1] if fits else None,
               "soft_prompt": tuning, "costs": ledger, "text": text}
    (run_dir / "summary.md").write_text(text + "\n")
    (run_dir / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "text"}, indent=2))
    pareto_plot(archive, run_dir / "pareto.png")
    if tuning:
        tuning_plot(tuning, run_dir / "soft_prompt.png")
    write_lineage_safely(archive, run_dir)   # lineage.html: the tree explorer (evo/lineage)
    return summary


def main() -> None:
    """``python -m evo.report RUN_FOLDER``."""
    if len(sys.argv) != 2:
        sys.exit("usage: python -m evo.report RUN_FOLDER")
    folder = Path(sys.argv[1])
    if not (folder / "archive.sqlite").exists():
        sys.exit(f"error: {folder} has no archive.sqlite: pass a run folder of `python -m evo.run`")
    print(write_report(Archive(folder / "archive.sqlite"), folder)["text"])


if __name__ == "__main__":
    main()

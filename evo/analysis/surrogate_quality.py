"""``python -m evo.surrogate_quality``: how well does COLE rank children it has not seen?

    python -m evo.surrogate_quality outputs/mnist1d/demo/2026-11-24_14-59-38
    python -m evo.surrogate_quality multirun/mnist1d/default/* --heads ridge,mlp_ensemble,gbt --repeats 20
    python -m evo.surrogate_quality run1/archive.sqlite run2/ --target log_fitness,val_accuracy --no-cache
    python -m evo.surrogate_quality benchmarks/data/mnist1d_children.jsonl.gz    # our dataset (evo.dataset)

The trained children of the archives (status ok or filtered, with a parameter count; seeds included)
are pooled, one per program (code hash; a program trained in two runs keeps its first score). For
each training-set size, ``--repeats`` random splits: ``size`` children train a predictor, ALL the
others are held out, and the held-out ranking is scored by Kendall tau, Spearman rho and top-10%
precision (of the truly best 10% held out, the share the predictor also puts in its best 10%).
Every predictor sees the same splits. Predictors:

    cole_<head>     the surrogate: the embedder's vector of the source -> head (evo.search.surrogate)
    bag_of_tokens   no LM: token counts of the source (identifiers, numbers, operators) -> ridge
    params          no LM: ridge on log10(parameter count). The count is known only once the child
                    is built in the sandbox, after screening: a reference, not a screening competitor.

Embeddings are cached in each archive (table ``embeddings``, by code hash and embedder: the cache the
search's ``surrogate=cole`` reads and writes), so a second report, or a later ``surrogate=cole`` run on
the archive, embeds nothing again. That is why the default opens the archives writable: a cached vector
is a pure function of the program, so storing it changes no result; opening writable also brings an
older archive to the current schema, as resuming it would. ``--no-cache`` opens them read-only and
neither reads nor writes the cache: for archives that must stay byte-identical (copies of results,
read-only mounts) and to measure the embedding cost afresh. An archive that cannot be written is read
without caching (a warning says so).

Written into ``--out`` (default ``outputs/surrogate_quality/<timestamp>``): ``quality.md`` (a table per
target, also printed), ``quality.json`` (every number, each split too) and ``quality.png`` (tau and
top-10% precision vs training size, mean +- std over splits). Exit code 0, or 2 on a bad input
(message on stderr starting with ``error:``).
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from evo.archive.runs import (RunsError, command, dataset_trained, find_archives, is_dataset, open_archive, opened,
                             trained_programs)
from evo.lm.base import LMUnavailableError
from evo.lm.hf import HFCausalLM
from evo.search import surrogate
from evo.search.surrogate import TARGETS, LMEmbedder, MiniLMEmbedder, target_value

HEADS = ("ridge", "mlp_ensemble", "gbt")
EMBEDDERS = ("minilm", "operator")
MIN_CHILDREN = 20    # 10 to train on and 10 held out, the fewest where "top 10%" is one child
MIN_HELD_OUT = 10
TOKEN_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|[^\sA-Za-z0-9_]"
METRICS = {"tau": "Kendall tau", "rho": "Spearman rho", "p10": "top-10% precision"}


class QualityError(RunsError):
    """A bad input: reported as ``error: ...`` with exit code 2."""


# ---------------------------------------------------------------- metrics and cross-validation

def top_k(n: int, frac: float = 0.1) -> int:
    """How many of ``n`` children are the top ``frac``: ceil(frac x n), at least 1."""
    return max(1, math.ceil(round(frac * n, 9)))   # round: 0.1 x 30 is 3.0000000000000004


def top_precision(y_true, y_pred, frac: float = 0.1) -> float:
    """Of the ``k = ceil(frac x n)`` (at least 1) children with the highest true score, the share that
    are among the ``k`` highest predicted. Ties in the prediction are broken against the predictor
    (the truly worse child first), so a constant prediction earns no credit from the input order."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    k = top_k(len(y_true), frac)
    true_top = set(np.argsort(-y_true, kind="stable")[:k].tolist())
    pred_top = np.lexsort((y_true, -y_pred))[:k]
    return len(true_top.intersection(pred_top.tolist())) / k


def rank_scores(y_true, y_pred) -> dict:
    """Kendall tau (tau-b), Spearman rho and top-10% precision of a held-out prediction. A constant
    prediction (or truth) ranks nothing: its correlations count as 0, not as a missing value."""
    from scipy.stats import kendalltau, spearmanr   # scipy takes ~1-2 s to import: only when scoring
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
        tau = rho = 0.0
    else:
        tau, rho = float(kendalltau(y_true, y_pred)[0]), float(spearmanr(y_true, y_pred)[0])
    return {"tau": tau, "rho": rho, "p10": top_precision(y_true, y_pred)}


def _take(X, idx: np.ndarray):
    return X[idx] if isinstance(X, np.ndarray) else [X[i] for i in idx]


def cross_validate(X, y, make_predictor: Callable[[], object], sizes: Sequence[int], repeats: int,
                   rng) -> dict:
    """Repeated random splits: per size, ``repeats`` times fit ``make_predictor()`` (``fit``/``predict``)
    on ``size`` random rows of ``X`` (an array, or a list such as source texts) and score its ranking
    of ALL the other rows. ``rng``: an int seed (every predictor given the same seed gets the same
    splits, so predictors are compared on paired splits) or a numpy Generator.

    Returns ``{size: {"tau": [...], "rho": [...], "p10": [...], "seconds": [...]}}`` (one value per
    split; ``seconds``: fit + predict)."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    out = {}
    for size in sizes:
        if not 2 <= size <= n - 2:
            raise ValueError(f"training-set size {size} needs 2 <= size <= n - 2 = {n - 2}")
        runs = {"tau": [], "rho": [], "p10": [], "seconds": []}
        for _ in range(repeats):
            perm = rng.permutation(n)
            train, test = np.sort(perm[:size]), np.sort(perm[size:])
            predictor = make_predictor()   # built outside the clock: its first build imports scikit-learn
            t0 = time.perf_counter()
            predictor.fit(_take(X, train), y[train])
            pred = np.asarray(predictor.predict(_take(X, test)), dtype=float)
            runs["seconds"].append(time.perf_counter() - t0)
            for key, value in rank_scores(y[test], pred).items():
                runs[key].append(value)
        out[size] = runs
    return out


def usable_sizes(sizes: Sequence[int], n: int) -> tuple[list[int], list[int]]:
    """(kept, dropped): a size is kept when at least ``MIN_HELD_OUT`` children remain to test on."""
    kept = sorted({s for s in sizes if s <= n - MIN_HELD_OUT})
    return kept, sorted({s for s in sizes if s > n - MIN_HELD_OUT})


# ---------------------------------------------------------------- predictors without an LM

def _log10_params(X):
    return np.log10(np.maximum(1.0, np.asarray(X, dtype=float)))


def params_predictor():
    """Ridge on log10(parameter count); fit it on a column of raw counts (shape (n, 1))."""
    # scikit-learn takes ~1-2 s to import: only when this predictor is built
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    return make_pipeline(FunctionTransformer(_log10_params), RidgeCV(alphas=[1e-3, 1e-2, 0.1, 1.0, 10.0]))


def bag_of_tokens_predictor():
    """Ridge on the counts of the source's tokens (identifiers, numbers, single operator characters);
    fit it on a list of source texts. Counts are scaled per token, so the many ``(`` do not drown
    ``Dense`` or ``128``; the penalty is chosen by leave-one-out CV."""
    # scikit-learn takes ~1-2 s to import: only when this predictor is built
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(CountVectorizer(token_pattern=TOKEN_PATTERN, lowercase=False),
                         StandardScaler(with_mean=False),
                         RidgeCV(alphas=[0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5]))


def head_factory(name: str) -> Callable[[], object]:
    if name not in HEADS:
        raise QualityError(f"unknown head {name!r}: choose from {', '.join(HEADS)}")
    return getattr(surrogate, f"{name}_head")


# ---------------------------------------------------------------- reading archives

@dataclass
class Source:
    """One archive (or dataset file) read for the report."""
    path: Path
    archive: object              # evo.archive.Archive; None for a dataset file (evo.dataset), which caches nothing
    writable: bool
    hashes: list                 # its trained programs' code hashes (all of them, also those pooled from elsewhere)
    programs: list = field(default_factory=list, repr=False)   # its trained programs (Program), id order


@dataclass
class Program:
    code_hash: str
    code: str
    num_params: int
    val_accuracy: float
    round: int
    source: str


def open_source(path: Path, cache: bool) -> Source:
    """One archive (writable for the embedding cache where ``cache`` asks and the file allows) or dataset file,
    with its trained programs in id order. ``with opened(paths, lambda p: open_source(p, cache))`` closes them."""
    if is_dataset(path):
        archive, writable, rows = None, False, dataset_trained(path)
    else:
        archive, writable = open_archive(path, cache)
        rows = trained_programs(archive)
    programs = [Program(r["code_hash"], r["code"], int(r["num_params"]), float(r["val_accuracy"]), int(r["round"]),
                        str(path)) for r in rows]
    return Source(path, archive, writable, [p.code_hash for p in programs], programs)


def pool_programs(sources: Sequence[Source]) -> list[Program]:
    """The sources' trained children pooled, one per code hash (its first), in source then id order."""
    pool: dict = {}
    for s in sources:
        for p in s.programs:
            pool.setdefault(p.code_hash, p)
    return list(pool.values())


# ---------------------------------------------------------------- embeddings

def make_embedder(name: str, lm_model: Optional[str] = None, pooling: str = "mean", threads: int = 1):
    """``minilm`` (the packaged all-MiniLM-L6-v2), or ``operator`` with ``lm_model``: a causal LM's
    hidden states (evo.lm.hf.HFCausalLM; a run's config is not read here, so the model is named)."""
    if name == "minilm":
        return MiniLMEmbedder(threads=threads)
    if name == "operator":
        if not lm_model:
            raise QualityError("--embedder operator embeds with the search's causal LM, which this command cannot "
                               "read from a run: name it with --lm-model (e.g. packaged:gemma3-270m or a model "
                               "folder), or use --embedder minilm")
        loaded = []

        def lm():   # loaded once, on first use
            if not loaded:
                loaded.append(HFCausalLM(model=lm_model, threads=threads))
            return loaded[0]
        return LMEmbedder(lm=lm, pooling=pooling)
    raise QualityError(f"unknown embedder {name!r}: choose from {', '.join(EMBEDDERS)}")


def embed_programs(sources: Sequence[Source], programs: Sequence[Program], embedder,
                   cache: bool) -> tuple[np.ndarray, dict]:
    """The embedding of every program (rows in ``programs`` order) and what it cost.

    With ``cache``, vectors already in any archive (by code hash and ``embedder.name``) are reused and
    each writable archive is given the vectors of its programs it lacked; the rest are embedded once,
    whichever archives hold them."""
    t0 = time.perf_counter()
    name = embedder.name                          # LMEmbedder loads its LM here (its name is the model's)
    load_seconds = time.perf_counter() - t0
    vectors, held = {}, {}
    if cache:
        for s in (s for s in sources if s.archive is not None):
            try:
                held[s.path] = s.archive.embeddings(name, s.hashes)
            except sqlite3.OperationalError:      # an archive older than the surrogate: no embeddings table
                held[s.path] = {}
            vectors.update(held[s.path])
    missing = [p for p in programs if p.code_hash not in vectors]
    if missing and hasattr(embedder, "_load"):   # MiniLM loads lazily: timed apart from the per-child cost
        t0 = time.perf_counter()
        embedder._load()
        load_seconds += time.perf_counter() - t0
    t0 = time.perf_counter()
    if missing:
        vectors.update(zip((p.code_hash for p in missing), embedder.embed([p.code for p in missing])))
    embed_seconds = time.perf_counter() - t0
    stored = 0
    if cache:
        for s in (s for s in sources if s.writable):
            new = {h: vectors[h] for h in s.hashes if h not in held[s.path]}
            if new:
                s.archive.store_embeddings(name, new)
                stored += len(new)
    cost = {"embedder": name, "cache": "archive" if cache else "off", "computed": len(missing),
            "cached": len(programs) - len(missing), "stored": stored, "load_seconds": load_seconds,
            "embed_seconds": embed_seconds,
            "seconds_per_child": embed_seconds / len(missing) if missing else None,
            "mean_chars": float(np.mean([len(p.code) for p in missing])) if missing else None}
    return np.stack([np.asarray(vectors[p.code_hash], dtype=np.float32) for p in programs]), cost


# ---------------------------------------------------------------- the report

def _summary(values: list) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": list(map(float, a))}


def evaluate(programs: Sequence[Program], embeddings: np.ndarray, target: str, heads: Sequence[str],
             sizes: Sequence[int], repeats: int, seed: int) -> dict:
    """predictor -> {label, sizes: {size: {tau, rho, p10, seconds: {mean, std, values}}}} for one target."""
    y = np.array([target_value(target, p.num_params, p.val_accuracy) for p in programs])
    predictors = {f"cole_{h}": (f"COLE {h}", embeddings, head_factory(h)) for h in heads}
    predictors["bag_of_tokens"] = ("bag of tokens (no LM)", [p.code for p in programs], bag_of_tokens_predictor)
    predictors["params"] = ("params (reference)", np.array([[p.num_params] for p in programs], dtype=float),
                            params_predictor)
    out = {}
    for key, (label, X, make) in predictors.items():
        runs = cross_validate(X, y, make, sizes, repeats, seed)   # the same seed: the same splits for all
        out[key] = {"label": label, "sizes": {
            size: {**{m: _summary(v) for m, v in r.items()}, "held_out": len(y) - size} for size, r in runs.items()}}
    return out


def caption(n: int, seeds: int, sources: Sequence[Source], target: str, repeats: int, seed: int,
            dropped: Sequence[int], embedder: str) -> str:
    what = ("log_fitness = -log10(num_params x validation error), the paper's fitness on a log scale"
            if target == "log_fitness" else "validation accuracy")
    names = [str(s.path) for s in sources]
    where = ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:3])} and {len(names) - 3} more archives"
    lines = [f"Target: {what}. n = {n} trained children (status ok or filtered, one per program; {seeds} of them "
             f"seeds) from {where}.",
             f"Each cell: Kendall tau / Spearman rho / top-10% precision on ALL held-out children (n - size), mean "
             f"over {repeats} random splits (seed {seed}, the same splits for every predictor); std in quality.json. "
             f"COLE: embedder {embedder} -> head. bag of tokens: ridge on token counts of the source, no LM. "
             "params: ridge on log10(parameter count); the count is known only once the child is built in the "
             "sandbox, after the surrogate screens it, so it is a reference, not a fair screening competitor. "
             "Bold: the best tau per size among the predictors that read only the source."]
    if dropped:
        lines.append(f"Sizes dropped (fewer than {MIN_HELD_OUT} children would be held out): "
                     f"{', '.join(map(str, dropped))}.")
    return "\n".join(lines)


def table_markdown(results: dict, sizes: Sequence[int], n: int, text: str) -> str:
    screening = [k for k in results if k != "params"]
    best = {s: max(screening, key=lambda k: results[k]["sizes"][s]["tau"]["mean"]) for s in sizes}
    lines = [text, "", "| predictor | " + " | ".join(f"size {s} (test {n - s})" for s in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    for key, r in results.items():
        cells = []
        for s in sizes:
            c = r["sizes"][s]
            cell = " / ".join(f"{c[m]['mean']:.2f}" for m in METRICS)
            cells.append(f"**{cell}**" if best[s] == key else cell)
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Fit + predict seconds per split (mean): " + "; ".join(
        f"{r['label']} " + ", ".join(f"{r['sizes'][s]['seconds']['mean']:.3f}" for s in sizes)
        for r in results.values()) + f" (sizes {', '.join(map(str, sizes))})."]
    return "\n".join(lines) + "\n"


def cost_text(cost: dict) -> str:
    if cost["computed"]:
        per = (f"{cost['computed']} programs embedded in {cost['embed_seconds']:.1f} s = "
               f"{cost['seconds_per_child']:.3f} s per child (mean {cost['mean_chars']:.0f} characters)")
    else:
        per = "no program embedded (all cached; pass --no-cache to measure the embedding cost)"
    return (f"Embedding ({cost['embedder']}): {per}; {cost['cached']} from the archive cache; model load "
            f"{cost['load_seconds']:.1f} s (once per process); cache {cost['cache']}, {cost['stored']} vectors stored.")


def _pyplot():
    # matplotlib takes ~1 s to import: only when plotting
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # after use("Agg"): plots are files, no display
    return plt


def plot_quality(by_target: dict, sizes: Sequence[int], n: int, path: Path) -> None:
    """Per target: Kendall tau and top-10% precision vs training-set size, mean +- std over splits."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(by_target), 2, figsize=(11, 4 * len(by_target)), squeeze=False)
    for row, (target, results) in enumerate(by_target.items()):
        for ax, metric in zip(axes[row], ("tau", "p10")):
            for i, (key, r) in enumerate(results.items()):
                mean = np.array([r["sizes"][s][metric]["mean"] for s in sizes])
                std = np.array([r["sizes"][s][metric]["std"] for s in sizes])
                style = "--" if key == "params" else "-"
                ax.plot(sizes, mean, style, marker="o", color=f"C{i % 10}", label=r["label"])
                low = 0.0 if metric == "p10" else -1.0
                ax.fill_between(sizes, np.clip(mean - std, low, 1), np.clip(mean + std, low, 1), color=f"C{i % 10}",
                                alpha=0.15)
            if metric == "p10":   # a random ranking finds k of the held-out m in expectation k x k / m: precision k / m
                chance = [top_k(n - s) / (n - s) for s in sizes]
                ax.plot(sizes, chance, color="grey", lw=0.8, ls=":", label="random ranking (expected)")
            else:
                ax.axhline(0.0, color="grey", lw=0.8, ls=":")
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(sizes), [str(s) for s in sizes])
            ax.minorticks_off()
            ax.set_xlabel("training-set size (children)")
            ax.set_ylabel(METRICS[metric] + " (held out)")
            ax.set_title(f"{target}: {METRICS[metric]}, n = {n}, mean ± std over splits", fontsize=10)
            ax.grid(True, alpha=0.3)
        axes[row][1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- command line

_EXAMPLES = """\
examples:
  python -m evo.surrogate_quality outputs/mnist1d/demo/2026-11-24_14-59-38
      one run: COLE (MiniLM + ridge, + gradient-boosted trees) vs the baselines, target log_fitness
  python -m evo.surrogate_quality multirun/mnist1d/default/2026-11-24_10-00-00 --heads ridge,mlp_ensemble,gbt
      every run of a sweep, pooled (one child per program)
  python -m evo.surrogate_quality run1/ run2/archive.sqlite --target log_fitness,val_accuracy --no-cache
      two targets; archives opened read-only, every program embedded afresh (measures the embedding cost)
  python -m evo.surrogate_quality RUN --embedder operator --lm-model packaged:gemma3-270m --pooling last
      the operator LM's hidden states instead of MiniLM

writes quality.md (also printed), quality.json and quality.png into --out.
"""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError("training-set sizes are integers >= 2, e.g. 10,20,40")
    return sizes


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evo.surrogate_quality", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXAMPLES,
        description="Cross-validate the COLE surrogate (code LM embedding -> regression head) on the trained "
                    "children of one or more archives: Kendall tau, Spearman rho and top-10% precision on the "
                    "held-out children vs the training-set size, next to baselines without an LM (a bag of "
                    "tokens of the source; the parameter count, as a reference).")
    p.add_argument("inputs", nargs="+", metavar="RUN",
                   help="run folders (with archive.sqlite), archive files, dataset files (python -m evo.dataset; "
                        "their embeddings are not cached), globs, or sweep folders searched recursively; their "
                        "trained children are pooled")
    p.add_argument("--target", default="log_fitness", help="what is predicted, comma-separated for several: "
                   "log_fitness (-log10(params x val error)) | val_accuracy (default log_fitness)")
    p.add_argument("--embedder", default="minilm", help="minilm (default: packaged all-MiniLM-L6-v2) | operator "
                   "(a causal LM's hidden states; needs --lm-model)")
    p.add_argument("--lm-model", metavar="MODEL", help="for --embedder operator: lm.model of evo.lm.hf, e.g. "
                   "packaged:gemma3-270m or a model folder")
    p.add_argument("--pooling", default="mean", choices=("mean", "last"),
                   help="for --embedder operator: mean over tokens or the last token (default mean)")
    p.add_argument("--heads", default="ridge,gbt", help=f"COLE heads, comma-separated: {', '.join(HEADS)} "
                   "(default ridge,gbt)")
    p.add_argument("--sizes", type=_sizes, default=[10, 20, 40, 80, 160],
                   help="training-set sizes (default 10,20,40,80,160); sizes leaving fewer than "
                        f"{MIN_HELD_OUT} children to test on are dropped")
    p.add_argument("--repeats", type=int, default=10, help="random splits per size (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits (default 0)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache", dest="cache", action="store_true", default=True,
                       help="reuse and store embeddings in the archives (default; opens them writable)")
    cache.add_argument("--no-cache", dest="cache", action="store_false",
                       help="open the archives read-only and embed every program afresh")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the embedder (default 1)")
    p.add_argument("--out", type=Path, help="output folder (default: outputs/surrogate_quality/<timestamp>)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be at least 1")
    return args


def check_args(args: argparse.Namespace) -> None:
    """Choices that argparse cannot check in a comma list: fail before any archive is opened."""
    args.targets, args.head_names = _csv(args.target), _csv(args.heads)
    for t in args.targets:
        if t not in TARGETS:
            raise QualityError(f"unknown target {t!r}: choose from {', '.join(TARGETS)}")
    for h in args.head_names:
        head_factory(h)
    if not args.targets or not args.head_names:
        raise QualityError("--target and --heads need at least one name each")
    if args.embedder not in EMBEDDERS:
        raise QualityError(f"unknown embedder {args.embedder!r}: choose from {', '.join(EMBEDDERS)}")
    if args.embedder == "operator" and not args.lm_model:
        make_embedder(args.embedder)   # raises the error that says what to pass


def report(args: argparse.Namespace) -> dict:
    """Everything after argument parsing; returns the paths written."""
    check_args(args)
    paths = find_archives(args.inputs)
    with opened(paths, lambda path: open_source(path, args.cache)) as sources:
        programs = pool_programs(sources)
        n = len(programs)
        if n < MIN_CHILDREN:
            raise QualityError(f"only {n} trained children (status ok or filtered, with a parameter count, one per "
                               f"program) in {', '.join(map(str, paths))}: cross-validating needs at least "
                               f"{MIN_CHILDREN} ({MIN_HELD_OUT} held out)")
        sizes, dropped = usable_sizes(args.sizes, n)
        if dropped:
            print(f"note: with n = {n} children, training-set sizes above {n - MIN_HELD_OUT} leave fewer than "
                  f"{MIN_HELD_OUT} to test on: dropped {', '.join(map(str, dropped))}")
        if not sizes:
            raise QualityError(f"no training-set size fits n = {n} children: pass --sizes up to {n - MIN_HELD_OUT}")
        embedder = make_embedder(args.embedder, args.lm_model, args.pooling, args.threads)
        try:
            embeddings, cost = embed_programs(sources, programs, embedder, args.cache)
        except (ImportError, LMUnavailableError) as exc:   # the packaged MiniLM or the named LM is not here
            raise QualityError(str(exc)) from None
        by_target = {t: evaluate(programs, embeddings, t, args.head_names, sizes, args.repeats, args.seed)
                     for t in args.targets}
        seeds = sum(p.round < 0 for p in programs)
        out = args.out or Path("outputs") / "surrogate_quality" / time.strftime("%Y-%m-%d_%H-%M-%S")
        out.mkdir(parents=True, exist_ok=True)
        files = {"md": out / "quality.md", "json": out / "quality.json", "png": out / "quality.png"}
        text = "\n".join(f"## {t}\n\n" + table_markdown(r, sizes, n, caption(n, seeds, sources, t, args.repeats,
                                                                             args.seed, dropped, cost["embedder"]))
                         for t, r in by_target.items()) + "\n" + cost_text(cost) + "\n"
        files["md"].write_text("# Surrogate quality\n\n" + text)
        files["json"].write_text(json.dumps({
            "sources": [str(s.path) for s in sources], "n": n, "seeds": seeds,
            "n_by_source": {str(s.path): len(s.hashes) for s in sources},
            "embedder": cost["embedder"], "heads": args.head_names, "sizes": sizes, "dropped_sizes": dropped,
            "repeats": args.repeats, "seed": args.seed, "min_held_out": MIN_HELD_OUT, "cost": cost,
            "targets": {t: {k: {"label": v["label"], "sizes": {str(s): c for s, c in v["sizes"].items()}}
                            for k, v in r.items()} for t, r in by_target.items()}}, indent=2))
        plot_quality(by_target, sizes, n, files["png"])
        print(text)
        print("wrote:\n" + "\n".join(f"  {p}" for p in files.values()))
        return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return command(lambda: report(args))   # exit code 2 for a RunsError (QualityError among them)


if __name__ == "__main__":
    sys.exit(main())

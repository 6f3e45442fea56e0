"""``python -m evo.compare``: compare runs (variants x seeds) and draw the paper's Fig. 2.

    python -m evo.compare multirun/mnist1d/default/2026-11-24_10-00-00     # a --multirun sweep folder
    python -m evo.compare outputs/mnist1d/demo/* --by ablation.name --out figs/
    python -m evo.compare --wandb my-team/evo/ablations                      # runs of a W&B group

Inputs are run folders of ``python -m evo.run`` (paths or globs), or folders searched recursively
for ``archive.sqlite`` (a Hydra multirun sweep). Each run's resolved config and command-line
overrides are read from the archive's ``meta`` table (keys ``config`` and ``overrides``), else from
Hydra's ``.hydra/config.yaml`` and ``.hydra/overrides.yaml``.

Runs are grouped into variants: by default by the overrides that differ between runs (``seed=``,
``hydra.*``, ``hydra/*``, ``run_dir=`` and ``experiment_name=`` ignored), e.g.
``ablation=random_parents``; with ``--by ablation.name`` by that value of the resolved config. The
runs of a variant are its replicates (seeds).

Written into ``--out`` (default ``outputs/compare/<timestamp>``):

* ``pareto.png``: Fig. 2a, model size (log) vs TEST error of each variant's top ``--top`` children
  (by fitness, pooled over its seeds), with the variant's Pareto front; stars: the seeds (human designs);
* ``fitness_curve.png``: Fig. 2b, max fitness so far vs children generated, mean over seeds with a
  95% bootstrap band (see :func:`variant_curve` for how runs of different lengths are combined);
* ``table.md`` / ``table.json``: per variant runs, children, scored children, best fitness,
  hypervolume and new working children per sample (mean and 95% bootstrap CI over seeds), runs that
  beat their best seed; then paired tests (seeds paired) of the baseline variant (full EvoPrompting,
  or ``--baseline``) against each other one: p-value of an exact sign-flip permutation test, mean
  difference with a bootstrap CI, d_z, and a plain sentence, e.g. "The data cannot separate ...";
  also printed;
* ``runs.csv``: one line per run;
* ``sweep.html`` (with ``--html``): the variants' fronts and best-so-far curves side by side in one
  offline page, each run linking to its own ``lineage.html`` (evo/lineage).

Hypervolume is :func:`evo.analysis.metrics.run_hypervolume` in (num_params, test error) space with ONE
reference point for every run compared: the largest :func:`evo.analysis.metrics.hypervolume_ref` of them.

Refused or flagged before any figure: runs made under different protocols (any ``task.*`` key but
the banned words, ``search.alpha``, ``sandbox.timeout_s/memory_mb/cpu_s``, or the sample budget
T x m x n) are refused, naming the keys (``--allow-protocol-mismatch`` compares them anyway, flagged);
runs of one variant with the same seed (a run and its resumed or copied twin) are one replicate,
counted once (warned, listed under "twins"); runs with fewer children than their budget, or
children still pending (a sweep stopped part-way), are left out (``--include-incomplete``).

Exit code 0 on success, 2 on a bad input (message on stderr starting with ``error:``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml

from evo import outcome
from evo.archive import Archive
from evo.archive.moved import current_paths
from evo.archive.runs import ARCHIVE, RunsError, command, find_run_folders, opened
from evo.analysis.lineage import write_sweep_page
from evo.analysis.metrics import hypervolume_ref, pareto_front, run_hypervolume, top_children

# Overrides that say where or with which seed a run ran, not what was run.
_IGNORED_KEYS = ("seed", "run_dir", "experiment_name")


class CompareError(RunsError):
    """A bad input: reported as ``error: ...`` with exit code 2."""


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class Run:
    """One run folder, read from its archive."""
    folder: Path
    config: dict
    overrides: Optional[list]             # None: neither meta nor .hydra/overrides.yaml has them
    archive: Archive
    children: list = field(default_factory=list)   # rounds >= 0, id order: dicts of status, num_params, ...
    seeds: list = field(default_factory=list)      # round -1 rows (the human designs)
    variant: str = ""

    @property
    def task(self) -> Optional[str]:
        task = self.config.get("task")
        return str(task.get("name")) if isinstance(task, dict) and task.get("name") is not None else None

    @property
    def seed(self):
        if self.config.get("seed") is not None:
            return self.config["seed"]
        return parse_overrides(self.overrides or []).get("seed")

    @property
    def scored(self) -> list:
        return [c for c in self.children if c["status"] == outcome.OK]

    @property
    def best_fitness(self) -> Optional[float]:
        fits = [c["fitness"] for c in self.scored if c["fitness"] is not None]
        return max(fits) if fits else None

    @property
    def new_working(self) -> int:
        """Children of the search that trained (ok or filtered). A duplicate is never trained again,
        so each of these is new and distinct (as in evo.analysis.metrics.round_stats)."""
        return sum(1 for c in self.children if c["status"] in outcome.WORKING)

    @property
    def best_seed_fitness(self) -> Optional[float]:
        """The fittest human design the run started from (round -1, scored)."""
        fits = [s["fitness"] for s in self.seeds if s["status"] == outcome.OK and s["fitness"] is not None]
        return max(fits) if fits else None

    @property
    def budget(self) -> Optional[int]:
        """LM samples the run's config asks for: T x m x n (naive few-shot: 1 x m x nT, the same)."""
        try:
            return int(config_value(self.config, "search.rounds")) * int(
                config_value(self.config, "search.prompts_per_round")) * int(
                config_value(self.config, "crossmut.samples_per_prompt"))
        except (KeyError, TypeError, ValueError):
            return None


# ---------------------------------------------------------------- finding and reading runs

def _meta_json(archive: Archive, key: str):
    value = archive.get_meta(key)
    return None if value is None else json.loads(value)


def _hydra_yaml(folder: Path, name: str):
    path = folder / ".hydra" / name
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def load_run(folder: Path) -> Run:
    """Open a run's archive and read its config and overrides (meta first, then .hydra/)."""
    if not (folder / ARCHIVE).is_file():
        raise CompareError(f"{folder} has no {ARCHIVE}: pass run folders of `python -m evo.run`")
    try:
        archive = Archive(folder / ARCHIVE, readonly=True)
    except sqlite3.Error as exc:
        raise CompareError(f"{folder / ARCHIVE} cannot be opened: {exc}") from None
    config = _meta_json(archive, "config")
    if config is None:
        config = _hydra_yaml(folder, "config.yaml")
    if not isinstance(config, dict):
        archive.close()
        raise CompareError(f"{folder}: its config is in neither the archive's meta table (key 'config') nor "
                           ".hydra/config.yaml, so its task and variant are unknown")
    config = current_paths(config)   # a run made before evo/ became packages: today's module paths
    overrides = _meta_json(archive, "overrides")
    if overrides is None:
        overrides = _hydra_yaml(folder, "overrides.yaml")
    rows = archive.rows(("id", "round", "seed_name", "status", "num_params", "val_accuracy", "test_accuracy", "fitness"))
    return Run(folder=folder, config=config, overrides=None if overrides is None else [str(o) for o in overrides],
               archive=archive, children=[r for r in rows if r["round"] >= 0],
               seeds=[r for r in rows if r["round"] < 0])


# ---------------------------------------------------------------- variants

def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["ablation=random_parents", "+x=1"]`` -> ``{"ablation": "random_parents", "x": "1"}``;
    a deletion ``~key`` maps to None."""
    out = {}
    for o in overrides:
        key, _, value = o.partition("=")
        out[key.lstrip("+~")] = None if key.startswith("~") else value
    return out


def variant_overrides(overrides: Sequence[str]) -> dict:
    """The overrides that choose what is run: not the seed, Hydra's own, or where the run is written."""
    return {k: v for k, v in parse_overrides(overrides).items()
            if k not in _IGNORED_KEYS and not k.startswith(("hydra.", "hydra/")) and k != "hydra"}


def config_value(config: dict, dotted: str):
    """``config_value(cfg, "ablation.name")``; raises KeyError when a part is missing."""
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def _default_of(run: Run, key: str) -> str:
    """The value a run without ``key=`` on its command line used: its resolved config's (a group's name)."""
    try:
        value = config_value(run.config, key)
    except KeyError:
        return "(default)"
    if isinstance(value, dict):
        return str(value["name"]) if "name" in value else "(default)"
    return str(value)


def group_variants(runs: Sequence[Run], by: Optional[str] = None) -> dict[str, list[Run]]:
    """Variant label -> its runs, in order of first appearance; sets ``run.variant``.

    ``by=None``: the overrides that differ between runs, as ``key=value`` joined by ``, `` (a run
    without one of them gets its config's value); all identical: the task name. ``by="a.b"``: the
    resolved config value ``a.b``."""
    labels = []
    if by:
        values = []
        for run in runs:
            try:
                values.append(config_value(run.config, by))
            except KeyError:
                values.append(None)
        if all(v is None for v in values):
            raise CompareError(f"no run has the config key {by!r} (--by takes a dotted key of the resolved config, "
                               "e.g. ablation.name)")
        labels = [f"{by}={'(unset)' if v is None else v}" for v in values]
    else:
        missing = [str(r.folder) for r in runs if r.overrides is None]
        if missing:
            raise CompareError("no overrides (neither meta 'overrides' in archive.sqlite nor .hydra/overrides.yaml) "
                               f"in: {', '.join(missing)}; group by a config key instead, e.g. --by ablation.name")
        chosen = [variant_overrides(r.overrides) for r in runs]
        keys = sorted({k for c in chosen for k in c})
        differing = [k for k in keys if len({c.get(k, "\0missing") for c in chosen}) > 1]
        for run, c in zip(runs, chosen):
            parts = [f"{k}={c[k] if k in c else _default_of(run, k)}" for k in differing]
            labels.append(", ".join(parts) or (run.task or "all runs"))
    variants: dict[str, list[Run]] = {}
    for run, label in zip(runs, labels):
        run.variant = label
        variants.setdefault(label, []).append(run)
    return variants


def check_same_task(runs: Sequence[Run]) -> None:
    tasks: dict[str, list[str]] = {}
    for run in runs:
        tasks.setdefault(run.task or "(unknown)", []).append(str(run.folder))
    if len(tasks) > 1:
        which = "; ".join(f"task.name={t}: {', '.join(f)}" for t, f in tasks.items())
        raise CompareError(f"the runs are of different tasks ({which}); compare runs of one task at a time")


# Settings that must be equal for a comparison of search variants to be fair: what a child is trained
# and scored under, and how many LM samples a run gets. Everything else may be what varies.
_PROTOCOL_SECTIONS = ("task",)                       # every key of these (but _NOT_PROTOCOL's)
_PROTOCOL_KEYS = ("search.alpha", "sandbox.timeout_s", "sandbox.memory_mb", "sandbox.cpu_s")
_NOT_PROTOCOL = ("task.banned_words", "task.train_loop")   # the operator's words; how fast a child trains
BUDGET = "budget (search.rounds x search.prompts_per_round x crossmut.samples_per_prompt)"


def _flatten(node, prefix: str) -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: json.dumps(node, sort_keys=True)}


def protocol(run: Run) -> dict:
    """The run's protocol settings, flattened to ``key -> JSON value`` (missing keys left out)."""
    out = {}
    for section in _PROTOCOL_SECTIONS:
        if isinstance(run.config.get(section), dict):
            out.update(_flatten(run.config[section], section))
    for key in _PROTOCOL_KEYS:
        try:
            out[key] = json.dumps(config_value(run.config, key), sort_keys=True)
        except KeyError:
            pass
    for key in [k for k in out if k.startswith(_NOT_PROTOCOL)]:
        del out[key]
    if run.budget is not None:
        out[BUDGET] = str(run.budget)
    return out


def protocol_differences(runs: Sequence[Run]) -> dict[str, dict[str, list[str]]]:
    """Protocol keys on which the runs disagree: key -> {value -> folders}. A key that some runs lack
    (an older archive) counts as a difference only among the runs that have it."""
    settings = [protocol(r) for r in runs]
    keys = sorted({k for s in settings for k in s})
    out = {}
    for key in keys:
        values: dict[str, list[str]] = {}
        for run, s in zip(runs, settings):
            if key in s:
                values.setdefault(s[key], []).append(str(run.folder))
        if len(values) > 1:
            out[key] = values
    return out


def mismatch_note(mismatch: dict, what: str = "") -> str:
    """The line a table ends with when runs of different protocols were compared anyway (check_same_protocol)."""
    return (f"\nPROTOCOL MISMATCH{what} (--allow-protocol-mismatch): "
            + "; ".join(f"{k} differs ({', '.join(v)})" for k, v in mismatch.items()) + "\n")


def check_same_protocol(runs: Sequence[Run], allow: bool) -> dict[str, dict[str, list[str]]]:
    """Refuse runs trained under different settings or budgets (CompareError naming the keys); with
    ``allow``, warn and return the differences so the table can flag them."""
    diff = protocol_differences(runs)
    if not diff:
        return {}
    lines = []
    for key, values in diff.items():
        shown = "; ".join(f"{v} in {len(f)} run(s), e.g. {f[0]}" for v, f in values.items())
        lines.append(f"{key}: {shown}")
    message = ("the runs were made under different protocols, so their variants are not comparable: "
               + " | ".join(lines))
    if not allow:
        raise CompareError(message + ". Compare runs of one protocol (same task settings, sandbox limits, alpha "
                           "and sample budget), or pass --allow-protocol-mismatch to compare anyway with the "
                           "differing keys flagged in the table")
    warn(message)
    return diff


def drop_twins(variants: dict[str, list[Run]]) -> list[dict]:
    """Runs of one variant with the same seed are one replicate, not two (a run and its resumed or
    copied twin): keep the one with the most children of the search (the first on a tie), drop the
    rest from ``variants`` in place, and return one record per set of twins (also warned)."""
    twins = []
    for label, runs in variants.items():
        by_seed: dict = {}
        for run in runs:
            by_seed.setdefault(json.dumps(run.seed), []).append(run)
        kept = []
        for seed_key, same in by_seed.items():
            keep = max(same, key=lambda r: len(r.children))   # max keeps the first of equals
            kept.append(keep)
            if len(same) > 1:
                dropped = [r for r in same if r is not keep]
                twins.append({"variant": label, "seed": keep.seed, "kept": str(keep.folder),
                              "dropped": [str(r.folder) for r in dropped]})
                warn(f"variant {label!r}: {len(same)} runs with seed {keep.seed} ({', '.join(str(r.folder) for r in same)}) "
                     f"are one replicate (a resumed or copied run), not {len(same)}: counted once, as {keep.folder}")
        runs[:] = [r for r in runs if any(r is k for k in kept)]
    return twins


def incomplete_runs(runs: Sequence[Run]) -> list[Run]:
    """Runs with fewer children of the search than their sample budget (stopped part-way)."""
    return [r for r in runs if (r.budget is not None and len(r.children) < r.budget)
            or any(c["status"] == outcome.PENDING for c in r.children)]


# ---------------------------------------------------------------- statistics

def best_so_far_curve(fitnesses: Sequence[Optional[float]]) -> np.ndarray:
    """Max fitness so far after each child; ``None`` (a child that is not scored) does not raise it.
    NaN before the first scored child."""
    out = np.full(len(fitnesses), np.nan)
    best = -math.inf
    for i, f in enumerate(fitnesses):
        if f is not None:
            best = max(best, f)
        if best > -math.inf:
            out[i] = best
    return out


def run_fitnesses(run: Run) -> list:
    """Fitness of each child of rounds >= 0 in generation order; None where it is not 'ok'."""
    return [c["fitness"] if c["status"] == outcome.OK else None for c in run.children]


def bootstrap_means(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n`` resamples (with replacement) of the rows of ``values`` (seeds x ...)."""
    values = np.asarray(values, dtype=float)
    idx = rng.integers(0, len(values), size=(n, len(values)))
    return values[idx].mean(axis=1)


def bootstrap_ci(values: Sequence[float], n: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean of ``values`` (seeds resampled with replacement)."""
    if len(values) == 0:
        raise ValueError("bootstrap_ci of no values")
    lo, hi = np.percentile(bootstrap_means(np.asarray(values, dtype=float), n, rng), [2.5, 97.5])
    return float(lo), float(hi)


def variant_curve(runs: Sequence[Run], n: int, seed: int) -> Optional[dict]:
    """Fig. 2b for one variant: x = 1..L children generated, mean best-so-far fitness over its seeds
    and a 95% bootstrap band (None with one seed).

    Each run's step curve is evaluated on the common grid x = 1..L, L = the length of the variant's
    SHORTEST run, so every point averages the same seeds. A point is drawn only where every seed
    already has a scored child (the curve starts at the latest first scored child of its seeds).
    Runs without any scored child are left out; None when no run has one."""
    curves = [best_so_far_curve(run_fitnesses(r)) for r in runs]
    curves = [c for c in curves if np.isfinite(c).any()]
    if not curves:
        return None
    length = min(len(c) for c in curves)
    matrix = np.stack([c[:length] for c in curves])
    mean = matrix.mean(axis=0)   # NaN where a seed has no scored child yet
    lo = hi = None
    if len(curves) > 1:
        means = bootstrap_means(matrix, n, np.random.default_rng(seed))
        lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
    return {"x": np.arange(1, length + 1), "mean": mean, "lo": lo, "hi": hi, "runs": len(curves)}


def _stat(values: list, n: int, seed: int) -> dict:
    """Mean and 95% bootstrap CI over seeds (CI None for fewer than two values)."""
    if not values:
        return {"mean": None, "ci": None, "values": []}
    ci = list(bootstrap_ci(values, n, np.random.default_rng(seed))) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "ci": ci, "values": values}


def common_ref(runs: Sequence[Run]) -> tuple[float, float]:
    """One hypervolume reference point for all runs: the largest of their own."""
    refs = [hypervolume_ref(r.archive) for r in runs]
    return (max(r[0] for r in refs), max(r[1] for r in refs))


def run_row(run: Run, ref: tuple[float, float]) -> dict:
    best, best_seed = run.best_fitness, run.best_seed_fitness
    return {"folder": str(run.folder), "variant": run.variant, "seed": run.seed, "task": run.task,
            "children": len(run.children), "scored": len(run.scored), "best_fitness": best,
            "hypervolume": run_hypervolume(run.archive, error="test", ref=ref),
            "new_working": run.new_working,
            "new_working_per_sample": run.new_working / len(run.children) if run.children else None,
            "best_seed_fitness": best_seed,
            "beats_best_seed": None if best is None or best_seed is None else bool(best > best_seed)}


def summarise(variants: dict[str, list[Run]], ref: tuple[float, float], n: int, seed: int) -> list[dict]:
    """One row per variant: runs, mean children and scored children, best fitness and hypervolume
    (mean and 95% bootstrap CI over seeds)."""
    rows = []
    for label, runs in variants.items():
        per_run = [run_row(r, ref) for r in runs]
        rows.append({
            "variant": label, "runs": len(runs), "seeds": [r["seed"] for r in per_run],
            "children_mean": float(np.mean([r["children"] for r in per_run])),
            "scored_mean": float(np.mean([r["scored"] for r in per_run])),
            "best_fitness": _stat([r["best_fitness"] for r in per_run if r["best_fitness"] is not None], n, seed),
            "hypervolume": _stat([r["hypervolume"] for r in per_run], n, seed),
            "new_working_per_sample": _stat([r["new_working_per_sample"] for r in per_run
                                             if r["new_working_per_sample"] is not None], n, seed),
            "beat_best_seed": sum(1 for r in per_run if r["beats_best_seed"]),
            "run_rows": per_run,
        })
    return rows


# The metrics of the paired tests: per-run values, higher is better in each.
PAIRED_METRICS = ("best_fitness", "hypervolume", "new_working_per_sample")
ALPHA = 0.05   # the level at which a paired test is said to separate two variants


def baseline_variant(variants: dict[str, list[Run]], label: Optional[str]) -> str:
    """The variant every other is tested against: ``label``, else the one whose runs are all full
    EvoPrompting (ablation.name = none), else the first."""
    if label is not None:
        if label not in variants:
            raise CompareError(f"--baseline {label!r} is not a variant; the variants are: {', '.join(variants)}")
        return label
    for name, runs in variants.items():
        if all(_default_of(r, "ablation") == "none" for r in runs):
            return name
    return next(iter(variants))


def paired_test(a: dict, b: dict, n: int, seed: int) -> dict:
    """Paired comparison of two variants over the seeds both have: ``a``, ``b`` map seed -> value.

    p: two-sided sign-flip permutation test of the mean paired difference (scipy.stats.permutation_test,
    permutation_type="samples": each pair's two values swapped or not; exact, all 2^n flips, up to 13
    pairs). Effect: the mean difference a - b with a 95% percentile bootstrap CI over pairs, and
    Cohen's d_z (mean / sd of the differences; None when they do not vary)."""
    from scipy import stats   # scipy takes ~1-2 s to import: only for the paired tests

    seeds = [s for s in a if s in b and a[s] is not None and b[s] is not None]
    x = np.array([a[s] for s in seeds], dtype=float)
    y = np.array([b[s] for s in seeds], dtype=float)
    d = x - y
    out = {"pairs": len(seeds), "seeds": [json.loads(s) for s in seeds], "differences": d.tolist(),
           "mean_difference": float(d.mean()) if len(d) else None, "ci": None, "d_z": None, "p": None,
           "min_p": None, "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "exact": None}
    if len(d) < 2:
        return out
    exact = 2 ** len(d) <= 9999
    res = stats.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), vectorized=True,
                                 permutation_type="samples", alternative="two-sided", n_resamples=9999,
                                 random_state=np.random.default_rng(seed))
    sd = float(d.std(ddof=1))
    out.update(p=float(res.pvalue), exact=exact, min_p=min(1.0, 2.0 / 2 ** len(d)) if exact else None,
               ci=list(bootstrap_ci(d, n, np.random.default_rng(seed))),
               d_z=float(d.mean() / sd) if sd > 0 else None)
    return out


def paired_tests(rows: list[dict], baseline: str, n: int, seed: int) -> list[dict]:
    """The baseline variant against each other variant, seeds paired, on each of PAIRED_METRICS."""
    by_variant = {r["variant"]: r for r in rows}
    values = lambda row, m: {json.dumps(rr["seed"]): rr[m] for rr in row["run_rows"]}   # noqa: E731
    tests = []
    for other in (v for v in by_variant if v != baseline):
        for metric in PAIRED_METRICS:
            t = paired_test(values(by_variant[baseline], metric), values(by_variant[other], metric), n, seed)
            tests.append({"baseline": baseline, "other": other, "metric": metric, **t,
                          "verdict": verdict(baseline, other, metric, t)})
    return tests


def verdict(a: str, b: str, metric: str, t: dict) -> str:
    """One plain sentence on what a paired test says."""
    what = metric.replace("_", " ")
    if t["pairs"] < 2:
        return (f"{a} vs {b}, {what}: not testable, {t['pairs']} seed(s) in common (a paired test needs two or "
                "more runs of each variant with the same seeds).")
    diff = f"mean difference {t['mean_difference']:+.4g} [95% CI {t['ci'][0]:+.4g}, {t['ci'][1]:+.4g}]"
    p = f"p = {t['p']:.3g}, {t['pairs']} paired seeds"
    if t["p"] < ALPHA:
        side = "better" if t["mean_difference"] > 0 else "worse"
        return f"{a} is {side} than {b} on {what} ({p}; {diff}; {a} higher in {t['wins']} of {t['pairs']})."
    floor = ""
    if t["min_p"] is not None and t["min_p"] >= ALPHA:
        floor = (f" With {t['pairs']} pairs this test cannot go below p = {t['min_p']:.3g}, so no result could "
                 f"reach p < {ALPHA}: more seeds are needed (6 or more).")
    return (f"The data cannot separate {a} from {b} on {what} ({p}; {diff}; {a} higher in {t['wins']} of "
            f"{t['pairs']}).{floor}")


# ---------------------------------------------------------------- tables

_BOLD_COLUMNS = ("scored_mean", "best_fitness", "hypervolume", "new_working_per_sample")   # higher is better in each


def _value(row: dict, column: str) -> Optional[float]:
    v = row[column]
    return v["mean"] if isinstance(v, dict) else v


def best_variants(rows: list[dict]) -> dict[str, set]:
    """Column -> the variants with its highest value (ties: all); empty with fewer than two variants."""
    out = {}
    for column in _BOLD_COLUMNS:
        values = {r["variant"]: _value(r, column) for r in rows if _value(r, column) is not None}
        top = max(values.values()) if len(rows) > 1 and values else None
        out[column] = {v for v, x in values.items() if top is not None and math.isclose(x, top, rel_tol=1e-12)}
    return out


def _fmt_stat(s: dict, spec: str) -> str:
    if s["mean"] is None:
        return "–"
    return format(s["mean"], spec) + (f" [{format(s['ci'][0], spec)}, {format(s['ci'][1], spec)}]" if s["ci"] else "")


def caption(ref: tuple[float, float], runs: int, n: int, seed: int) -> str:
    return (f"Per variant, over its runs (seeds). Best fitness = max of -(num_params x validation error) over the "
            f"scored children (round >= 0), higher is better. Hypervolume: area dominated by the scored children in "
            f"(num_params, TEST error) space, both minimised, as a fraction of the box from (0, 0) to the common "
            f"reference point ({ref[0]:.0f} params, error {ref[1]:g}) = the largest evo.analysis.metrics.hypervolume_ref of the "
            f"{runs} run(s) (twice the largest seed's size). New working / sample: children of the search that "
            f"trained (ok or filtered; duplicates are never trained twice, so each is new) per LM sample. Mean [95% "
            f"percentile bootstrap CI over seeds, {n} resamples, seed {seed}]; bold: the best variant per column. "
            f"Beat best seed: runs whose best child is fitter than the fittest seed program they started from.")


def table_markdown(rows: list[dict], text: str) -> str:
    best = best_variants(rows)
    lines = [text, "",
             "| variant | runs | children (mean) | scored (mean) | best fitness | hypervolume (test error) "
             "| new working / sample | beat best seed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    bold = lambda s, col, r: f"**{s}**" if r["variant"] in best[col] else s   # noqa: E731
    for r in rows:
        lines.append(f"| {r['variant']} | {r['runs']} | {r['children_mean']:.1f} | "
                     f"{bold(format(r['scored_mean'], '.1f'), 'scored_mean', r)} | "
                     f"{bold(_fmt_stat(r['best_fitness'], '.1f'), 'best_fitness', r)} | "
                     f"{bold(_fmt_stat(r['hypervolume'], '.4f'), 'hypervolume', r)} | "
                     f"{bold(_fmt_stat(r['new_working_per_sample'], '.3f'), 'new_working_per_sample', r)} | "
                     f"{r['beat_best_seed']} of {r['runs']} |")
    return "\n".join(lines) + "\n"


def tests_markdown(tests: list[dict], baseline: str) -> str:
    """The paired tests as a table, then each one's sentence."""
    if not tests:
        return ""
    lines = [f"Paired tests, seeds paired: {baseline} against each other variant. Difference = {baseline} minus the "
             "other (higher is better in every metric); p: two-sided exact sign-flip permutation test of the mean "
             "difference; 95% bootstrap CI over pairs; d_z = mean / sd of the differences.", "",
             "| other variant | metric | pairs | mean difference [95% CI] | d_z | p | wins |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for t in tests:
        diff = "–" if t["mean_difference"] is None else (
            f"{t['mean_difference']:+.4g}" + (f" [{t['ci'][0]:+.4g}, {t['ci'][1]:+.4g}]" if t["ci"] else ""))
        lines.append(f"| {t['other']} | {t['metric']} | {t['pairs']} | {diff} | "
                     f"{'–' if t['d_z'] is None else format(t['d_z'], '.2f')} | "
                     f"{'–' if t['p'] is None else format(t['p'], '.3g')} | {t['wins']} of {t['pairs']} |")
    lines.append("")
    lines.extend(f"- {t['verdict']}" for t in tests)
    return "\n".join(lines) + "\n"


def write_runs_csv(rows: list[dict], path: Path) -> None:
    cols = ["folder", "variant", "seed", "children", "scored", "best_fitness", "hypervolume", "new_working",
            "new_working_per_sample", "best_seed_fitness", "beats_best_seed"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in (rr for row in rows for rr in row["run_rows"]):
            w.writerow(["" if r[c] is None else r[c] for c in cols])


# ---------------------------------------------------------------- figures

def _pyplot():
    # matplotlib takes ~1 s to import: only when plotting
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # after use("Agg"): plots are files, no display
    return plt


def plot_pareto(variants: dict[str, list[Run]], top: int, path: Path) -> None:
    """Fig. 2a: size (log) vs test error of each variant's top children, its Pareto front as a step line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (label, runs) in enumerate(variants.items()):
        best = top_children(runs, top)
        if not best:
            continue
        pts = [(c["num_params"], 1.0 - c["test_accuracy"]) for c in best]
        color = f"C{i % 10}"
        ax.scatter(*zip(*pts), s=24, color=color, alpha=0.7, label=f"{label} (top {len(pts)})")
        front = pareto_front(pts)
        ax.step(*zip(*front), where="post", color=color, lw=1.5)
    seeds = {}
    for runs in variants.values():   # the same human designs start every run of a task
        for r in runs:
            for s in r.seeds:
                if s["status"] in outcome.WORKING and s["num_params"] and s["test_accuracy"] is not None:
                    seeds.setdefault(s["seed_name"], s)
    for j, s in enumerate(seeds.values()):
        ax.scatter(s["num_params"], 1.0 - s["test_accuracy"], marker="*", s=140, color="black",
                   label="seeds (human designs)" if j == 0 else None)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)
    ax.set_xlabel("model size (parameters, log scale)")
    ax.set_ylabel("test error")
    ax.set_title(f"Top {top} children per variant (pooled over seeds) and Pareto fronts")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def best_seed(variants: dict[str, list[Run]]) -> Optional[dict]:
    """The fittest scored seed program of any run (every run of a task starts from the same seeds)."""
    seeds = [s for runs in variants.values() for r in runs for s in r.seeds
             if s["status"] == outcome.OK and s["fitness"] is not None]
    return max(seeds, key=lambda s: s["fitness"]) if seeds else None


def plot_fitness_curve(curves: dict[str, Optional[dict]], path: Path, seed_ref: Optional[dict] = None) -> None:
    """Fig. 2b: max fitness so far vs children generated, mean over seeds, 95% bootstrap band; a dashed
    line at the best seed's fitness (the human design to beat)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if seed_ref is not None:
        ax.axhline(seed_ref["fitness"], color="black", ls="--", lw=1,
                   label=f"best seed ({seed_ref['seed_name']}): {seed_ref['fitness']:.1f}")
    for i, (label, c) in enumerate(curves.items()):
        if c is None:
            continue
        color = f"C{i % 10}"
        runs = f"{c['runs']} run" + ("s" if c["runs"] > 1 else "")
        # A step curve: the max only changes when a child is scored.
        ax.plot(c["x"], c["mean"], color=color, lw=1.5, drawstyle="steps-post", label=f"{label} ({runs})")
        if c["lo"] is not None:
            ax.fill_between(c["x"], c["lo"], c["hi"], color=color, alpha=0.2, lw=0, step="post")
    ax.set_xlabel("children generated (each variant up to its shortest run)")
    ax.set_ylabel("max fitness so far: -(params x val error)")
    ax.set_title("Fitness over the search (mean over seeds, 95% bootstrap band)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- Weights & Biases

def _wandb():
    try:
        import wandb   # optional and slow to import: only for --wandb
    except ImportError:
        raise CompareError("--wandb needs the wandb package: pip install wandb (and wandb login)") from None
    return wandb


def parse_wandb_spec(spec: str) -> tuple[Optional[str], str, str]:
    """``ENTITY/PROJECT/GROUP`` or ``PROJECT/GROUP`` -> (entity or None, project, group)."""
    parts = spec.strip("/").split("/")
    if len(parts) == 2 and all(parts):
        return None, parts[0], parts[1]
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2]
    raise CompareError(f"--wandb {spec!r}: expected ENTITY/PROJECT/GROUP or PROJECT/GROUP")


def fetch_wandb(spec: str, out: Path) -> list[Path]:
    """Download the ``archive`` artifact of every run of a W&B group into ``out/wandb_runs/<run id>``."""
    wandb = _wandb()
    entity, project, group = parse_wandb_spec(spec)
    try:
        runs = list(wandb.Api().runs(f"{entity}/{project}" if entity else project, filters={"group": group}))
    except Exception as exc:   # no login, no network, unknown project: say so in one line
        raise CompareError(f"W&B runs of {spec!r} could not be listed: {exc}") from None
    folders = []
    for run in runs:
        arts = [a for a in run.logged_artifacts() if a.type == "archive"]
        if not arts:
            warn(f"W&B run {run.id} ({run.name}) logged no artifact of type 'archive': skipped")
            continue
        # The newest version (alias 'latest'): the archive as the run finished.
        art = next((a for a in arts if "latest" in (a.aliases or [])), arts[-1])
        folder = out / "wandb_runs" / run.id
        art.download(root=str(folder))
        if not (folder / ".hydra" / "config.yaml").exists() and run.config:
            (folder / ".hydra").mkdir(parents=True, exist_ok=True)
            (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(dict(run.config)))
        folders.append(folder)
    if not folders:
        raise CompareError(f"no runs with an 'archive' artifact found in W&B group {group!r} of "
                           f"{entity + '/' if entity else ''}{project} ({len(runs)} run(s) in the group)")
    return folders


def log_wandb(spec: str, paths: dict, rows: list[dict]) -> None:
    wandb = _wandb()
    entity, project, group = parse_wandb_spec(spec)
    run = wandb.init(project=project, entity=entity, group=group, job_type="compare")
    cols = ["variant", "runs", "children_mean", "scored_mean", "best_fitness", "hypervolume"]
    table = wandb.Table(columns=cols, data=[[r["variant"], r["runs"], r["children_mean"], r["scored_mean"],
                                             r["best_fitness"]["mean"], r["hypervolume"]["mean"]] for r in rows])
    wandb.log({"compare/pareto": wandb.Image(str(paths["pareto"])),
               "compare/fitness_curve": wandb.Image(str(paths["fitness_curve"])), "compare/table": table})
    run.finish()


# ---------------------------------------------------------------- command line

_EXAMPLES = """\
examples:
  python -m evo.compare multirun/mnist1d/default/2026-11-24_10-00-00
      every run of a --multirun sweep (each subfolder with archive.sqlite), grouped by the overrides
      that differ between them, e.g. ablation=random_parents; seed=... marks replicates
  python -m evo.compare outputs/mnist1d/demo/* --by ablation.name --out figs/
      run folders from a glob, grouped by a value of their resolved config
  python -m evo.compare --wandb my-team/evo/ablations
      the runs of a W&B group (their 'archive' artifacts); figures and table are logged back

writes pareto.png (Fig. 2a), fitness_curve.png (Fig. 2b), table.md, table.json and runs.csv into --out.
"""


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evo.compare", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EXAMPLES,
        description="Compare EvoPrompting runs (variants x seeds) and draw the paper's Fig. 2: Pareto fronts of "
                    "size vs test error, and max fitness vs children generated, plus a table of best fitness and "
                    "hypervolume with 95% bootstrap CIs over seeds.")
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="run folders, globs, or folders searched recursively for archive.sqlite (a multirun sweep)")
    p.add_argument("--wandb", metavar="[ENTITY/]PROJECT/GROUP",
                   help="download the runs of this W&B group instead (their 'archive' artifacts)")
    p.add_argument("--by", metavar="KEY", help="group runs by this dotted key of the resolved config "
                   "(e.g. ablation.name) instead of by the overrides that differ")
    p.add_argument("--out", type=Path, help="output folder (default: outputs/compare/<timestamp>)")
    p.add_argument("--top", type=int, default=20, help="children per variant in the Pareto plot (default 20)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs and bands (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap RNG (default 0)")
    p.add_argument("--baseline", metavar="VARIANT", help="the variant the paired tests compare every other with "
                   "(default: the full EvoPrompting one, ablation none)")
    p.add_argument("--allow-protocol-mismatch", action="store_true", help="compare runs made under different "
                   "task/training settings or sample budgets (refused by default), flagging the keys")
    p.add_argument("--html", action="store_true", help="also write sweep.html: fronts and curves in one offline "
                   "page, each run linked to its lineage.html (written into run folders that lack one)")
    p.add_argument("--include-incomplete", action="store_true", help="keep runs with fewer children than their "
                   "sample budget, or pending ones (left out by default: a sweep stopped part-way)")
    args = p.parse_args(argv)
    if bool(args.runs) == bool(args.wandb):
        p.error("pass run folders, or --wandb [ENTITY/]PROJECT/GROUP (one of the two)")
    if args.top < 1 or args.bootstrap < 1:
        p.error("--top and --bootstrap must be at least 1")
    return args


def compare(args: argparse.Namespace) -> dict:
    """Everything after argument parsing; returns the paths written."""
    out = args.out or Path("outputs") / "compare" / time.strftime("%Y-%m-%d_%H-%M-%S")
    folders = fetch_wandb(args.wandb, out) if args.wandb else find_run_folders(args.runs)
    with opened(folders, load_run) as runs:
        check_same_task(runs)
        mismatch = check_same_protocol(runs, getattr(args, "allow_protocol_mismatch", False))
        variants = group_variants(runs, args.by)
        twins = drop_twins(variants)
        incomplete = incomplete_runs([r for rs in variants.values() for r in rs])
        for r in incomplete:
            warn(f"{r.folder} is incomplete ({len(r.children)} of {r.budget} samples, or children still pending): "
                 + ("kept (--include-incomplete)" if getattr(args, "include_incomplete", False) else
                    "left out; finish it by running its command again, or pass --include-incomplete"))
        if not getattr(args, "include_incomplete", False):
            for label in variants:
                variants[label] = [r for r in variants[label] if not any(r is i for i in incomplete)]
            variants = {k: v for k, v in variants.items() if v}
            if not variants:
                raise CompareError("every run is incomplete: nothing to compare (pass --include-incomplete)")
        runs_used = [r for rs in variants.values() for r in rs]
        empty = [v for v, rs in variants.items() if not any(r.scored for r in rs)]
        for v in empty:
            warn(f"variant {v!r} has no scored child (status 'ok', round >= 0) in its {len(variants[v])} run(s): "
                 "it is left out of the figures")
        if len(empty) == len(variants):
            raise CompareError("no run has a scored child (status 'ok', round >= 0): nothing to compare")
        ref = common_ref(runs_used)
        rows = summarise(variants, ref, args.bootstrap, args.seed)
        baseline = baseline_variant(variants, getattr(args, "baseline", None))
        tests = paired_tests(rows, baseline, args.bootstrap, args.seed)
        curves = {v: variant_curve(rs, args.bootstrap, args.seed) for v, rs in variants.items()}
        out.mkdir(parents=True, exist_ok=True)
        paths = {k: out / name for k, name in (("pareto", "pareto.png"), ("fitness_curve", "fitness_curve.png"),
                                               ("table_md", "table.md"), ("table_json", "table.json"),
                                               ("runs_csv", "runs.csv"))}
        text = table_markdown(rows, caption(ref, len(runs_used), args.bootstrap, args.seed))
        seed_ref = best_seed(variants)
        if seed_ref is not None:
            text += (f"\nBest seed: {seed_ref['seed_name']}, fitness {seed_ref['fitness']:.1f}; "
                     f"{sum(r['beat_best_seed'] for r in rows)} of {len(runs_used)} runs beat it.\n")
        if twins:
            text += "\nTwins (one replicate counted once): " + "; ".join(
                f"{t['variant']} seed {t['seed']}: kept {t['kept']}, dropped {', '.join(t['dropped'])}" for t in twins) + "\n"
        if mismatch:
            text += mismatch_note(mismatch)
        text += "\n" + tests_markdown(tests, baseline)
        paths["table_md"].write_text(text)
        best = best_variants(rows)
        paths["table_json"].write_text(json.dumps({
            "task": runs[0].task, "by": args.by or "overrides", "error": "test", "reference_point": list(ref),
            "bootstrap": args.bootstrap, "seed": args.seed, "top": args.top,
            "best": {k: sorted(v) for k, v in best.items()},
            "best_seed": None if seed_ref is None else {k: seed_ref[k] for k in ("seed_name", "num_params",
                                                                                 "val_accuracy", "test_accuracy", "fitness")},
            "baseline": baseline, "paired_tests": tests, "twins": twins,
            "incomplete": [str(r.folder) for r in incomplete],
            "protocol_mismatch": {k: v for k, v in mismatch.items()},
            "variants": [{**{k: v for k, v in r.items() if k != "run_rows"}, "runs_detail": r["run_rows"],
                          "curve_length": None if curves[r["variant"]] is None else len(curves[r["variant"]]["x"])}
                         for r in rows]}, indent=2))
        write_runs_csv(rows, paths["runs_csv"])
        plot_pareto(variants, args.top, paths["pareto"])
        plot_fitness_curve(curves, paths["fitness_curve"], seed_ref)
        if args.html:
            paths["html"] = write_sweep_page(variants, curves, args.top, out / "sweep.html")
        print(text)
        if args.wandb:
            log_wandb(args.wandb, paths, rows)
        print("wrote:\n" + "\n".join(f"  {p}" for p in paths.values()))
        return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return command(lambda: compare(args))   # exit code 2 for a RunsError (CompareError among them)


if __name__ == "__main__":
    sys.exit(main())

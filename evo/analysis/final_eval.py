"""``python -m evo.final_eval child_file=PATH``: the paper's final CLRS evaluation of one program.

    python -m evo.final_eval child_file=outputs/my_child.py                        # all 30 tasks x 3 seeds
    python -m evo.final_eval child_file=seeds/clrs/v2.py final_eval.algorithms=[bfs,dfs] final_eval.train_seeds=5
    python -m evo.final_eval child_file=my_child.py task.train_steps=500 final_eval.out_dir=outputs/fe_500

A program (a seed, or a discovered child saved as a ``.py`` file) and our own baseline (seed v1, the
Triplet-GMPNN triplet function, through exactly the same pipeline) are each trained on every chosen
CLRS-30 algorithm with several training seeds, and scored out of distribution: trained on the task
config's training sizes (conf/task/clrs.yaml: up to 16 nodes) and tested at ``task.test_length`` (64
nodes). Each evaluation is the search's own FILTERANDEVAL path (static checks, sandbox, training); the
alpha filter only sets the status, the scores of every child that trained are kept. ``task.*`` overrides
apply to every evaluation; ``task=clrs`` is the default here.

Options (the ``final_eval`` node, documented in conf/config.yaml; print them with ``--cfg job``):

* ``final_eval.algorithms``: ``all`` (the 30 of CLRS-30), one name, or a list ``[bfs,dfs]`` (dm-clrs names);
* ``final_eval.train_seeds``: training seeds per algorithm and program: ``task.train_seed`` + 0, 1, ...;
* ``final_eval.baseline``: our baseline program (``seeds/clrs/v1.py``); ``null``: no baseline runs;
* ``final_eval.out_dir``: ``null`` -> ``outputs/final_eval/<child file stem>``;
* ``final_eval.retry_failed``: evaluate again the evaluations recorded as failed (timeout, crash, ...).

``evaluator.workers`` evaluations run at once (default 1), each pinned to its own core with
``evaluator.pin_cpus``; ``sandbox.*`` limits apply to each (mind ``sandbox.timeout_s`` at the paper's
2000 steps). The data of each algorithm is generated once into ``cache_dir`` and shared by all runs.

In ``out_dir``: ``results.jsonl`` (one line per finished evaluation, appended as each finishes),
``results.csv``, ``results.md``, ``results.png`` (tables and plot, next to the paper's Table 3),
``settings.json`` (the task settings all results there were made with) and ``config.yaml`` (the composed
config of the latest invocation). A rerun with the same ``out_dir`` skips every evaluation already in
``results.jsonl`` (key: the program's normalised code hash, algorithm, training seed), so an interrupted
run resumes, and more algorithms or seeds can be added later; the tables summarise every result of the
child and the baseline in ``results.jsonl``. A rerun with other task settings is refused (they would mix
two protocols in one table).

Exit code: 0 when every evaluation completed (whatever the programs did: failures are recorded with
their status and reason); 1 when the data of some algorithm could not be generated (those evaluations
are not recorded, a rerun tries them again); 2 for a bad config or an unreadable file.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
import queue
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm.auto import tqdm

from evo import outcome
from evo.config import validate
from evo.errors import ConfigError, fail
from evo.run import CONF_DIR, exit_on_config_error, start_one_off
from evo.sandbox.runner import SandboxLimits
from evo.search.evaluators import LocalEvaluator, cpu_slots
from evo.search.filter_eval import FilterAndEval
from evo.search.program import code_hash
from evo.tasks.base import REPO_ROOT
from evo.tasks.clrs.published import CLRS30, IBARZ_AVERAGE, TABLE3

RESULTS = "results.jsonl"
SETTINGS = "settings.json"
# Task keys that do not change what a program is trained and tested on (algorithm and train_seed are
# set per evaluation; the others concern the search's LM or its seed folder).
_FREE_TASK_KEYS = ("algorithm", "train_seed", "seeds_dir", "banned_words", "name")


# ---------------------------------------------------------------- checks (before any compute)

@dataclass
class Program:
    role: str        # "child" or "baseline"
    path: Path
    code: str
    code_hash: str


@dataclass
class Plan:
    child: Program
    baseline: Optional[Program]
    algorithms: list
    seeds: list
    out_dir: Path
    settings: dict

    @property
    def programs(self) -> list:
        return [self.child] + ([self.baseline] if self.baseline else [])


def _read_program(role: str, key: str, value: str, fallback_to_repo: bool = False) -> Program:
    path = Path(value).expanduser()
    if fallback_to_repo and not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    try:
        code = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}={value!r} cannot be read ({exc.__class__.__name__}: {exc}). "
                          "Fix: pass the path of a readable UTF-8 Python file.") from None
    return Program(role, path, code, code_hash(code))


def algorithms_of(value) -> list:
    """``all``, a name or a list of names -> the dm-clrs names, in the order given, each once."""
    if isinstance(value, (list, tuple, ListConfig)):
        names = [str(v) for v in value]
    elif isinstance(value, str):
        names = list(CLRS30) if value.strip().lower() == "all" else [value.strip()]
    else:
        names = []
    if not names:
        fail("final_eval.algorithms", value, "It names the CLRS-30 algorithms to evaluate on.",
             "pass final_eval.algorithms=all, or a list such as final_eval.algorithms=[bfs,dfs].")
    unknown = [n for n in names if n not in CLRS30]
    if unknown:
        hints = [f"{n} -> {m[0]}" for n in unknown if (m := difflib.get_close_matches(n, CLRS30, n=1))]
        fail("final_eval.algorithms", [*names] if len(names) > 1 else names[0],
             f"Unknown CLRS-30 algorithm(s): {', '.join(unknown)}"
             + (f" (did you mean: {'; '.join(hints)}?)" if hints else "")
             + f". Valid names (dm-clrs): {', '.join(CLRS30)}.",
             "pass final_eval.algorithms=all, or a list of the names above, e.g. final_eval.algorithms=[bfs,dfs].")
    return list(dict.fromkeys(names))


def task_settings(cfg: DictConfig) -> dict:
    """The task keys every result in an out_dir must share."""
    plain = OmegaConf.to_container(cfg.task, resolve=True)
    return {k: v for k, v in plain.items() if k not in _FREE_TASK_KEYS}


def make_plan(cfg: DictConfig) -> Plan:
    """Every check, before any data is generated or any program trained."""
    target = str(cfg.task.get("_target_", ""))
    if not target.endswith("clrs.task.CLRSTask"):
        fail("task", cfg.task.get("name", target), "The final evaluation is the CLRS-30 protocol of the paper "
             "(out-of-distribution scores next to its Table 3); it needs the CLRS task.",
             "pass task=clrs (the default of python -m evo.final_eval), or drop the task= override.")
    validate(cfg, needs_lm=False)
    fe = cfg.final_eval
    if not cfg.child_file:
        raise ConfigError("child_file is not set. Fix: python -m evo.final_eval child_file=path/to/program.py "
                          "(a seed such as seeds/clrs/v2.py, or a discovered child saved as a .py file).")
    child = _read_program("child", "child_file", cfg.child_file)
    baseline = _read_program("baseline", "final_eval.baseline", fe.baseline, True) if fe.baseline else None
    algorithms = algorithms_of(fe.algorithms)
    if fe.train_seeds < 1:
        fail("final_eval.train_seeds", fe.train_seeds, "It counts the training seeds per algorithm and program.",
             "pass final_eval.train_seeds=3 (or any number >= 1).")
    out_dir = Path(fe.out_dir).expanduser() if fe.out_dir else Path("outputs") / "final_eval" / child.path.stem
    if out_dir.exists() and not out_dir.is_dir():
        fail("final_eval.out_dir", str(out_dir), "It exists and is not a folder.",
             "pass final_eval.out_dir=a folder path (created if missing).")
    settings = task_settings(cfg)
    stored = out_dir / SETTINGS
    if stored.exists():
        old = json.loads(stored.read_text())
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            diff = "; ".join(f"task.{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
            raise ConfigError(
                f"Invalid configuration: final_eval.out_dir={str(out_dir)!r} holds results made with other task "
                f"settings ({diff}). Adding to it would mix two protocols in one table. Fix: pass the same task.* "
                f"overrides as before (they are in {stored}), or choose another final_eval.out_dir.")
    first = int(cfg.task.train_seed)
    return Plan(child, baseline, algorithms, list(range(first, first + int(fe.train_seeds))), out_dir, settings)


# ---------------------------------------------------------------- results file

def load_results(path: Path) -> list:
    records = []
    if path.exists():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:   # a line cut off by a kill: that evaluation runs again
                print(f"warning: {path}:{n} is not JSON; ignored", file=sys.stderr)
    return records


def _key(code_hash: str, algorithm: str, seed: int) -> tuple:
    return code_hash, algorithm, int(seed)


def _failed(record: dict) -> bool:
    return record["status"] not in outcome.WORKING


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- the evaluations

def run(cfg: DictConfig, plan: Plan) -> tuple[list, list]:
    """Evaluate what ``results.jsonl`` does not hold yet. Returns (all records, data failures)."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    (plan.out_dir / SETTINGS).write_text(json.dumps(plan.settings, indent=1, sort_keys=True) + "\n")
    try:
        composed = OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:   # an interpolation that only resolves where it is used (e.g. an unset env var)
        composed = OmegaConf.to_yaml(cfg)
    (plan.out_dir / "config.yaml").write_text(composed)
    results = plan.out_dir / RESULTS
    records = load_results(results)
    done = {_key(r["code_hash"], r["algorithm"], r["train_seed"])
            for r in records if not (cfg.final_eval.retry_failed and _failed(r))}
    jobs, seen = [], set()
    for algorithm in plan.algorithms:
        for seed in plan.seeds:
            for program in plan.programs:   # child and baseline alternate: partial results stay comparable
                key = _key(program.code_hash, algorithm, seed)
                if key not in seen:        # a child identical to the baseline is evaluated once
                    seen.add(key)
                    jobs.append((algorithm, seed, program, key in done))
    pending = [j for j in jobs if not j[3]]
    print(f"final evaluation of {plan.child.path} (code {plan.child.code_hash[:10]})"
          + (f" vs baseline {plan.baseline.path} (code {plan.baseline.code_hash[:10]})" if plan.baseline else "")
          + f"\n  {len(plan.algorithms)} algorithm(s): {', '.join(plan.algorithms)}; training seeds {plan.seeds}"
          + f"\n  {len(jobs)} evaluations: {len(jobs) - len(pending)} skipped (already in {results}), "
          + f"{len(pending)} to run", flush=True)
    limits = SandboxLimits(**OmegaConf.to_container(cfg.sandbox, resolve=True))
    cache_dir = Path(os.path.expanduser(cfg.cache_dir))
    local = instantiate(cfg.evaluator)
    if not isinstance(local, LocalEvaluator):
        raise ConfigError("Invalid configuration: evo.final_eval runs its evaluations on this machine, so "
                          f"evaluator={type(local).__name__} does not apply. Fix: pass evaluator=local "
                          "(evaluator.workers sets how many run at once).")
    workers = local.workers
    slots: queue.Queue = queue.Queue()   # one CPU set per worker: no two children share a pinned core
    for slot in cpu_slots(workers, local.pin_cpus):
        slots.put(slot)
    lock = threading.Lock()
    data_failures = []
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="final eval", unit="eval",
               disable=not cfg.progress, dynamic_ncols=True)

    def evaluate(algorithm, seed, program, task, prepared):
        cpus = slots.get()
        try:
            ev = FilterAndEval(task, prepared, limits, cfg.search.alpha)(program.code, cpus=cpus).as_dict()
        finally:
            slots.put(cpus)
        log_tail = ev.pop("log_tail")
        record = {"algorithm": algorithm, "train_seed": seed, "role": program.role, "file": str(program.path),
                  "code_hash": program.code_hash, **ev, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if ev["status"] not in outcome.WORKING and log_tail:
            record["log_tail"] = log_tail[-1000:]
        with lock:   # appended as each finishes: a killed run loses only the evaluations in flight
            _append(results, record)
            records.append(record)
            bar.update(1)
            tqdm.write(_describe(record))

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="final-eval")
    try:
        prepared, futures = {}, []
        for algorithm, seed, program, _ in pending:
            if any(f[0] == algorithm for f in data_failures):
                with lock:
                    bar.update(1)
                continue
            task = instantiate(cfg.task, algorithm=algorithm, train_seed=seed)
            if (algorithm, seed) not in prepared:
                try:   # the data of an algorithm is generated once into cache_dir (meanwhile earlier jobs run)
                    prepared[(algorithm, seed)] = task.prepare(cache_dir)
                except RuntimeError as exc:
                    why = (str(exc).strip().splitlines() or ["?"])[-1]
                    data_failures.append((algorithm, why))
                    with lock:
                        tqdm.write(f"{algorithm}: data generation failed ({why}); its evaluations are skipped")
                        bar.update(1)
                    continue
            futures.append(pool.submit(evaluate, algorithm, seed, program, task, prepared[(algorithm, seed)]))
        for future in futures:
            future.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)   # evaluations in flight finish and are recorded
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
    return records, data_failures


def _describe(r: dict) -> str:
    head = f"{r['algorithm']} seed {r['train_seed']} {r['role']}: {r['status']}"
    if r.get("test_accuracy") is None:
        return f"{head} ({r.get('reason', '')})"
    return (f"{head}, OOD test {100 * r['test_accuracy']:.2f}%, val {100 * r['val_accuracy']:.2f}%, "
            f"{r['num_params']} params, {r.get('eval_seconds') or 0:.0f} s")


# ---------------------------------------------------------------- tables and plot

@dataclass
class Stat:
    n: int = 0                    # seeds that trained (test score recorded)
    mean: Optional[float] = None  # OOD test score, %
    sd: Optional[float] = None    # sample standard deviation over seeds (n - 1); None for one seed
    params: Optional[int] = None
    failed: int = 0               # evaluations recorded with a failure status
    statuses: dict = field(default_factory=dict)


def _stat(records: list) -> Stat:
    scores = [100.0 * r["test_accuracy"] for r in records if r.get("test_accuracy") is not None]
    params = Counter(r["num_params"] for r in records if r.get("num_params") is not None)
    return Stat(n=len(scores), mean=statistics.fmean(scores) if scores else None,
                sd=statistics.stdev(scores) if len(scores) > 1 else None,
                params=params.most_common(1)[0][0] if params else None,
                failed=sum(1 for r in records if r.get("test_accuracy") is None),
                statuses=dict(Counter(r["status"] for r in records)))


def summarise(records: list, plan: Plan) -> list:
    """One row per algorithm with a result of the child or the baseline, in CLRS-30 order."""
    latest = {}
    for r in records:   # with retry_failed a later record of the same evaluation replaces the earlier one
        latest[_key(r["code_hash"], r["algorithm"], r["train_seed"])] = r
    rows = []
    for algorithm in CLRS30:
        of = {p.role: [r for k, r in latest.items() if k[0] == p.code_hash and k[1] == algorithm]
              for p in plan.programs}
        if not any(of.values()):
            continue
        ours, base = _stat(of["child"]), _stat(of.get("baseline", []))
        rows.append({"algorithm": algorithm, "ours": ours, "baseline": base, "paper": TABLE3[algorithm]})
    return rows


def _r(x, nd=2):
    return "" if x is None else round(x, nd)


def write_csv(rows: list, path: Path) -> None:
    cols = ["algorithm", "ours_mean", "ours_sd", "ours_n", "ours_failed", "ours_params",
            "baseline_mean", "baseline_sd", "baseline_n", "baseline_failed", "baseline_params", "ours_minus_baseline",
            "paper_best_model", "paper_new_mean", "paper_new_sd", "paper_own_base_mean", "paper_own_base_sd",
            "ibarz_mean", "ibarz_sd", "paper_size_best", "paper_size_base"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for row in rows:
            o, b, p = row["ours"], row["baseline"], row["paper"]
            delta = o.mean - b.mean if o.mean is not None and b.mean is not None else None
            w.writerow([row["algorithm"], _r(o.mean, 4), _r(o.sd, 4), o.n, o.failed, _r(o.params),
                        _r(b.mean, 4), _r(b.sd, 4), b.n, b.failed, _r(b.params), _r(delta, 4),
                        p.best_model, p.new_mean, p.new_sd, p.own_base_mean, p.own_base_sd, p.ibarz_mean, p.ibarz_sd,
                        p.size_best, p.size_base])


def _pm(s: Stat, bold: bool = False) -> str:
    if s.mean is None:
        return "failed" if s.failed else "–"
    text = f"{s.mean:.2f}" + (f" ± {s.sd:.2f}" if s.sd is not None else "") + f" ({s.n})"
    text = f"**{text}**" if bold else text
    return text + (f" [{s.failed} failed]" if s.failed else "")


def summary_line(rows: list, has_baseline: bool) -> str:
    both = [r for r in rows if r["ours"].mean is not None and r["baseline"].mean is not None]
    ours_only = [r for r in rows if r["ours"].mean is not None]
    if has_baseline and both:
        wins = sum(1 for r in both if r["ours"].mean > r["baseline"].mean)
        names = [r["algorithm"] for r in both]
        mean = lambda rs, side: statistics.fmean(r[side].mean for r in rs)   # noqa: E731
        paper = lambda f: statistics.fmean(getattr(r["paper"], f) for r in both)   # noqa: E731
        text = (f"Ours beats our baseline (by mean) on {wins} of {len(both)} task(s). Mean over these "
                f"{len(both)} task(s): ours {mean(both, 'ours'):.2f}, our baseline {mean(both, 'baseline'):.2f}; "
                f"paper on the same tasks: new {paper('new_mean'):.2f}, own baseline {paper('own_base_mean'):.2f}, "
                f"Ibarz {paper('ibarz_mean'):.2f}")
        if len(names) == len(CLRS30):
            text += f" (Ibarz et al.'s published 30-task average: {IBARZ_AVERAGE:.2f})"
        return text + "."
    if ours_only:
        return (f"Mean over {len(ours_only)} task(s): ours {statistics.fmean(r['ours'].mean for r in ours_only):.2f}"
                f"; Ibarz on the same tasks {statistics.fmean(r['paper'].ibarz_mean for r in ours_only):.2f}"
                + ("" if has_baseline else " (no baseline: final_eval.baseline=null)") + ".")
    return "No program trained on any task: see the statuses in results.jsonl."


def write_markdown(rows: list, plan: Plan, path: Path) -> str:
    s = plan.settings
    base_name = plan.baseline.path.stem if plan.baseline else "none"
    lines = [f"# Final evaluation: {plan.child.path.name} vs {base_name}", "",
             f"Child: `{plan.child.path}` (code {plan.child.code_hash[:10]}); baseline: "
             + (f"`{plan.baseline.path}` (code {plan.baseline.code_hash[:10]})" if plan.baseline else "none") + ".",
             f"Out-of-distribution test score (dm-clrs score, %): trained on sizes {s.get('train_lengths')} for "
             f"{s.get('train_steps')} steps, tested on {s.get('test_samples')} graphs of size {s.get('test_length')}; "
             "mean ± sd (sample sd) over training seeds, (n) = seeds that trained. Paper: Table 3 of Chen, Dohan & So "
             "(NeurIPS 2023), OOD accuracy %, best new model / their own baseline / Ibarz et al. (2022).", "",
             f"| algorithm | ours | baseline ({base_name}) | ours − baseline | params ours | params baseline "
             "| paper: best new (model) | paper: own baseline | Ibarz et al. |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        o, b, p = row["ours"], row["baseline"], row["paper"]
        delta = f"{o.mean - b.mean:+.2f}" if o.mean is not None and b.mean is not None else "–"
        wins = delta != "–" and o.mean > b.mean
        lines.append(f"| {row['algorithm']} | {_pm(o, wins)} | {_pm(b)} | {delta} | {o.params or '–'} "
                     f"| {b.params or '–'} | {p.new_mean:.2f} ± {p.new_sd:.2f} ({p.best_model}) "
                     f"| {p.own_base_mean:.2f} ± {p.own_base_sd:.2f} | {p.ibarz_mean:.2f} ± {p.ibarz_sd:.2f} |")
    summary = summary_line(rows, plan.baseline is not None)
    lines += ["", f"**Summary.** {summary}"]
    failures = Counter()
    for row in rows:
        for side in ("ours", "baseline"):
            for status, count in row[side].statuses.items():
                if status not in ("ok", "filtered"):
                    failures[f"{side} {status}"] += count
    if failures:
        lines += ["", "Failed evaluations (no score; reasons in results.jsonl): "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(failures.items())) + "."]
    path.write_text("\n".join(lines) + "\n")
    return summary


def write_plot(rows: list, plan: Plan, path: Path) -> None:
    # matplotlib takes ~1 s to import: only when plotting
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # after use("Agg"): plots are files, no display
    names = [r["algorithm"] for r in rows]
    x = np.arange(len(names))
    series = [(f"ours ({plan.child.path.stem})", [r["ours"] for r in rows], "tab:red")]
    if plan.baseline:
        series.append((f"our baseline ({plan.baseline.path.stem})", [r["baseline"] for r in rows], "tab:blue"))
    k = len(series) + 1                      # bars per algorithm, centred on its tick
    width = 0.8 / k
    offset = lambda i: (i - (k - 1) / 2) * width   # noqa: E731
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2.5), 4.5))
    for i, (label, stats, color) in enumerate(series):
        means = [s.mean if s.mean is not None else math.nan for s in stats]
        sds = [s.sd if s.sd is not None else math.nan for s in stats]   # one seed: no error bar
        ax.bar(x + offset(i), means, width, yerr=sds, capsize=2, label=label, color=color)
    ax.bar(x + offset(k - 1), [r["paper"].ibarz_mean for r in rows], width,
           yerr=[r["paper"].ibarz_sd for r in rows], capsize=2, label="Ibarz et al. 2022 (published)", color="0.6")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 119)                      # room above 100 for the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(f"OOD test score (%), size {plan.settings.get('test_length')}")
    ax.set_title("CLRS-30 out-of-distribution score (error bars: sd over seeds)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=k, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(records: list, plan: Plan) -> tuple[dict, str]:
    rows = summarise(records, plan)
    paths = {k: plan.out_dir / f"results.{k}" for k in ("md", "csv", "png")}
    write_csv(rows, paths["csv"])
    summary = write_markdown(rows, plan, paths["md"])
    write_plot(rows, plan, paths["png"])
    return paths, summary


def final_eval(cfg: DictConfig) -> int:
    plan = make_plan(cfg)
    records, data_failures = run(cfg, plan)
    paths, summary = write_outputs(records, plan)
    print(summary)
    print(f"results: {paths['md']}\n         {paths['csv']}\n         {paths['png']}\n"
          f"         {plan.out_dir / RESULTS} ({len(records)} evaluations)", flush=True)
    if data_failures:
        print("data generation failed for: " + "; ".join(f"{a} ({why})" for a, why in data_failures)
              + ". Their evaluations were not recorded: run the same command again to retry.", file=sys.stderr)
        return 1
    return 0


_HELP = (   # goes through Hydra's override grammar: no double quotes inside
    "evo.final_eval: the final CLRS-30 evaluation of one program and of our v1 baseline (out of distribution,\n"
    "several training seeds), next to the paper's Table 3. Details: python -m pydoc evo.final_eval\n\n"
    "  python -m evo.final_eval child_file=PATH                       all 30 algorithms x 3 seeds\n"
    "  python -m evo.final_eval child_file=PATH final_eval.algorithms=[bfs,dfs] final_eval.train_seeds=5\n"
    "  options: final_eval.baseline=seeds/clrs/v1.py final_eval.out_dir=DIR final_eval.retry_failed=true task.KEY=VALUE\n")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    sys.exit(exit_on_config_error(lambda: final_eval(cfg)))


def cli() -> None:
    """``python -m evo.final_eval``: Hydra's command line with the final evaluation's fixed arguments."""
    # Results go to final_eval.out_dir: Hydra's own files stay out of outputs/ (start_one_off).
    extra = ["hydra.help.app_name=evo.final_eval", f'hydra.help.header="{_HELP}"']
    if not any(a.startswith(("task=", "+task=", "~task")) for a in sys.argv[1:]):
        extra.insert(0, "task=clrs")   # the final evaluation is a CLRS protocol
    start_one_off(main, *extra)


if __name__ == "__main__":
    cli()

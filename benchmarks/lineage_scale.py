"""lineage.html at paper size: a synthetic 1,600-child archive (the paper's 10 rounds x 10 prompts x 16
samples, 2 parents per prompt, plus the 4 seeds) built from REAL evaluated programs, written as a page
and opened in headless Chromium; the page of a real tiny search is measured in the same run as the
reference.

    python benchmarks/lineage_scale.py --reference RUN_FOLDER   # a finished run, e.g. a tiny search's

No LM: each synthetic child copies a row of benchmarks/data/mnist1d_children.jsonl.gz (553 programs
that FILTERANDEVAL judged in real MNIST-1D searches: code, status, parameters, accuracies, fitness)
under a new id; its parents are 2 of the round's population, the 10 fittest scored children so far
(GETTOP), as in the search. Each copy gets one added line, so no child is a duplicate (every one has
its own code and diffs: the heaviest case). Its prompt is its parents' code followed by the target line, about the
size of a real one. Written to benchmarks/results/lineage_scale.json:

* the page's size, and the seconds evo.lineage takes to write it (difflib against every parent);
* in Chromium (median of --repeats page loads, each in a fresh tab): load to ready (decompress,
  first draw of the tree, Pareto and round charts), and the page's responses: a click's
  selection (detail panel with code and diffs, tree and Pareto highlight), a search, hiding the children
  that did not train; each timed in the page from the call to the next painted frame.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo.analysis import lineage  # noqa: E402

from evo import outcome
from evo.archive import Archive  # noqa: E402
from evo.archive.runs import open_run, read_dataset  # noqa: E402
from evo.analysis.lineage import browser  # noqa: E402
from evo.search.program import code_hash  # noqa: E402

DATA = REPO / "benchmarks" / "data" / "mnist1d_children.jsonl.gz"
OUT = REPO / "benchmarks" / "results" / "lineage_scale.json"


def build_archive(path: Path, rounds: int, prompts: int, samples: int, parents_per_prompt: int, population: int,
                  seed: int) -> Archive:
    """The paper-shaped archive, from real programs under new ids."""
    rng = random.Random(seed)
    header, rows = read_dataset(DATA)
    seeds = [r for r in rows if r["round"] == -1]   # the 4 human designs, once each (a dataset holds a hash once)
    children = [r for r in rows if r["round"] >= 0]
    a = Archive(path)
    a.set_meta("config", json.dumps({"task": {"name": header["task"]}}))
    result_keys = ("status", "reason", "num_params", "val_accuracy", "test_accuracy", "fitness")
    scored: list[tuple[float, int]] = []
    codes: dict[int, str] = {}
    names = {code_hash(f.read_text()): f.stem for f in (REPO / "seeds" / "mnist1d").glob("*.py")}
    for k, r in enumerate(seeds):
        cid = a.insert_child(round=-1, seed_name=names.get(r["code_hash"], f"seed{k}"), code=r["code"], code_hash=code_hash(r["code"]))
        a.record_result(cid, **{k: r[k] for k in result_keys}, eval_seconds=10.0, train_seconds=8.0)
        codes[cid] = r["code"]
        if r["fitness"] is not None:   # the seeds that trained are round 0's parents
            scored.append((r["fitness"], cid))
    for t in range(rounds):
        pop = [cid for _, cid in sorted(scored, reverse=True)[:population]]
        a.start_round(t, pop, "paper_topk")
        for j in range(prompts):
            parents = rng.sample(pop, min(parents_per_prompt, len(pop)))
            text = "\n\n".join(codes[p] for p in parents) + '\n\n"""Metrics: {"num_params": 5000, "val_accuracy": 0.8}"""\n'
            pid = a.insert_prompt(t, j, parents, {"num_params": 5000, "val_accuracy": 0.8}, text)
            for i in range(samples):
                r = rng.choice(children)
                # One added line makes each copy a program of its own (no duplicates: every child has its code,
                # its diffs and its place in the Pareto view, the heaviest case for the page).
                code = f"{r['code'].rstrip()}\n_synthetic_copy = {t * prompts * samples + j * samples + i}\n"
                cid = a.insert_child(round=t, code=code, code_hash=code_hash(code), prompt_id=pid, sample_index=i,
                                     parents=parents, prompt=text, temperature=rng.choice([0.2, 0.6, 0.8, 1.0]),
                                     lm_name="synthetic", tokens_out=300, lm_seconds=1.0)
                codes[cid] = code
                if a.get(cid).status == outcome.PENDING:
                    a.record_result(cid, **{k: r[k] for k in result_keys}, eval_seconds=10.0,
                                    train_seconds=8.0 if r["status"] in outcome.WORKING else None)
                    if r["status"] == outcome.OK and r["fitness"] is not None:
                        scored.append((r["fitness"], cid))
            a.complete_prompt(pid)
        a.finish_round(t)
    return a


# Timed in the page: from the call to the next painted frame (two animation frames after the work).
TIMED = """
const [what, arg, done] = arguments;
const t0 = performance.now();
if (what === 'select') LINEAGE.select(arg, true);
else if (what === 'search') LINEAGE.search(arg);
else if (what === 'hide') { const b = document.getElementById('show-failed'); b.click(); }
requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
"""


def measure(driver, page: Path, repeats: int, seed: int) -> dict:
    loads, inpage, select, search, hide = [], [], [], [], []
    rng = random.Random(seed)
    for _ in range(repeats):
        driver.get("about:blank")
        t0 = time.perf_counter()
        driver.get(page.resolve().as_uri())
        browser.wait_ready(driver, timeout=300)
        loads.append(time.perf_counter() - t0)
        inpage.append(int(driver.execute_script("return document.body.dataset.renderMs")) / 1000)
        ids = driver.execute_script("return LINEAGE.data.nodes.filter(n => n.parents.length).map(n => n.id)")
        for cid in rng.sample(ids, min(5, len(ids))):
            select.append(driver.execute_async_script(TIMED, "select", cid) / 1000)
        search.append(driver.execute_async_script(TIMED, "search", "status:ok") / 1000)
        driver.execute_async_script(TIMED, "search", "")
        hide.append(driver.execute_async_script(TIMED, "hide", None) / 1000)
        driver.execute_async_script(TIMED, "hide", None)   # shown again
    counts = driver.execute_script("return [LINEAGE.cy.nodes().length, LINEAGE.cy.edges().length]")
    med = statistics.median
    return {"nodes": counts[0], "edges": counts[1], "load_to_ready_s": med(loads), "load_to_ready_s_all": loads,
            "in_page_render_s": med(inpage), "select_s": med(select), "select_s_max": max(select),
            "search_s": med(search), "hide_failed_s": med(hide)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="a finished run folder (its page is the reference)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--prompts", type=int, default=10)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if browser.missing():
        sys.exit(f"error: {browser.missing()}")
    if not (args.reference / "archive.sqlite").exists():
        sys.exit(f"error: --reference {args.reference} has no archive.sqlite")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = build_archive(tmp / "archive.sqlite", args.rounds, args.prompts, args.samples, 2, 10, args.seed)
        t0 = time.perf_counter()
        (tmp / "paper_size").mkdir()   # the page's title is its folder's name
        big = lineage.write_lineage(archive, tmp / "paper_size")
        write_s = time.perf_counter() - t0
        raw_json = len(json.dumps(lineage.lineage_data(archive), separators=(",", ":")).encode())
        n_children = archive.query("SELECT COUNT(*) AS n FROM children")[0]["n"]
        statuses = {r["status"]: r["n"] for r in archive.query("SELECT status, COUNT(*) AS n FROM children GROUP BY status")}
        archive.close()
        ref_archive = open_run(args.reference)
        t0 = time.perf_counter()
        small = lineage.write_lineage(ref_archive, tmp, tmp / "reference.html")
        ref_write_s = time.perf_counter() - t0
        ref_archive.close()
        driver = browser.chromium(width=1500, height=950)
        try:
            version = driver.capabilities.get("browserVersion")
            ref = measure(driver, small, args.repeats, args.seed)
            paper = measure(driver, big, args.repeats, args.seed)
            driver.get(big.resolve().as_uri())
            browser.wait_ready(driver, timeout=300)
            driver.execute_script("LINEAGE.select(LINEAGE.data.nodes[LINEAGE.data.nodes.length - 1].id, false)")
            time.sleep(0.5)
            driver.save_screenshot(str(args.out.with_name("lineage_scale.png")))
        finally:
            driver.quit()
        result = {
            "what": "lineage.html of a paper-size synthetic archive (real programs, new ids) vs a real tiny run's",
            "conditions": f"headless Chromium {version}, {os.cpu_count()} CPUs shared with other jobs (timings under "
                          f"load), {platform.python_version()}; medians of {args.repeats} loads; seed {args.seed}",
            "paper_size": {"children": n_children, "statuses": statuses, "page_bytes": big.stat().st_size,
                           "data_json_bytes_uncompressed": raw_json,
                           "vendored_library_bytes": sum((lineage.VENDOR / n).stat().st_size for n in lineage.TREE_LIBS),
                           "write_s": write_s, **paper},
            "reference": {"run": str(args.reference), "page_bytes": small.stat().st_size, "write_s": ref_write_s, **ref},
            "ratio_load_paper_over_reference": paper["load_to_ready_s"] / ref["load_to_ready_s"],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

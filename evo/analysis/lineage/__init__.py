"""``lineage.html``: the evolution tree of a run as one self-contained page (no CDN, no server).

    python -m evo.report RUN_FOLDER        # writes summary.md, pareto.png and lineage.html
    python -m evo.lineage RUN_FOLDER       # lineage.html only (``--out FILE`` to put it elsewhere)

The search writes it into the run folder after every round (evo.run) and with the report at the end.
Everything comes from the archive, opened read-only by the command line: every child's code, its
parents, prompt, repairs, status and metrics. The page shows

* the genealogy (drawn by cytoscape.js; seeds on top, one layer per round, an edge from each parent
  to each child it was prompted with), coloured by fitness or status, sized by parameters. The layout
  is computed here by igraph's Sugiyama layered layout (C, 0.3 s for 1,600 children): in the browser,
  dagre (cytoscape-dagre 4.0.1, tried first) took 32 s to lay out a paper-size run;
* a click on a node: its code, the diff against each parent (Python's difflib, computed here), its
  metrics, status and reason, repairs, the prompt's target (the constraints) and the prompt itself;
* the Pareto view (size vs test error, plotly) linked to the tree, the per-round summary, a search box.

The JS libraries are vendored under ``evo/analysis/lineage/vendor/`` (MIT licences there) and inlined; the run's
data is gzip-compressed JSON, base64 in the page, decompressed by the browser (DecompressionStream),
so a 1,600-child run stays a few MB (see benchmarks/lineage_scale.py).
"""

from __future__ import annotations

import argparse
import base64
import difflib
import gzip
import html
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from evo import outcome
from evo.analysis.metrics import pareto_front, round_stats, top_children
from evo.archive.runs import open_run

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor"
FILENAME = "lineage.html"
FORMAT = "evo-lineage/1"

# What the tree and the Pareto view call a child's two scores, per task (the archive's columns are
# val_accuracy / test_accuracy for both: CLRS stores dm-clrs's validation and out-of-distribution test score).
LABELS = {
    "mnist1d": {"val": "val accuracy", "test": "test accuracy", "error": "test error"},
    "clrs": {"val": "val score", "test": "OOD test score", "error": "1 - OOD test score"},
}
NODE_COLUMNS = ("id", "round", "seed_name", "status", "reason", "parents", "prompt_id", "sample_index", "attempt",
                "temperature", "repairs", "stop_reason", "duplicate_of", "num_params", "val_accuracy",
                "test_accuracy", "fitness", "lm_name", "tokens_in", "tokens_out", "lm_seconds", "soft_prompt_round",
                "eval_seconds", "train_seconds", "device", "predicted", "surrogate", "isolation", "code")


def task_name(archive) -> Optional[str]:
    """The run's task (``mnist1d`` | ``clrs``) from its stored config, None for an archive without one."""
    stored = archive.get_meta("config")
    if not stored:
        return None
    task = json.loads(stored).get("task") or {}
    return task.get("name")


def parent_ids(raw: Optional[str]) -> list[int]:
    """A child's parents, each once, in prompt order (a prompt may show the same parent twice)."""
    return list(dict.fromkeys(json.loads(raw))) if raw else []


def edges(archive) -> list[tuple[int, int]]:
    """(parent id, child id) pairs of the tree: one per parent a child was prompted with, parents
    that are in the archive only."""
    rows = archive.rows(("id", "parents"))
    known = {r["id"] for r in rows}
    return [(p, r["id"]) for r in rows for p in parent_ids(r["parents"]) if p in known]


def diff(parent_code: str, child_code: str, parent_id: int, child_id: int) -> str:
    return "\n".join(difflib.unified_diff(parent_code.splitlines(), child_code.splitlines(),
                                          fromfile=f"child {parent_id}", tofile=f"child {child_id}", lineterm=""))


NODE_SEP = (64, 34)  # px between neighbours of a layer, up to 40 / more per layer (node sizes: 10 to 44 px)
RANK_SEP = 110       # px between layers, at least; wide trees get more (see tree_layout)


def tree_layout(nodes: list[dict]) -> dict[int, tuple[float, float]]:
    """Node positions (px): one layer per round (seeds on top), the order within a layer from igraph's
    Sugiyama layout (crossing minimisation over the parent edges), then each layer evenly spaced and
    centred: Sugiyama also places a dummy node wherever an edge crosses a layer, and a parent used again
    many rounds later would stretch the layers to several times their children's count."""
    import igraph   # ~1 s to import: only when a tree is laid out (evo.tracking imports this module)
    if not nodes:
        return {}
    layer_of = {r: k for k, r in enumerate(sorted({n["round"] for n in nodes}))}
    index = {n["id"]: i for i, n in enumerate(nodes)}
    graph = igraph.Graph(n=len(nodes), edges=[(index[p], index[n["id"]]) for n in nodes for p in n["parents"]],
                         directed=True)
    coords = graph.layout_sugiyama(layers=[layer_of[n["round"]] for n in nodes], maxiter=100).coords[:len(nodes)]
    layers: dict[int, list] = {}
    for n, (x, _y) in zip(nodes, coords):
        layers.setdefault(layer_of[n["round"]], []).append((x, n["id"]))
    widest = max(len(members) for members in layers.values())
    node_sep = NODE_SEP[0] if widest <= 40 else NODE_SEP[1]
    # A wide tree gets taller layers too, so it fits a landscape panel at a readable zoom.
    rank_sep = max(RANK_SEP, min(4 * RANK_SEP, widest * node_sep / (1.6 * len(layers))))
    positions = {}
    for k, members in layers.items():
        members.sort()
        offset = (widest - len(members)) / 2
        for i, (_x, cid) in enumerate(members):
            positions[cid] = (round((offset + i) * node_sep, 1), round(k * rank_sep, 1))
    return positions


def lineage_data(archive, title: str = "") -> dict:
    """Everything the page shows, as plain JSON."""
    rows = archive.rows(NODE_COLUMNS)
    code = {r["id"]: r["code"] for r in rows}
    nodes = []
    for r in rows:
        node = {k: r[k] for k in NODE_COLUMNS}
        node["parents"] = [p for p in parent_ids(r["parents"]) if p in code]
        node["repairs"] = json.loads(r["repairs"] or "[]")
        node["diffs"] = [[p, diff(code[p], r["code"], p, r["id"])] for p in node["parents"]]
        nodes.append(node)
    positions = tree_layout(nodes)
    for node in nodes:
        node["x"], node["y"] = positions[node["id"]]
    prompts = {str(p["id"]): {"round": p["round"], "index": p["prompt_index"], "parents": json.loads(p["parents"]),
                              "target": json.loads(p["target"]), "text": p["prompt"]}
               for p in archive.prompts()}
    task = task_name(archive)
    return {"format": FORMAT, "title": title, "task": task, "labels": LABELS.get(task, LABELS["mnist1d"]),
            "statuses": {"working": list(outcome.WORKING), "failed": list(outcome.FAILED)},
            "nodes": nodes, "prompts": prompts, "rounds": round_stats(archive),
            "tuning": [{k: t[k] for k in ("round", "texts", "seconds", "adapter")} for t in archive.tuning()]}


# The W&B ``lineage`` table (evo.tracking): one row per child.
TABLE_COLUMNS = ("child_id", "parent_ids", "round", "seed_name", "status", "reason", "num_params", "val_accuracy",
                 "test_accuracy", "fitness", "temperature", "soft_prompt_round", "code", "diff_vs_parents")


def table_rows(archive) -> list[list]:
    """The lineage as rows of :data:`TABLE_COLUMNS`; ``parent_ids`` a list, the diffs one text."""
    data = lineage_data(archive)
    return [[n["id"], n["parents"], n["round"], n["seed_name"], n["status"], n["reason"], n["num_params"],
             n["val_accuracy"], n["test_accuracy"], n["fitness"], n["temperature"], n["soft_prompt_round"], n["code"],
             "\n\n".join(d for _, d in n["diffs"])] for n in data["nodes"]]


def _inline_script(text: str) -> str:
    # A script's text ends at the first "</script": escape it wherever the bundle has one. Source-map
    # comments go: there is no map file beside the page for devtools to ask for.
    text = re.sub(r"^//# sourceMappingURL=.*$", "", text, flags=re.M)
    return "<script>" + text.replace("</script", "<\\/script") + "</script>"


def encode(data: dict) -> str:
    """gzip (no timestamp: the same archive gives the same page) + base64 of the JSON."""
    raw = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


TREE_LIBS = ("cytoscape.min.js", "plotly-basic.min.js")


def read_page(path: Path) -> dict:
    """The data a written page carries (the inverse of :func:`encode`), for tests and scripts."""
    m = re.search(r'<script type="application/octet-stream" id="lineage-data">\s*([A-Za-z0-9+/=]+)\s*</script>',
                  Path(path).read_text())
    if not m:
        raise ValueError(f"{path} is not a page written by evo.lineage")
    return json.loads(gzip.decompress(base64.b64decode(m.group(1))))


SECTION = re.compile(r"<!-- section: (\w+) -->\n?")


def page_template(name: str) -> str:
    """The page ``name`` (page.html, sweep.html) before its data: its sections (kind: the title's first word, csp:
    what it adds to the shared security policy, style, body) in the slots of shell.html, the frame both share."""
    pieces = SECTION.split((HERE / name).read_text())   # [its comment, name, text, name, text, ...]
    sections = {"csp": "", **dict(zip(pieces[1::2], pieces[2::2]))}
    sections["kind"], sections["csp"] = sections["kind"].strip(), sections["csp"].strip()
    return re.sub(r"<!--(KIND|CSP|STYLE|BODY)-->", lambda m: sections[m.group(1).lower()],
                  (HERE / "shell.html").read_text())


def render(data: dict, template: str = "page.html", app: str = "page.js", libs: Sequence[str] = TREE_LIBS) -> str:
    parts = {"VENDOR": "\n".join(_inline_script((VENDOR / name).read_text()) for name in libs),
             "TITLE": html.escape(data.get("title") or "evo"), "DATA": encode(data),
             "APP": _inline_script((HERE / app).read_text())}
    # One pass over the template, so text inside an inserted part is never taken for a placeholder.
    return re.sub(r"<!--(VENDOR|TITLE|DATA|APP)-->", lambda m: parts[m.group(1)], page_template(template))


def write_lineage(archive, run_dir: Path, out: Optional[Path] = None) -> Path:
    """Write ``run_dir/lineage.html`` (or ``out``) atomically: a page open in a browser while the search
    rewrites it after a round is never seen half-written."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / FILENAME
    text = render(lineage_data(archive, title=run_dir.resolve().name))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return out


def write_lineage_safely(archive, run_dir: Path) -> Optional[Path]:
    """For the search's per-round hook: a page that cannot be written is logged, the search goes on."""
    try:
        return write_lineage(archive, run_dir)
    except Exception as exc:
        log.warning("lineage.html not written (%s: %s); the search goes on", type(exc).__name__, exc)
        return None


# ------------------------------------------------------------------------------------ sweeps

def sweep_data(variants: dict, curves: dict, top: int, out_dir: Path) -> dict:
    """evo.compare's variants as the sweep page's data: per variant its top children pooled over seeds
    (the Pareto plot's points), its mean best-so-far curve, and each run with a link to its lineage.html."""
    result = []
    for name, runs in variants.items():
        best = top_children(runs, top)
        curve = curves.get(name)
        result.append({
            "name": name,
            "points": [{"num_params": c["num_params"], "error": 1 - c["test_accuracy"], "fitness": c["fitness"],
                        "id": c.get("id")} for c in best],
            "front": [list(p) for p in pareto_front([(c["num_params"], 1 - c["test_accuracy"]) for c in best])],
            "curve": None if curve is None else {
                "x": [int(x) for x in curve["x"]], "mean": [_finite(v) for v in curve["mean"]],
                "lo": None if curve["lo"] is None else [_finite(v) for v in curve["lo"]],
                "hi": None if curve["hi"] is None else [_finite(v) for v in curve["hi"]], "runs": curve["runs"]},
            "runs": [{"folder": str(r.folder), "seed": r.seed, "children": len(r.children),
                      "scored": len(r.scored), "best_fitness": r.best_fitness,
                      "lineage": Path(os.path.relpath(Path(r.folder) / FILENAME, out_dir)).as_posix()}
                     for r in runs]})
    task = variants and next(iter(variants.values()))[0].task
    return {"format": FORMAT + "-sweep", "task": task, "labels": LABELS.get(task, LABELS["mnist1d"]),
            "top": top, "variants": result}


def _finite(v) -> Optional[float]:
    v = float(v)
    return v if v == v and abs(v) != float("inf") else None


def write_sweep_page(variants: dict, curves: dict, top: int, out: Path) -> Path:
    """``python -m evo.compare ... --html``: ``out`` (sweep.html) with the variants' fronts and best-so-far
    curves side by side. A run folder without a lineage.html gets one (its archive read-only)."""
    out = Path(out)
    for runs in variants.values():
        for r in runs:
            if not (Path(r.folder) / FILENAME).exists():
                archive = open_run(r.folder)
                try:
                    write_lineage(archive, Path(r.folder))
                except OSError as exc:   # a read-only copy of a run: the link says where it would be
                    log.warning("could not write %s (%s)", Path(r.folder) / FILENAME, exc)
                finally:
                    archive.close()
    data = sweep_data(variants, curves, top, out.parent)
    data["title"] = out.parent.resolve().name
    out.write_text(render(data, template="sweep.html", app="sweep.js", libs=("plotly-basic.min.js",)))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evo.lineage", description="Write a run's lineage.html.")
    p.add_argument("run", type=Path, help="a run folder of `python -m evo.run` (holding archive.sqlite)")
    p.add_argument("--out", type=Path, help=f"where to write the page (default: RUN/{FILENAME})")
    args = p.parse_args(argv)
    if not (args.run / "archive.sqlite").exists():
        print(f"error: {args.run} has no archive.sqlite: pass a run folder of `python -m evo.run`", file=sys.stderr)
        return 2
    archive = open_run(args.run)
    try:
        path = write_lineage(archive, args.run, args.out)
    finally:
        archive.close()
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0

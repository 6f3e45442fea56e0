"""The package layout: no import cycle in evo/, dependencies one way (the search never imports the analysis, the
archive nothing of the search), and a run folder made before evo/ became packages (its archive stores the old
module paths) still resumes and still opens in evo.compare and evo.report."""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tokenize

import pytest

from runs import REPO, search_cmd

# Made by the code of commit 6f02ef3 (the last flat layout), see tests/data/old_layout_run/README.md.
OLD_RUN = REPO / "tests" / "data" / "old_layout_run"
OLD_OVERRIDES = ("search.rounds=1", "search.alpha=1.0")   # on top of runs.TINY, as it was made


EVO = REPO / "evo"


def import_graph() -> dict[str, set[str]]:
    """evo's modules and the evo modules each imports, at module level or inside a function (a function-local
    import still runs in a circle when called). From the source's AST, so nothing is imported here."""
    modules = {}
    for path in EVO.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def module_of(name: str):   # evo.search.loop.EvoPrompting -> evo.search.loop
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(module_of(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets.update(module_of(f"{node.module}.{a.name}") for a in node.names)
        # a package's own __init__ runs first anyway: importing evo.search.loop is no edge to evo.search
        graph[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]):
    """One import cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_evo_has_no_import_cycle_and_its_dependencies_run_one_way():
    graph = import_graph()
    assert {"evo.search.loop", "evo.config", "evo.archive.runs", "evo.analysis.compare"} <= set(graph)
    assert "evo.archive.runs" in graph["evo.analysis.compare"]   # the graph does see imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the search never imports the analysis; the base packages import neither the search nor the analysis
    rules = {"evo.search": ("evo.analysis",),
             **{low: ("evo.search", "evo.analysis", "evo.config", "evo.run")
                for low in ("evo.archive", "evo.sandbox", "evo.lm", "evo.outcome", "evo.errors")}}
    wrong = {m: sorted(t for t in targets if t.startswith(banned))
             for m, targets in graph.items() for low, banned in rules.items() if m.startswith(low)}
    assert {m: ts for m, ts in wrong.items() if ts} == {}


# Function-local imports in evo/ must say why they are not at module level (an optional or heavy dependency, a cycle,
# the sandbox's import order...): a comment on the import's line, or on the line above it, or above the block of
# imports it belongs to. These files had imports without one when the check came (their owners were editing them);
# their counts may only go down: lower or delete an entry once its imports say why.
UNEXPLAINED_LOCAL_IMPORTS = {
    "evo/lm/hf.py": 25,
    "evo/tasks/clrs/checks.py": 2, "evo/tasks/clrs/data.py": 6, "evo/tasks/clrs/exporting.py": 11,
    "evo/tasks/clrs/harness.py": 8, "evo/tasks/clrs/task.py": 4, "evo/tasks/clrs/train.py": 3,
    "evo/tasks/clrs/trusted.py": 4,
}


def _says_why(comment: str) -> bool:
    """A comment with words in it, not only a linter's ``noqa: F401``."""
    text = re.sub(r"noqa(:\s*[A-Z]+[0-9]+(,\s*[A-Z]+[0-9]+)*)?", "", comment.lstrip("#")).strip(" -")
    return bool(re.search(r"[A-Za-z]{2}", text))


def unexplained_local_imports(text: str) -> list[int]:
    """The lines of ``text``'s function-local imports that carry no reason: no comment on their first line, none
    on the line above (blank lines skipped), and not right below another local import that has one (a block)."""
    lines = text.splitlines()
    comments = {t.start[0]: t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
                if t.type == tokenize.COMMENT}
    imports = {}   # first line -> last line
    for func in ast.walk(ast.parse(text)):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    imports[node.lineno] = node.end_lineno
    starts_by_end = {end: start for start, end in imports.items()}
    explained, missing = set(), []
    for start in sorted(imports):
        ok = _says_why(comments.get(start, ""))
        above = start - 1
        while not ok and above > 0 and not lines[above - 1].strip():
            above -= 1
        if not ok and above > 0:
            line = lines[above - 1].strip()
            ok = (line.startswith("#") and _says_why(line)) or starts_by_end.get(above) in explained
        (explained.add(start) if ok else missing.append(start))
    return missing


def test_the_reason_check_tells_explained_from_unexplained_imports():
    code = ("def f():\n"
            "    import os\n"                                   # 2: no reason
            "    x = 1\n"
            "    import jax  # noqa: F401\n"                    # 4: a linter's code is no reason
            "    import torch   # optional: lm=openai runs without it\n"
            "    # heavy: only when plotting\n"
            "    import matplotlib\n"
            "    import matplotlib.pyplot as plt\n"             # the block under a reason
            "    x = 2\n"
            "    import json\n"                                 # 10: after other code, no reason
            "    return x\n"
            "import sys\n")                                     # module level: not counted
    assert unexplained_local_imports(code) == [2, 4, 10]


def test_every_function_local_import_in_evo_says_why():
    found = {str(p.relative_to(REPO)): unexplained_local_imports(p.read_text()) for p in sorted(EVO.rglob("*.py"))}
    assert sum(map(len, found.values())) > 0 or not UNEXPLAINED_LOCAL_IMPORTS   # the check does see imports
    grown = {path: lines for path, lines in found.items() if len(lines) > UNEXPLAINED_LOCAL_IMPORTS.get(path, 0)}
    assert grown == {}, ("function-local imports without a reason comment (move them to module level, or say why "
                         f"not: an optional or heavy dependency, a cycle): {grown}")


def test_the_search_imports_no_analysis_module():
    # A fresh interpreter: what importing every module of the search really loads.
    code = ("import importlib, pkgutil, sys, evo.search\n"
            "for m in pkgutil.iter_modules(evo.search.__path__, 'evo.search.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('evo.')))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = eval(r.stdout.strip().splitlines()[-1])
    assert "evo.search.loop" in loaded and "evo.search.surrogate" in loaded   # the import did happen
    assert [m for m in loaded if m.startswith("evo.analysis")] == []


@pytest.mark.slow   # a whole search subprocess
def test_a_run_made_by_the_flat_layout_resumes_and_opens(tiny_lm_dir, tmp_path):
    run_dir = tmp_path / "old_run"
    shutil.copytree(OLD_RUN / "run", run_dir)
    db = sqlite3.connect(run_dir / "archive.sqlite")
    stored = json.loads(db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()[0])
    assert stored["selection"]["_target_"] == "evo.selection.PaperTopK"   # the old path, as the old code wrote it
    # The fixture was made with a tiny LM built elsewhere: point its stored LM path at this session's copy (the
    # only key that differs), so that the comparison below is about the module paths alone.
    stored["lm"]["model"] = str(tiny_lm_dir)
    db.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (json.dumps(stored, sort_keys=True),))
    db.commit()
    n_children = db.execute("SELECT COUNT(*) FROM children").fetchone()[0]
    db.close()

    # The same command on the finished run: resumes (the fingerprint matches through the moved-map), adds nothing.
    again = subprocess.run(search_cmd(run_dir, tiny_lm_dir, tmp_path / "cache", *OLD_OVERRIDES), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(resuming)" in again.stdout
    # ...and a real change is still refused, so the comparison did not just stop looking.
    changed = subprocess.run(search_cmd(run_dir, tiny_lm_dir, tmp_path / "cache", *OLD_OVERRIDES,
                                        "selection=tournament"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2 and "different settings for: selection" in changed.stderr

    db = sqlite3.connect(run_dir / "archive.sqlite")
    assert db.execute("SELECT COUNT(*) FROM children").fetchone()[0] == n_children
    db.close()
    report = subprocess.run([sys.executable, "-m", "evo.report", str(run_dir)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0 and "## Rounds" in report.stdout, report.stderr[-3000:]
    compare = subprocess.run([sys.executable, "-m", "evo.compare", str(run_dir), "--out", str(tmp_path / "cmp")],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert (tmp_path / "cmp").is_dir() and any((tmp_path / "cmp").iterdir())

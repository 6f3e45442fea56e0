"""lineage.html (evo/lineage): the page of a real tiny search's archive, loaded in headless Chromium
(Debian's chromium + chromium-driver, installed by scripts/setup.sh) with the network switched off.

One search and one browser session for the whole module. The tree's nodes and edges are counted in
the rendered cytoscape graph and compared with the archive; a child is clicked with the mouse on the
canvas, a Pareto point with the mouse in the plot; the screenshot goes to benchmarks/results/."""

from __future__ import annotations

import difflib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evo.analysis import lineage

from evo import outcome
from evo.analysis.lineage import browser
from runs import REPO, rows

SCREENSHOT = REPO / "benchmarks" / "results" / "lineage.png"
needs_browser = pytest.mark.skipif(browser.missing() is not None, reason=f"no browser: {browser.missing()}")
pytestmark = pytest.mark.slow   # a shared tiny search and a browser session (the fast tier: -m 'not slow')


@pytest.fixture(scope="module")
def run_dir(tiny_search_alpha1):
    """A real tiny search (2 rounds x 2 prompts x 3 samples) keeping every child that trains (alpha=1); run once
    per session and shared with test_dataset (conftest.py), so only read here (copied where a test writes)."""
    return tiny_search_alpha1.run_dir


def archive_edges(run_dir) -> set[tuple[int, int]]:
    """(parent, child) pairs straight from the archive's JSON parents column."""
    children = rows(run_dir, "SELECT id, parents FROM children")
    return {(p, c["id"]) for c in children for p in json.loads(c["parents"] or "[]")}


@pytest.fixture(scope="module")
def driver():
    if browser.missing():
        pytest.skip(f"no browser: {browser.missing()}")
    d = browser.chromium(width=1500, height=950)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def page(run_dir, driver):
    """The run's lineage.html opened with the network off (Chromium's emulated offline mode)."""
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    driver.get_log("performance")   # drop what the browser's start page fetched: the log holds the page's own
    driver.get((run_dir / "lineage.html").resolve().as_uri())
    browser.wait_ready(driver)
    return driver


def test_search_writes_the_page_with_every_child(run_dir):
    data = lineage.read_page(run_dir / "lineage.html")
    archived = rows(run_dir, "SELECT id, status, code FROM children ORDER BY id")
    assert [n["id"] for n in data["nodes"]] == [r["id"] for r in archived]
    assert [n["status"] for n in data["nodes"]] == [r["status"] for r in archived]   # the final statuses
    assert all(n["code"] == r["code"] for n, r in zip(data["nodes"], archived))
    assert {(p, n["id"]) for n in data["nodes"] for p in n["parents"]} == archive_edges(run_dir)
    assert [r["round"] for r in data["rounds"]] == [0, 1] and data["labels"]["test"] == "test accuracy"
    assert "lineage.html not written" not in (run_dir / "run.log").read_text()
    size = (run_dir / "lineage.html").stat().st_size
    assert size < 3_000_000, size   # the libraries (~1.7 MB) and a compressed tiny run


def test_report_cli_writes_the_page_for_any_run_folder(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("lineage.html"))
    r = subprocess.run([sys.executable, "-m", "evo.report", str(copy)], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert lineage.read_page(copy / "lineage.html")["nodes"] == lineage.read_page(run_dir / "lineage.html")["nodes"]
    bad = subprocess.run([sys.executable, "-m", "evo.lineage", str(tmp_path / "nothing")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "has no archive.sqlite" in bad.stderr


@needs_browser
def test_page_loads_offline_and_requests_nothing(page):
    assert page.execute_script("return typeof cytoscape === 'function' && typeof Plotly.newPlot === 'function'")
    resources = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [u for u in resources if not u.startswith(("data:", "blob:"))] == []
    sent = [json.loads(e["message"])["message"] for e in page.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in sent if m["method"] == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(("file:", "data:", "blob:")) for u in urls), urls   # only the page itself
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


@needs_browser
def test_rendered_tree_has_the_archives_nodes_and_edges(page, run_dir):
    ids = [r["id"] for r in rows(run_dir, "SELECT id FROM children")]
    edges = archive_edges(run_dir)
    rendered_nodes = page.execute_script("return LINEAGE.cy.nodes().map(n => n.data('cid'))")
    rendered_edges = page.execute_script("return LINEAGE.cy.edges().map(e => [e.source().data('cid'), e.target().data('cid')])")
    assert sorted(rendered_nodes) == sorted(ids)
    assert sorted(map(tuple, rendered_edges)) == sorted(edges) and len(edges) > 0
    counts = page.find_element("id", "counts")
    assert (int(counts.get_attribute("data-nodes")), int(counts.get_attribute("data-edges"))) == (len(ids), len(edges))
    # Seeds on the top layer, then one layer per round, in round order.
    ys = page.execute_script("return LINEAGE.cy.nodes().map(n => [n.data('round'), n.position('y')])")
    by_round = {}
    for r, y in ys:
        by_round.setdefault(r, set()).add(round(y, 3))
    assert all(len(v) == 1 for v in by_round.values()) and sorted(by_round, key=lambda r: min(by_round[r])) == sorted(by_round)


def _click_node(driver, child_id: int) -> None:
    """A real mouse click at the node's place on the tree's canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    driver.execute_script(f"LINEAGE.cy.center(LINEAGE.cy.getElementById('n{child_id}'))")
    x, y = driver.execute_script(f"const p = LINEAGE.cy.getElementById('n{child_id}').renderedPosition(); return [p.x, p.y]")
    tree = driver.find_element("id", "tree")
    ActionChains(driver).move_to_element_with_offset(tree, int(x - tree.size["width"] / 2),
                                                     int(y - tree.size["height"] / 2)).click().perform()


@needs_browser
def test_clicking_a_child_shows_its_code_and_its_diff_against_the_parent(page, run_dir):
    children = rows(run_dir, "SELECT id, parents, code, status, num_params, test_accuracy FROM children "
                             "WHERE round >= 0 AND status IN (?, ?) ORDER BY id", outcome.WORKING)
    code = {r["id"]: r["code"] for r in rows(run_dir, "SELECT id, code FROM children")}
    child = next(c for c in children if code[json.loads(c["parents"])[0]] != c["code"])
    parent = json.loads(child["parents"])[0]
    _click_node(page, child["id"])
    detail = page.find_element("id", "detail")
    assert detail.get_attribute("data-child") == str(child["id"])
    view = page.find_element("id", "code-view")
    assert view.get_attribute("data-view") == "diff" and view.get_attribute("data-parent") == str(parent)
    expected = list(difflib.unified_diff(code[parent].splitlines(), child["code"].splitlines(), lineterm=""))[2:]
    shown = view.text.splitlines()
    assert shown[:2] == [f"--- child {parent}", f"+++ child {child['id']}"]
    changed = [line for line in expected if line.startswith(("+", "-"))]   # the lines the LM added and removed
    assert changed and changed == [line for line in shown[2:] if line.startswith(("+", "-"))]
    page.find_element("css selector", "#detail .tabs button[data-tab='0']").click()   # the code tab
    assert page.find_element("id", "code-view").text == child["code"].strip("\n")
    assert child["status"] in detail.text and str(child["num_params"]) in detail.text
    # The Pareto view rings the same child.
    ring = page.execute_script("const t = document.getElementById('pareto').data[3]; return [t.x, t.y, t.customdata]")
    assert ring[0] == [child["num_params"]] and ring[2] == [child["id"]]
    assert ring[1][0] == pytest.approx(1 - child["test_accuracy"])
    page.save_screenshot(str(SCREENSHOT))


@needs_browser
def test_clicking_a_pareto_point_selects_the_node_in_the_tree(page, run_dir):
    from selenium.webdriver.common.action_chains import ActionChains
    seed = rows(run_dir, "SELECT id FROM children WHERE round = -1 AND status = 'ok' ORDER BY id")[0]["id"]
    # The seeds trace (index 2): find this seed's marker among the drawn points and click on it.
    index = page.execute_script(f"return document.getElementById('pareto').data[2].customdata.indexOf({seed})")
    points = page.find_elements("css selector", "#pareto .scatterlayer .trace:nth-of-type(3) path.point")
    ActionChains(page).move_to_element(points[index]).click().perform()
    assert page.execute_script("return LINEAGE.cy.$('node:selected').map(n => n.data('cid'))") == [seed]
    assert page.find_element("id", "detail").get_attribute("data-child") == str(seed)


@needs_browser
def test_search_box_and_failed_toggle(page, run_dir):
    from selenium.webdriver.common.keys import Keys
    statuses = [r["status"] for r in rows(run_dir, "SELECT status FROM children")]
    box = page.find_element("id", "search")
    box.clear()
    box.send_keys("status:ok")
    assert int(page.find_element("id", "search-info").get_attribute("data-matches")) == statuses.count("ok")
    box.send_keys(Keys.CONTROL, "a", Keys.BACKSPACE)
    page.find_element("id", "show-failed").click()   # hide children that did not train
    working = sum(s in outcome.WORKING for s in statuses)
    assert int(page.find_element("id", "counts").get_attribute("data-nodes")) == working
    page.find_element("id", "show-failed").click()
    assert int(page.find_element("id", "counts").get_attribute("data-nodes")) == len(statuses)


@needs_browser
def test_sweep_page_links_each_run_to_its_lineage(run_dir, tmp_path, driver):
    from evo.analysis.compare import main
    second = tmp_path / "second"
    shutil.copytree(run_dir, second, ignore=shutil.ignore_patterns("lineage.html"))   # a second replicate
    db = sqlite3.connect(second / "archive.sqlite")
    db.execute("UPDATE meta SET value = ? WHERE key = 'config'",
               (json.dumps({**json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0]),
                            "seed": 1}),))
    db.commit()
    db.close()
    out = tmp_path / "compare"
    assert main([str(run_dir), str(second), "--html", "--out", str(out), "--bootstrap", "50"]) == 0
    assert (second / "lineage.html").exists()      # written for the run folder that had none
    driver.get((out / "sweep.html").resolve().as_uri())
    browser.wait_ready(driver)
    links = [a.get_attribute("href") for a in driver.find_elements("css selector", "a.lineage")]
    assert sorted(links) == sorted(p.resolve().as_uri() for p in (run_dir / "lineage.html", second / "lineage.html"))
    assert driver.execute_script("return document.getElementById('fronts').data.length") >= 2


@pytest.mark.parametrize("template, kind, own_policy", [("page.html", "lineage", "worker-src blob:"),
                                                        ("sweep.html", "sweep", None)])
def test_both_pages_are_filled_into_the_one_shared_frame(template, kind, own_policy, tmp_path):
    # shell.html holds what both pages share; each page's file only its sections: all of them land, no slot is
    # left over, and the sweep page does not get the lineage page's wider security policy
    text = lineage.render({"title": "a <run>"}, template=template, app=template.replace(".html", ".js"), libs=())
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert f"<title>{kind}: a &lt;run&gt;</title>" in text and f"<h1>{kind}: a &lt;run&gt;</h1>" in text
    assert re.findall(r"<!--[A-Z]+-->|section: \w+ -->", text) == []
    assert text.count("<style>") == 1 and "body { margin: 0;" in text and "#error {" in text
    policy = re.search(r'Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert policy.startswith("default-src 'none'") and (own_policy in policy if own_policy else "worker-src" not in policy)
    (tmp_path / "p.html").write_text(text)
    assert lineage.read_page(tmp_path / "p.html") == {"title": "a <run>"}   # the data slot too

// The lineage page's code (evo/analysis/lineage/page.js, inlined by evo/analysis/lineage/__init__.py).
// window.LINEAGE exposes the state (data, cy, select) so tests and a curious user's console can read it.
"use strict";

const STATUS_COLORS = {
  ok: "#2da44e", filtered: "#a3c644", duplicate: "#b8bec6", pending: "#ffffff", skipped_by_surrogate: "#54aeff",
  syntax_error: "#fb8f44", forbidden: "#bc4c00", build_error: "#e16f24", shape_error: "#cf222e",
  batch_dependence: "#a475f9", timeout: "#8250df", memory: "#6639ba", crashed: "#a40e26", nan: "#ff8182",
};
const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
const NOT_SCORED = "#c9ced6";

async function loadData() {
  const b64 = document.getElementById("lineage-data").textContent.trim();
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  if (typeof DecompressionStream === "undefined")
    throw new Error("this browser has no DecompressionStream (Chrome 80+, Firefox 113+, Safari 16.4+ have it)");
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}
const fmt = (x, digits) => (x === null || x === undefined ? "-" : typeof x === "number" && digits !== undefined ? x.toFixed(digits) : String(x));

function main(D) {
  const byId = new Map(D.nodes.map((n) => [n.id, n]));
  const working = new Set(D.statuses.working);
  const L = D.labels;
  const state = { selected: null, colorBy: "fitness" };

  // -- colours and sizes -----------------------------------------------------------------------
  // Fitness colour by rank among the scored children (fitness spans orders of magnitude).
  const scored = D.nodes.filter((n) => n.status === "ok" && n.fitness !== null).sort((a, b) => a.fitness - b.fitness);
  const fitRank = new Map(scored.map((n, i) => [n.id, scored.length > 1 ? i / (scored.length - 1) : 1]));
  const fitnessColor = (n) => (fitRank.has(n.id) ? VIRIDIS[Math.min(9, Math.floor(fitRank.get(n.id) * 10))] : NOT_SCORED);
  const statusColor = (n) => STATUS_COLORS[n.status] || "#888";
  const sizes = D.nodes.filter((n) => n.num_params > 0).map((n) => Math.log(n.num_params));
  const [lo, hi] = sizes.length ? [Math.min(...sizes), Math.max(...sizes)] : [0, 1];
  const nodeSize = (n) => (n.num_params > 0 ? 14 + 30 * (hi > lo ? (Math.log(n.num_params) - lo) / (hi - lo) : 0.5) : 10);
  const label = (n) => (n.seed_name ? n.seed_name : String(n.id));

  // -- the tree ---------------------------------------------------------------------------------
  const elements = [];
  for (const n of D.nodes) {
    elements.push({ group: "nodes", position: { x: n.x, y: n.y }, data: { id: "n" + n.id, cid: n.id, label: label(n), round: n.round, status: n.status,
      size: nodeSize(n), color: fitnessColor(n), failed: working.has(n.status) ? 0 : 1 } });
  }
  for (const n of D.nodes) {
    for (const p of n.parents) {
      elements.push({ group: "edges", data: { id: `e${p}_${n.id}`, source: "n" + p, target: "n" + n.id } });
    }
  }
  const big = D.nodes.length > 400;
  const cy = cytoscape({
    container: document.getElementById("tree"), elements, boxSelectionEnabled: false,
    textureOnViewport: big, hideEdgesOnViewport: big, pixelRatio: big ? 1 : "auto",
    style: [
      { selector: "node", style: { width: "data(size)", height: "data(size)", "background-color": "data(color)",
        "border-width": 1, "border-color": "#57606a", label: "data(label)", "font-size": 9, "text-valign": "center",
        "text-halign": "center", color: "#1f2328", "text-outline-color": "#fff", "text-outline-width": 1.5,
        "min-zoomed-font-size": 7 } },
      { selector: "node[round < 0]", style: { shape: "star", "border-color": "#1f2328" } },
      { selector: "edge", style: { width: 1, "line-color": big ? "#c4cbd3" : "#afb8c1", "curve-style": big ? "haystack" : "bezier",
        "target-arrow-shape": big ? "none" : "triangle", "target-arrow-color": "#afb8c1", "arrow-scale": 0.6, opacity: big ? 0.35 : 0.7 } },
      { selector: ".faded", style: { opacity: 0.12 } },
      { selector: ".match", style: { "border-width": 3, "border-color": "#bf8700" } },
      { selector: "edge.lineage", style: { "line-color": "#d62728", "target-arrow-color": "#d62728", width: 2.5, opacity: 1, "z-index": 9 } },
      { selector: "node.lineage", style: { "border-width": 2.5, "border-color": "#d62728" } },
      { selector: "node:selected", style: { "border-width": 5, "border-color": "#d62728", "z-index": 10 } },
    ],
    // Positions from evo/lineage (igraph's Sugiyama order, one layer per round, seeds on top).
    layout: { name: "preset", fit: true, padding: 30 },
  });

  function recolor() {
    const f = state.colorBy === "status" ? statusColor : fitnessColor;
    cy.batch(() => cy.nodes().forEach((el) => el.data("color", f(byId.get(el.data("cid"))))));
    const legend = document.getElementById("legend");
    if (state.colorBy === "status") {
      const present = [...new Set(D.nodes.map((n) => n.status))];
      legend.innerHTML = present.map((s) => `<span class="sw" style="background:${statusColor({ status: s })}"></span>${esc(s)}`).join("");
    } else {
      legend.innerHTML = `fitness (rank among scored) worse<span class="bar"></span>better` +
        `<span class="sw" style="background:${NOT_SCORED}"></span>not scored &nbsp;&#9733; seed &nbsp; size: parameters (log)`;
    }
  }

  function showFailed(show) {
    cy.batch(() => cy.nodes("[failed = 1]").style("display", show ? "element" : "none"));
    updateCounts();
  }

  function updateCounts() {
    const nodes = cy.nodes().filter((n) => n.style("display") !== "none");
    const edges = cy.edges().filter((e) => e.source().style("display") !== "none" && e.target().style("display") !== "none");
    const el = document.getElementById("counts");
    el.textContent = `${nodes.length} children, ${edges.length} edges shown`;
    el.dataset.nodes = nodes.length;
    el.dataset.edges = edges.length;
  }

  // -- the Pareto view --------------------------------------------------------------------------
  const pts = D.nodes.filter((n) => working.has(n.status) && n.num_params > 0 && n.test_accuracy !== null);
  const kids = pts.filter((n) => n.round >= 0), seeds = pts.filter((n) => n.round < 0);
  const front = [];
  let bestErr = Infinity;
  for (const n of [...kids].sort((a, b) => a.num_params - b.num_params || a.test_accuracy - b.test_accuracy)) {
    const err = 1 - n.test_accuracy;
    if (err < bestErr) { front.push(n); bestErr = err; }
  }
  const hover = (n) => `child ${n.id}${n.seed_name ? " (seed " + n.seed_name + ")" : ""}<br>round ${n.round}, ${n.status}` +
    `<br>${n.num_params} params, ${L.error} ${fmt(1 - n.test_accuracy, 3)}<br>fitness ${fmt(n.fitness, 1)}`;
  const trace = (ns, extra) => ({ x: ns.map((n) => n.num_params), y: ns.map((n) => 1 - n.test_accuracy),
    customdata: ns.map((n) => n.id), text: ns.map(hover), hoverinfo: "text", type: "scatter", ...extra });
  const paretoDiv = document.getElementById("pareto");
  Plotly.newPlot(paretoDiv, [
    trace(kids, { name: "children", mode: "markers", marker: { size: 7, color: kids.map((n) => n.round), colorscale: "Viridis",
      colorbar: { title: { text: "round" }, thickness: 10, len: 0.8 }, line: { width: 0.5, color: "#fff" } } }),
    trace(front, { name: "Pareto front", mode: "lines", line: { shape: "hv", color: "#d62728", width: 1.2 }, hoverinfo: "skip" }),
    trace(seeds, { name: "seeds", mode: "markers", marker: { symbol: "star", size: 13, color: "#1f2328" } }),
    { name: "selected", x: [], y: [], customdata: [], mode: "markers", type: "scatter", hoverinfo: "skip",
      marker: { size: 18, color: "rgba(0,0,0,0)", line: { width: 3, color: "#d62728" } } },
  ], { margin: { l: 55, r: 10, t: 30, b: 40 },
       xaxis: { type: "log", title: { text: "parameters (log scale)", standoff: 4 } }, yaxis: { title: { text: L.error } },
       legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom", font: { size: 11 } }, hovermode: "closest", uirevision: "keep" },
     { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] });
  paretoDiv.on("plotly_click", (ev) => { const p = ev.points.find((q) => q.customdata !== undefined); if (p) select(p.customdata, true); });

  // -- the per-round charts -----------------------------------------------------------------------
  const R = D.rounds;
  const small = { margin: { l: 50, r: 10, t: 40, b: 34 }, font: { size: 10 },
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom", font: { size: 10 } } };
  Plotly.newPlot("rounds", [
    { x: R.map((r) => r.round), y: R.map((r) => r.samples), name: "samples", type: "bar", marker: { color: "#afb8c1" } },
    { x: R.map((r) => r.round), y: R.map((r) => r.new_working), name: "new working", type: "bar", marker: { color: "#2da44e" } },
  ], { ...small, barmode: "overlay", title: { text: "children per round", font: { size: 12 }, x: 0.02, y: 0.97 },
       xaxis: { title: { text: "round", standoff: 2 }, dtick: 1 } },
     { displayModeBar: false, responsive: true });
  const anyScored = R.some((r) => r.best_fitness_so_far !== null);
  Plotly.newPlot("best", [
    { x: R.map((r) => r.round), y: R.map((r) => r.best_fitness_so_far), name: "best so far", mode: "lines+markers", type: "scatter", line: { shape: "hv" } },
    { x: R.map((r) => r.round), y: R.map((r) => r.best_fitness_round), name: "best of round", mode: "markers", type: "scatter" },
  ], { ...small, title: { text: "fitness", font: { size: 12 }, x: 0.02, y: 0.97 }, xaxis: { title: { text: "round", standoff: 2 }, dtick: 1 },
       annotations: anyScored ? [] : [{ text: "no scored child yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }] },
     { displayModeBar: false, responsive: true });

  // -- selection ------------------------------------------------------------------------------
  function select(id, center) {
    const n = byId.get(id);
    if (!n) return;
    state.selected = id;
    cy.batch(() => {
      cy.elements().unselect().removeClass("lineage");
      const el = cy.getElementById("n" + id);
      el.select();
      el.incomers().addClass("lineage");   // the edges from its parents, and the parents
      if (center) cy.animate({ center: { eles: el }, duration: 200 });
    });
    const on = working.has(n.status) && n.num_params > 0 && n.test_accuracy !== null;
    Plotly.restyle(paretoDiv, { x: [on ? [n.num_params] : []], y: [on ? [1 - n.test_accuracy] : []], customdata: [on ? [id] : []] }, [3]);
    showDetail(n);
  }

  function diffHtml(text) {
    if (!text) return '<span class="hint">identical to this parent</span>';
    return text.split("\n").map((l) => {
      const cls = l.startsWith("+++") || l.startsWith("---") ? "hunk" : l.startsWith("@@") ? "hunk" : l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : "";
      return cls ? `<span class="${cls}">${esc(l)}</span>` : esc(l) + "\n";
    }).join("");
  }
  const nodeLink = (id) => `<a class="node" data-id="${id}">${id}${byId.get(id)?.seed_name ? " (" + esc(byId.get(id).seed_name) + ")" : ""}</a>`;

  function showDetail(n) {
    const prompt = n.prompt_id !== null ? D.prompts[String(n.prompt_id)] : null;
    const kids = D.nodes.filter((c) => c.parents.includes(n.id)).map((c) => c.id);
    const rows = [
      ["round", n.round < 0 ? "seed" : n.round],
      ["status", `<span class="status" style="background:${statusColor(n)};${n.status === "pending" ? "color:#000" : ""}">${esc(n.status)}</span>` +
        (n.reason ? " " + esc(n.reason) : "")],
      ["parameters", fmt(n.num_params)], [L.val, fmt(n.val_accuracy, 4)], [L.test, fmt(n.test_accuracy, 4)],
      ["fitness", fmt(n.fitness, 1)],
      ["parents", n.parents.length ? n.parents.map(nodeLink).join(", ") : "-"],
      ["children", kids.length ? kids.slice(0, 40).map(nodeLink).join(", ") + (kids.length > 40 ? ` ... (${kids.length})` : "") : "-"],
      ["duplicate of", n.duplicate_of !== null ? nodeLink(n.duplicate_of) : null],
      ["repairs", n.repairs.length ? esc(n.repairs.join(", ")) : "none"],
      ["LM stop", n.stop_reason], ["temperature", fmt(n.temperature)],
      ["soft prompt", n.round < 0 ? null : n.soft_prompt_round === null ? "base LM" : `tuned after round ${n.soft_prompt_round}`],
      ["prompt", prompt ? `round ${prompt.round}, prompt ${prompt.index}, sample ${fmt(n.sample_index)}${n.attempt ? ", resample " + n.attempt : ""}` : null],
      ["target (constraints)", prompt ? esc(JSON.stringify(prompt.target)) : null],
      ["surrogate", n.surrogate ? `${esc(n.surrogate)}${n.predicted !== null ? ", predicted " + fmt(n.predicted, 3) : ""}` : null],
      ["LM", n.lm_name ? `${esc(n.lm_name)}, ${fmt(n.lm_seconds, 2)} s, ${fmt(n.tokens_out)} tokens out` : null],
      ["training", n.train_seconds !== null ? `${fmt(n.train_seconds, 1)} s on ${esc(n.device || "cpu")} (sandbox ${fmt(n.eval_seconds, 1)} s)` :
        n.eval_seconds !== null ? `sandbox ${fmt(n.eval_seconds, 1)} s` : null],
    ].filter((r) => r[1] !== null && r[1] !== undefined);
    const tabs = [["code", null], ...n.diffs.map(([p]) => ["diff vs " + p, p])];
    const el = document.getElementById("detail");
    el.dataset.child = n.id;
    el.innerHTML = `<h2>child ${n.id}${n.seed_name ? " (seed " + esc(n.seed_name) + ")" : ""}</h2>` +
      `<table class="kv">${rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v}</td></tr>`).join("")}</table>` +
      `<div class="tabs">${tabs.map(([t, p], i) => `<button data-tab="${i}" class="${i ? "" : "on"}">${esc(t)}</button>`).join("")}</div>` +
      `<pre id="code-view" class="code"></pre>` +
      (prompt ? `<details><summary>the prompt (${prompt.text.length} characters)</summary><pre class="prompt">${esc(prompt.text)}</pre></details>` : "");
    const view = el.querySelector("#code-view");
    const show = (i) => {
      el.querySelectorAll(".tabs button").forEach((b, j) => b.classList.toggle("on", i === j));
      view.dataset.view = i ? "diff" : "code";
      view.dataset.parent = i ? n.diffs[i - 1][0] : "";
      view.innerHTML = i ? diffHtml(n.diffs[i - 1][1]) : esc(n.code);
    };
    el.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => show(+b.dataset.tab)));
    el.querySelectorAll("a.node").forEach((a) => a.addEventListener("click", () => select(+a.dataset.id, true)));
    show(n.diffs.length ? 1 : 0);   // a child opens on what the LM changed, a seed on its code
  }

  cy.on("tap", "node", (ev) => select(ev.target.data("cid"), false));

  // -- search -----------------------------------------------------------------------------------
  function search(q) {
    q = q.trim();
    const info = document.getElementById("search-info");
    cy.batch(() => cy.elements().removeClass("faded match"));
    if (!q) { info.textContent = ""; info.dataset.matches = ""; return []; }
    let test;
    const m = q.match(/^#?(\d+)$/);
    if (m) test = (n) => n.id === +m[1];
    else if (q.startsWith("status:")) { const s = q.slice(7).trim(); test = (n) => n.status === s; }
    else if (q.startsWith("round:")) { const r = +q.slice(6); test = (n) => n.round === r; }
    else if (STATUS_COLORS[q]) test = (n) => n.status === q;
    else { const t = q.toLowerCase(); test = (n) => n.code.toLowerCase().includes(t) || (n.seed_name || "").toLowerCase() === t; }
    const hits = D.nodes.filter(test);
    const hitIds = new Set(hits.map((n) => "n" + n.id));
    cy.batch(() => {
      cy.nodes().forEach((el) => el.addClass(hitIds.has(el.id()) ? "match" : "faded"));
      cy.edges().addClass("faded");
    });
    info.textContent = `${hits.length} match${hits.length === 1 ? "" : "es"}`;
    info.dataset.matches = hits.length;
    return hits;
  }
  const box = document.getElementById("search");
  box.addEventListener("input", () => search(box.value));
  box.addEventListener("keydown", (e) => { if (e.key === "Enter") { const h = search(box.value); if (h.length) select(h[0].id, true); } });
  document.getElementById("color-by").addEventListener("change", (e) => { state.colorBy = e.target.value; recolor(); });
  document.getElementById("show-failed").addEventListener("change", (e) => showFailed(e.target.checked));

  // Layer labels (seeds, round t) beside the tree, following pan and zoom.
  const layerY = new Map();
  for (const n of D.nodes) layerY.set(n.round, n.y);
  const labels = document.getElementById("layers");
  labels.innerHTML = [...layerY.keys()].sort((a, b) => a - b)
    .map((r) => `<span data-round="${r}">${r < 0 ? "seeds" : "round " + r}</span>`).join("");
  const placeLabels = () => {
    const z = cy.zoom(), py = cy.pan().y;
    labels.querySelectorAll("span").forEach((el) => { el.style.top = (layerY.get(+el.dataset.round) * z + py - 7) + "px"; });
  };
  cy.on("viewport", placeLabels);
  document.getElementById("fit").addEventListener("click", () => cy.fit(undefined, 20));
  cy.on("dbltap", (ev) => { if (ev.target === cy) cy.fit(undefined, 20); });

  // A small tree fitted to the panel would be drawn huge: cap the zoom.
  if (cy.zoom() > 1.6) { cy.zoom(1.6); cy.center(); }
  placeLabels();
  recolor();
  updateCounts();
  window.LINEAGE = { data: D, cy, select, search, state };
}

loadData().then((D) => {
  const t0 = performance.now();
  main(D);
  document.body.dataset.ready = "1";
  document.body.dataset.renderMs = Math.round(performance.now() - t0);
}).catch((err) => {
  const el = document.getElementById("error");
  el.style.display = "block";
  el.textContent = "lineage page: " + err;
  document.body.dataset.error = String(err);
  throw err;
});

// The sweep page's code (evo/analysis/lineage/sweep.js, inlined by evo/analysis/lineage/__init__.py).
"use strict";

async function loadData() {
  const b64 = document.getElementById("lineage-data").textContent.trim();
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function main(D) {
  const L = D.labels, fronts = [], curves = [];
  D.variants.forEach((v, i) => {
    const color = PALETTE[i % PALETTE.length];
    fronts.push({ x: v.points.map((p) => p.num_params), y: v.points.map((p) => p.error), mode: "markers", type: "scatter",
      name: v.name, legendgroup: v.name, marker: { color, size: 7, opacity: 0.75 },
      text: v.points.map((p) => `${esc(v.name)}<br>${p.num_params} params, ${L.error} ${p.error.toFixed(3)}<br>fitness ${p.fitness.toFixed(1)}`),
      hoverinfo: "text" });
    fronts.push({ x: v.front.map((p) => p[0]), y: v.front.map((p) => p[1]), mode: "lines", type: "scatter", name: v.name + " front",
      legendgroup: v.name, showlegend: false, line: { color, shape: "hv", width: 1.5 }, hoverinfo: "skip" });
    if (v.curve) {
      if (v.curve.lo) curves.push({ x: [...v.curve.x, ...[...v.curve.x].reverse()], y: [...v.curve.hi, ...[...v.curve.lo].reverse()],
        fill: "toself", fillcolor: color + "33", line: { width: 0 }, type: "scatter", mode: "lines", legendgroup: v.name,
        showlegend: false, hoverinfo: "skip", name: v.name + " 95% band" });
      curves.push({ x: v.curve.x, y: v.curve.mean, type: "scatter", mode: "lines", line: { color, shape: "hv" },
        name: `${v.name} (${v.curve.runs} runs)`, legendgroup: v.name });
    }
  });
  const common = { margin: { l: 60, r: 10, t: 34, b: 44 }, legend: { font: { size: 11 } }, hovermode: "closest" };
  Plotly.newPlot("fronts", fronts, { ...common, title: { text: `top ${D.top} children per variant: size vs ${L.error}`, font: { size: 13 } },
    xaxis: { type: "log", title: { text: "parameters (log)" } }, yaxis: { title: { text: L.error } } }, { displaylogo: false, responsive: true });
  Plotly.newPlot("curves", curves, { ...common, title: { text: "best fitness so far (mean over seeds, 95% bootstrap band)", font: { size: 13 } },
    xaxis: { title: { text: "children generated" } }, yaxis: { title: { text: "fitness" } } }, { displaylogo: false, responsive: true });
  const body = document.querySelector("#runs tbody");
  body.innerHTML = D.variants.flatMap((v) => v.runs.map((r) =>
    `<tr><td>${esc(v.name)}</td><td>${esc(r.seed)}</td><td class="num">${r.children}</td><td class="num">${r.scored}</td>` +
    `<td class="num">${r.best_fitness === null ? "-" : r.best_fitness.toFixed(1)}</td>` +
    `<td><a class="lineage" href="${esc(encodeURI(r.lineage))}">${esc(r.folder)}</a></td></tr>`)).join("");
}

loadData().then((D) => { main(D); document.body.dataset.ready = "1"; }).catch((err) => {
  const el = document.getElementById("error");
  el.style.display = "block";
  el.textContent = "sweep page: " + err;
  document.body.dataset.error = String(err);
  throw err;
});

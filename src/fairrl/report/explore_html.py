"""``pareto.html`` of ``fairrl explore``: one self-contained page (no external scripts, fonts or URLs).

The table of all trials is written here as escaped HTML (readable without JavaScript); the scatter is an
inline ``<svg>`` that a small script draws from the trials embedded as JSON in a
``<script type="application/json">`` tag, and redraws when the x / y pickers change (3+ objectives). The
script builds SVG nodes with ``textContent``, never ``innerHTML``, so no data string is parsed as markup;
in the JSON every ``<``, ``>`` and ``&`` is written as a ``\\u003c``-style escape, so neither ``</script>``
nor ``<!--`` in a parameter value can end or alter the data tag.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from fairrl.fsutil import finite_json

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; }
#plot { border: 1px solid #ddd; background: #fff; max-width: 100%; height: auto; }
#plot .axis { stroke: #444; }
#plot .grid { stroke: #eee; }
#plot .tick { font-size: 11px; fill: #444; }
#plot .label { font-size: 13px; fill: #222; }
#plot .ring { fill: none; stroke: #000; stroke-width: 1.2; }
#plot .front-line { fill: none; stroke: #000; stroke-dasharray: 5 3; }
#plot .infeasible { stroke-width: 2; }
#plot .knee { font-size: 12px; font-weight: bold; }
#plot .pt { cursor: pointer; }
#legend span { margin-right: 1.2em; font-size: 0.9em; }
#legend i { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%; margin-right: 0.3em; }
table { border-collapse: collapse; margin-top: 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
tr.front td { background: #eef6ff; }
tr.knee td { background: #ffe9a8; font-weight: bold; }
tr.picked td { outline: 2px solid #d62728; }
"""

SCRIPT = r"""
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("explore-data").textContent);
  const svg = document.getElementById("plot");
  const NS = svg.namespaceURI;  // the SVG namespace, which the HTML parser gives an inline <svg>
  const W = 720, H = 480, L = 70, R = 20, T = 20, B = 50;
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                   "#7f7f7f", "#bcbd22", "#17becf"];
  const front = new Set(data.front);
  const methodOf = (t) => (t.params && "method" in t.params ? String(t.params.method) : null);
  const methods = [...new Set(data.trials.map(methodOf).filter((m) => m !== null))].sort();
  const colour = (t) => (methodOf(t) === null ? "#999" : PALETTE[methods.indexOf(methodOf(t)) % PALETTE.length]);

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    parent.appendChild(e);
    return e;
  }
  function text(name, attrs, parent, content) {
    const e = el(name, attrs, parent);
    e.textContent = content;
    return e;
  }
  const label = (o) => o.name + (o.direction === "maximize" ? " (higher is better)" : " (lower is better)");
  function val(t, o) {
    const v = t.values ? t.values[o.name] : null;
    return typeof v === "number" && isFinite(v) ? v : null;
  }
  function num(v) {
    return v !== 0 && (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3) ? v.toExponential(2) : String(+v.toFixed(3));
  }
  function extent(vs) {
    let lo = Math.min(...vs), hi = Math.max(...vs);
    if (!(hi > lo)) { const pad = Math.abs(lo) * 0.1 || 0.5; lo -= pad; hi += pad; }
    const margin = (hi - lo) * 0.06;
    return [lo - margin, hi + margin];
  }
  function tooltip(t) {
    const role = t.number === data.knee ? " (knee)" : front.has(t.number) ? " (Pareto front)" : "";
    const lines = ["trial #" + t.number + role];
    for (const [k, v] of Object.entries(t.params || {})) {
      lines.push(k + " = " + (typeof v === "object" ? JSON.stringify(v) : String(v)));
    }
    for (const o of data.objectives) lines.push(o.name + ": " + (val(t, o) === null ? "-" : num(val(t, o))));
    if (t.feasible === false) lines.push("infeasible: violates a constraint");
    return lines.join("\n");
  }
  function pick(n) {
    for (const row of document.querySelectorAll("#trials tr.picked")) row.classList.remove("picked");
    const row = document.getElementById("trial-" + n);
    if (row) { row.classList.add("picked"); row.scrollIntoView({block: "center"}); }
  }
  const axis = (id, fallback) => (document.getElementById(id) ? Number(document.getElementById(id).value) : fallback);

  function draw() {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const ox = data.objectives[axis("pick-x", 0)], oy = data.objectives[axis("pick-y", 1)];
    const pts = data.trials.filter((t) => t.state === "COMPLETE" && val(t, ox) !== null && val(t, oy) !== null);
    if (!pts.length) {
      text("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "label"}, svg, "no complete trials yet");
      return;
    }
    const [x0, x1] = extent(pts.map((t) => val(t, ox))), [y0, y1] = extent(pts.map((t) => val(t, oy)));
    const sx = (v) => L + (v - x0) / (x1 - x0) * (W - L - R);
    const sy = (v) => H - B - (v - y0) / (y1 - y0) * (H - T - B);
    for (let i = 0; i <= 5; i++) {
      const vx = x0 + (x1 - x0) * i / 5, vy = y0 + (y1 - y0) * i / 5;
      el("line", {x1: sx(vx), y1: T, x2: sx(vx), y2: H - B, class: "grid"}, svg);
      el("line", {x1: L, y1: sy(vy), x2: W - R, y2: sy(vy), class: "grid"}, svg);
      text("text", {x: sx(vx), y: H - B + 16, "text-anchor": "middle", class: "tick"}, svg, num(vx));
      text("text", {x: L - 6, y: sy(vy) + 4, "text-anchor": "end", class: "tick"}, svg, num(vy));
    }
    el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"}, svg);
    el("line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"}, svg);
    const my = (T + H - B) / 2;
    text("text", {x: (L + W - R) / 2, y: H - 10, "text-anchor": "middle", class: "label"}, svg, label(ox));
    text("text", {x: 16, y: my, "text-anchor": "middle", class: "label", transform: "rotate(-90 16 " + my + ")"},
         svg, label(oy));
    // a line through the front only where it is a curve in this plane: two-objective studies
    if (data.objectives.length === 2) {
      const f = pts.filter((t) => front.has(t.number)).sort((a, b) => val(a, ox) - val(b, ox));
      const xy = f.map((t) => sx(val(t, ox)) + "," + sy(val(t, oy))).join(" ");
      if (f.length > 1) el("polyline", {points: xy, class: "front-line"}, svg);
    }
    for (const t of pts) {
      const x = sx(val(t, ox)), y = sy(val(t, oy));
      const g = el("g", {class: "pt"}, svg);
      if (t.feasible === false) {
        const d = "M" + (x - 5) + "," + (y - 5) + "L" + (x + 5) + "," + (y + 5) +
                  "M" + (x - 5) + "," + (y + 5) + "L" + (x + 5) + "," + (y - 5);
        el("path", {d: d, stroke: colour(t), class: "infeasible"}, g);
      } else {
        el("circle", {cx: x, cy: y, r: 5, fill: colour(t), "fill-opacity": 0.85}, g);
      }
      if (front.has(t.number)) el("circle", {cx: x, cy: y, r: 9, class: "ring"}, g);
      if (t.number === data.knee) text("text", {x: x + 11, y: y - 9, class: "knee"}, g, "knee #" + t.number);
      text("title", {}, g, tooltip(t));
      g.addEventListener("click", () => pick(t.number));
    }
  }

  function legend() {
    const box = document.getElementById("legend");
    const entries = methods.map((m) => [m, PALETTE[methods.indexOf(m) % PALETTE.length]]);
    if (data.trials.some((t) => methodOf(t) === null)) entries.push(["no method", "#999"]);
    for (const [name, c] of entries) {
      const span = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = c;
      span.appendChild(dot);
      span.appendChild(document.createTextNode(name));
      box.appendChild(span);
    }
    const note = document.createElement("span");
    note.textContent = "ring: Pareto front; cross: infeasible; hover a point for its parameters, click to find its row";
    box.appendChild(note);
  }

  function sortBy(th) {
    const table = document.getElementById("trials"), body = table.tBodies[0];
    const col = th.cellIndex, asc = th.getAttribute("aria-sort") !== "ascending";
    for (const h of table.tHead.rows[0].cells) h.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    const key = (row) => row.cells[col].getAttribute("data-v") || "";
    const rows = Array.from(body.rows);
    const numeric = rows.every((r) => key(r) === "" || !isNaN(Number(key(r))));
    rows.sort((a, b) => {
      const ka = key(a), kb = key(b);
      if (ka === "" || kb === "") return (ka === "" ? 1 : 0) - (kb === "" ? 1 : 0);  // empty cells last
      const c = numeric ? Number(ka) - Number(kb) : ka.localeCompare(kb);
      return asc ? c : -c;
    });
    for (const r of rows) body.appendChild(r);
  }

  for (const th of document.querySelectorAll("#trials th")) th.addEventListener("click", () => sortBy(th));
  for (const s of document.querySelectorAll("#pickers select")) s.addEventListener("change", draw);
  legend();
  draw();
})();
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _sort_key(value: Any) -> str:
    """The ``data-v`` a table cell sorts by: a number as itself, missing / non-finite as empty."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, (int, float)) else str(value)


def _td(shown: str, key: Any, title: str | None = None) -> str:
    extra = f' title="{_esc(title)}"' if title else ""
    return f'<td data-v="{_esc(_sort_key(key))}"{extra}>{_esc(shown)}</td>'


def _row(t: dict[str, Any], objectives: list[dict[str, Any]], params: list[str], front: list[int],
         knee: int | None) -> str:  # fmt: skip
    n = t["number"]
    ps, values = t.get("params") or {}, t.get("values") or {}
    role = "knee" if n == knee else "yes" if n in front else ""
    cls = "knee" if n == knee else "front" if n in front else ""
    cells = [_td(f"#{n}", n), _td(t.get("state", ""), t.get("state"))]
    for p in params:
        v = ps.get(p)
        cells.append(_td("" if p not in ps else f"{v:.4g}" if isinstance(v, float) else
                         json.dumps(v) if isinstance(v, (list, dict)) else v, v if p in ps else None))  # fmt: skip
    for o in objectives:
        v = values.get(o["name"])
        finite = isinstance(v, (int, float)) and math.isfinite(v)
        cells.append(_td(f"{v:.4f}" if finite else "" if v is None else "n/a", v if finite else None))
    feasible = t.get("feasible")
    cells.append(_td({True: "yes", False: "no", None: ""}[feasible], feasible))
    cells.append(_td(role, role))
    minutes = t.get("minutes")
    cells.append(_td("" if minutes is None else f"{minutes:.1f}", minutes))
    error = str(t.get("error") or "")
    cells.append(_td((error.strip().splitlines() or [""])[0], error, title=error or None))
    return f'<tr id="trial-{_esc(n)}" class="{cls}">' + "".join(cells) + "</tr>"


def _direction(o: dict[str, Any]) -> str:
    return "higher is better" if o["direction"] == "maximize" else "lower is better"


def _pickers(objectives: list[dict[str, Any]]) -> str:
    if len(objectives) < 3:
        return ""
    out = []
    for axis, chosen in (("x", 0), ("y", 1)):
        opts = "".join(f'<option value="{i}"{" selected" if i == chosen else ""}>{_esc(o["name"])}</option>'
                       for i, o in enumerate(objectives))  # fmt: skip
        out.append(f'<label>{axis}: <select id="pick-{axis}">{opts}</select></label>')
    return " ".join(out)


def embed_json(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script>`` element: NaN as null, ``<``, ``>`` and ``&`` escaped."""
    text = json.dumps(finite_json(data), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def pareto_html(trials: list[dict[str, Any]], objectives: list[dict[str, Any]], front: list[int],
                knee: int | None, title: str, params: list[str]) -> str:  # fmt: skip
    """The page: title, summary, pickers, scatter, legend, sortable table, embedded data and script."""
    head = (["trial", "state"] + params + [f"{o['name']} ({_direction(o)})" for o in objectives]
            + ["feasible", "Pareto front", "minutes", "error"])  # fmt: skip
    rows = "\n".join(_row(t, objectives, params, front, knee) for t in trials)
    failed = sum(t.get("state") == "FAIL" for t in trials)
    summary = (f"{len(trials)} trials, {failed} failed; {len(front)} on the Pareto front"
               + (f"; knee: trial #{knee}" if knee is not None else "")
               + ". Click a column header to sort the table.")  # fmt: skip
    data = {"objectives": objectives, "trials": trials, "front": front, "knee": knee}
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{_esc(title)}</h1>
<p id="summary">{_esc(summary)}</p>
<div id="pickers">{_pickers(objectives)}</div>
<svg id="plot" width="720" height="480" viewBox="0 0 720 480" role="img" aria-label="trials scatter"></svg>
<div id="legend"></div>
<noscript><p>The scatter needs JavaScript; the table below does not.</p></noscript>
<table id="trials">
<thead><tr>{"".join(f"<th>{_esc(h)}</th>" for h in head)}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
<script type="application/json" id="explore-data">{embed_json(data)}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""

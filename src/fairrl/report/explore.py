"""The report of ``fairrl explore``: Pareto front, knee, best trials, ``explore.md`` and its figures.

Pure functions of plain trial records (written by :func:`fairrl.explore.study.trial_records`)::

    {"number": 3, "state": "COMPLETE", "params": {"method": "grpo", ...},
     "values": {"reasoning accuracy": 0.61, "bias": 0.12}, "feasible": True, "error": None,
     "run_dir": "runs/x/trial-3", "seeds": 1, "groups": {"accuracy": {"Age": 0.7, ...}}, "minutes": 4.2}

``values`` is keyed by each objective's ``name``; ``feasible`` is None when the study has no constraints.
A trial counts for the front and the best-per-objective table when it is COMPLETE, not infeasible
(``feasible`` is not False) and every objective value it needs is a finite number.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fairrl.errors import DataError  # noqa: E402
from fairrl.fsutil import write_text_atomic  # noqa: E402
from fairrl.report.explore_html import pareto_html  # noqa: E402
from fairrl.report.markdown import cell, fmt  # noqa: E402
from fairrl.report.plots import save_figure  # noqa: E402

Trial = dict[str, Any]
Objective = dict[str, Any]
TIE = 1e-9  # knee scores closer than this are ties (rounding, e.g. points on the chord)
FEASIBLE_WORDS = {True: "yes", False: "no", None: "–"}
STATE_WORDS = {"COMPLETE": "complete", "FAIL": "failed", "RUNNING": "running", "PRUNED": "pruned", "WAITING": "waiting"}


def objective_value(trial: Trial, objective: Objective) -> float | None:
    """The trial's value of ``objective`` as a float; None when missing, not a number, NaN or infinite."""
    v = (trial.get("values") or {}).get(objective["name"])
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def check_objectives(objectives: list[Objective], least: int = 1) -> None:
    """Raise :class:`DataError` unless there are ``least`` objectives, each with a name and a direction."""
    if len(objectives) < least:
        raise DataError(f"need at least {least} objective(s), got {len(objectives)}: {objectives}")
    for o in objectives:
        if not o.get("name") or o.get("direction") not in ("maximize", "minimize"):
            raise DataError(f"objective {o} needs a non-empty 'name' and 'direction' maximize or minimize")


def _counts(trial: Trial, objectives: list[Objective]) -> bool:
    return (trial.get("state") == "COMPLETE" and trial.get("feasible") is not False
            and all(objective_value(trial, o) is not None for o in objectives))  # fmt: skip


def _method(trial: Trial) -> str | None:
    params = trial.get("params") or {}
    return str(params["method"]) if "method" in params else None


def _oriented(trial: Trial, objectives: list[Objective]) -> tuple[float, ...]:
    """The trial's objective values signed so that larger is better on every objective."""
    return tuple(objective_value(trial, o) * (1 if o["direction"] == "maximize" else -1) for o in objectives)


def md(text: Any) -> str:
    """``text`` safe in a markdown table cell or heading: ``|`` and ``<`` backslash-escaped, so a value such
    as ``</b><!--`` shows as text instead of opening a raw HTML tag or comment."""
    return cell(text).replace("<", "\\<")


def _tex_safe(text: str) -> str:
    """Matplotlib reads text between two ``$`` as mathtext (and fails on bad mathtext): escape them."""
    return text.replace("$", "\\$")


def direction_label(objective: Objective) -> str:
    """``reasoning accuracy (higher is better)``."""
    return f"{objective['name']} ({'higher' if objective['direction'] == 'maximize' else 'lower'} is better)"


def pareto_front(trials: list[Trial], objectives: list[Objective]) -> list[int]:
    """Numbers of the non-dominated trials among the complete, feasible ones with finite values, in
    ascending order of the first objective's value (then of trial number).

    Trial b dominates a when b is at least as good on every objective and strictly better on one (each
    objective in its own direction). Identical points do not dominate each other, so all stay on the front.
    """
    check_objectives(objectives)
    pts = {t["number"]: _oriented(t, objectives) for t in trials if _counts(t, objectives)}
    front = [n for n, p in pts.items()
             if not any(all(qi >= pi for qi, pi in zip(q, p, strict=True)) and q != p for q in pts.values())]  # fmt: skip
    first = {t["number"]: objective_value(t, objectives[0]) for t in trials if t["number"] in front}
    return sorted(front, key=lambda n: (first[n], n))


def _normalised(trials: list[Trial], objectives: list[Objective], front: list[int]) -> dict[int, list[float]]:
    """Front points scaled per objective to [0, 1] over the front, 1 = best (a constant objective: 1)."""
    by_number = {t["number"]: t for t in trials}
    raw = {n: _oriented(by_number[n], objectives) for n in front}
    out: dict[int, list[float]] = {n: [] for n in front}
    for i in range(len(objectives)):
        lo, hi = min(p[i] for p in raw.values()), max(p[i] for p in raw.values())
        for n, p in raw.items():
            out[n].append((p[i] - lo) / (hi - lo) if hi > lo else 1.0)
    return out


def knee_scores(trials: list[Trial], objectives: list[Objective], front: list[int]) -> tuple[str, dict[int, float]]:
    """(rule, score per front trial) of :func:`knee_point`; the knee has the largest score.

    ``"line"``: signed distance from the line through the two extreme points (positive on the ideal's
    side); ``"ideal"``: minus the Euclidean distance to the ideal point (1, ..., 1).
    """
    norm = _normalised(trials, objectives, front)
    ideal = {n: -math.dist(p, [1.0] * len(p)) for n, p in norm.items()}
    if len(objectives) != 2 or len(front) < 3:
        return "ideal", ideal
    a = norm[max(front, key=lambda n: (norm[n][0], norm[n][1]))]  # best on objective 1
    b = norm[max(front, key=lambda n: (norm[n][1], norm[n][0]))]  # best on objective 2
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = math.hypot(dx, dy)
    if length == 0:  # all front points identical
        return "ideal", ideal
    side = 1.0 if dx * (1 - a[1]) - dy * (1 - a[0]) >= 0 else -1.0  # which side of the line the ideal lies
    return "line", {n: side * (dx * (p[1] - a[1]) - dy * (p[0] - a[0])) / length for n, p in norm.items()}


def knee_point(trials: list[Trial], objectives: list[Objective], front: list[int]) -> int | None:
    """The knee of the front: the trial where trading one objective for another stops paying off.

    Each objective is scaled to [0, 1] over the front's points, 1 = best (an objective constant on the
    front is 1 everywhere). Then

    - 2 objectives, 3+ front points: the point with the largest perpendicular distance from the straight
      line through the two extreme points (best on objective 1, best on objective 2), counted positive
      on the ideal point's side. This is the distance-to-chord knee of Das (1999), "On characterizing the
      knee of the Pareto curve based on Normal-Boundary Intersection", Struct. Optim. 18, and the
      "Kneedle" curve-difference maximum of Satopää et al. (2011), "Finding a 'Kneedle' in a Haystack".
    - 3+ objectives, or a front of 1-2 points: the point closest (Euclidean) to the ideal (1, ..., 1).

    Ties (scores within 1e-9) go to the lowest trial number. None for an empty front.
    """
    if not front:
        return None
    _, scores = knee_scores(trials, objectives, front)
    top = max(scores.values())
    return min(n for n in front if scores[n] >= top - TIE)


def best_per_objective(trials: list[Trial], objectives: list[Objective]) -> dict[str, int]:
    """Objective name -> number of the best trial on it among those the front is drawn from (complete,
    feasible, every objective finite); ties go to the lowest number. Empty when no trial qualifies."""
    check_objectives(objectives)
    ok = sorted((t for t in trials if _counts(t, objectives)), key=lambda t: t["number"])
    out = {}
    for o in objectives:
        sign = 1 if o["direction"] == "maximize" else -1
        if ok:
            out[o["name"]] = max(ok, key=lambda t: sign * objective_value(t, o))["number"]
    return out


def param_names(trials: list[Trial]) -> list[str]:
    """The union of the trials' parameter names, sorted (a conditional parameter appears in some only)."""
    return sorted({k for t in trials for k in t.get("params") or {}})


def param_text(value: Any) -> str:
    """A parameter value for a table: floats to 4 significant digits, containers as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def write_trials_csv(path: Path, trials: list[Trial], objectives: list[Objective]) -> Path:
    """One row per trial: number, state, ``params_<name>`` per parameter (union, sorted), ``values_<name>``
    per objective, feasible, seeds, minutes, run_dir, error. Missing cells are empty."""
    params = param_names(trials)
    header = ["number", "state", *(f"params_{p}" for p in params), *(f"values_{o['name']}" for o in objectives),
              "feasible", "seeds", "minutes", "run_dir", "error"]  # fmt: skip
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for t in trials:
        values, ps = t.get("values") or {}, t.get("params") or {}
        writer.writerow([t["number"], t.get("state"), *(param_text(ps[p]) if p in ps else "" for p in params),
                         *("" if values.get(o["name"]) is None else values[o["name"]] for o in objectives),
                         "" if t.get("feasible") is None else t["feasible"], t.get("seeds", ""),
                         "" if t.get("minutes") is None else t["minutes"], t.get("run_dir") or "", t.get("error") or ""])  # fmt: skip
    write_text_atomic(Path(path), buf.getvalue())
    return Path(path)


def plot_pareto(path: Path, trials: list[Trial], objectives: list[Objective], front: list[int],
                knee: int | None) -> Path:  # fmt: skip
    """PNG of the first two objectives: complete trials coloured by their ``method`` parameter (grey
    when they have none), infeasible ones as crosses, the front ringed and (2 objectives) joined by a
    line, the knee starred. A third objective sets the marker size (larger = better on it); objectives
    beyond the third are not drawn (``pareto.html`` can pick any pair). Failed trials are not drawn but
    counted in the title."""
    check_objectives(objectives, least=2)
    ox, oy = objectives[0], objectives[1]
    done = [t for t in trials if t.get("state") == "COMPLETE"
            and objective_value(t, ox) is not None and objective_value(t, oy) is not None]  # fmt: skip
    size = {t["number"]: 40.0 for t in done}
    if len(objectives) >= 3:
        oz = objectives[2]
        zs = {t["number"]: _oriented(t, [oz])[0] for t in done if objective_value(t, oz) is not None}
        lo, hi = min(zs.values(), default=0.0), max(zs.values(), default=0.0)
        size.update({n: 15 + 135 * ((z - lo) / (hi - lo) if hi > lo else 1.0) for n, z in zs.items()})
    methods = sorted({_method(t) for t in done} - {None})
    colour = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    fig, ax = plt.subplots(figsize=(7, 5))
    for label in [*methods, None]:
        group = [t for t in done if _method(t) == label]
        for feasible in (True, False):
            pts = [t for t in group if (t.get("feasible") is not False) == feasible]
            if pts:
                ax.scatter([objective_value(t, ox) for t in pts], [objective_value(t, oy) for t in pts],
                           s=[size[t["number"]] for t in pts], c=colour.get(label, "grey"),
                           marker="o" if feasible else "x", alpha=0.8, zorder=2,
                           label=_tex_safe(label or "no method") + ("" if feasible else " (infeasible)"))  # fmt: skip
    on_front = [t for n in front for t in done if t["number"] == n]
    fx, fy = [objective_value(t, ox) for t in on_front], [objective_value(t, oy) for t in on_front]
    if len(objectives) == 2 and len(on_front) > 1:
        ax.plot(fx, fy, "k--", lw=1, zorder=1)
    if on_front:
        ax.scatter(fx, fy, s=[size[t["number"]] * 2.5 for t in on_front], facecolors="none", edgecolors="black",
                   lw=1, zorder=3, label="Pareto front")  # fmt: skip
    for t in (t for t in on_front if t["number"] == knee):
        ax.scatter([objective_value(t, ox)], [objective_value(t, oy)], marker="*", s=260, c="gold", edgecolors="black", zorder=4, label=f"knee (#{knee})")
    ax.set_xlabel(_tex_safe(direction_label(ox)))
    ax.set_ylabel(_tex_safe(direction_label(oy)))
    failed = sum(t.get("state") == "FAIL" for t in trials)
    title = f"{len(trials)} trials, {failed} failed"
    if len(objectives) >= 3:
        title += f"; marker size: {direction_label(objectives[2])}"
    ax.set_title(_tex_safe(title), fontsize=9)
    if done:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no complete trials yet", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)


def write_pareto_html(path: Path, trials: list[Trial], objectives: list[Objective], front: list[int],
                      knee: int | None, title: str) -> Path:  # fmt: skip
    """One self-contained HTML page (:mod:`fairrl.report.explore_html`): scatter and sortable table."""
    check_objectives(objectives, least=2)
    write_text_atomic(Path(path), pareto_html(trials, objectives, front, knee, title, param_names(trials)))
    return Path(path)


def mask_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***`` (and a ``password=``
    query value too); text without one, such as ``sqlite:///runs/study.db`` or a file path, is unchanged."""
    scheme, sep, rest = str(url).partition("://")
    if sep:
        end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0] or [len(rest)])
        userinfo, at, host = rest[:end].rpartition("@")
        if at and ":" in userinfo:
            rest = f"{userinfo.split(':', 1)[0]}:***@{host}{rest[end:]}"
    head, q, query = rest.partition("?")
    if q:
        parts = [(k + "=***" if k.lower() in ("password", "pwd", "passwd") else k + e + v)
                 for k, e, v in (p.partition("=") for p in query.split("&"))]  # fmt: skip
        rest = head + "?" + "&".join(parts)
    return scheme + sep + rest


def _header(trials: list[Trial], objectives: list[Objective], constraints: list[dict[str, Any]],
            info: dict[str, Any]) -> list[str]:  # fmt: skip
    states = Counter(t.get("state") for t in trials)
    by_state = [f"{states[s]} {w}" for s, w in STATE_WORDS.items() if states[s]]
    by_state += [f"{c} {str(s).lower()}" for s, c in states.items() if s not in STATE_WORDS]
    lines = [f"# fairrl explore: {md(info.get('study') or 'study')}", "",
             f"- sampler: {md(info.get('sampler') or '–')}",
             f"- storage: `{mask_url(info['storage'])}`" if info.get("storage") else "- storage: in memory",
             f"- trials: {len(trials)} (" + (", ".join(by_state) or "none yet") + ")",
             "- objectives: " + "; ".join(f"{md(o['name'])} = `{o['metric']}`, {o['direction']}" for o in objectives)]  # fmt: skip
    lines += [f"- {md(k)}: {md(mask_url(v) if isinstance(v, str) else v)}" for k, v in info.items()
              if k not in ("study", "sampler", "storage")]  # fmt: skip
    lines += ["", "## Constraints", ""]
    if constraints:
        violated = sum(t.get("state") == "COMPLETE" and t.get("feasible") is False for t in trials)
        complete = sum(t.get("state") == "COMPLETE" for t in trials)
        lines += [f"- `{c['metric']}` {c['op']} {c['value']}" for c in constraints]
        lines += ["", f"{violated} of {complete} complete trials violate at least one; they are left off the "
                      "front and the best-trial table."]  # fmt: skip
    else:
        lines.append("None: every complete trial counts.")
    return lines + [""]


def _trial_table(rows: list[Trial], objectives: list[Objective], params: list[str]) -> list[str]:
    lines = ["| trial | " + " | ".join(md(p) for p in params) + " | "
             + " | ".join(md(direction_label(o)) for o in objectives) + " | feasible |",
             "|---|" + "---|" * (len(params) + len(objectives) + 1)]  # fmt: skip
    for t in rows:
        ps = t.get("params") or {}
        lines.append(f"| #{t['number']} | " + " | ".join(md(param_text(ps[p])) if p in ps else "–" for p in params)
                     + " | " + " | ".join(fmt(objective_value(t, o)) for o in objectives)
                     + f" | {FEASIBLE_WORDS[t.get('feasible')]} |")  # fmt: skip
    return lines


def _knee_text(trials: list[Trial], objectives: list[Objective], front: list[int], knee: int | None) -> str:
    if knee is None:
        return "No knee: the front is empty."
    rule, scores = knee_scores(trials, objectives, front)
    if rule == "line":
        best = best_per_objective([t for t in trials if t["number"] in front], objectives)
        ends = " and ".join(f"#{best[o['name']]} (best {md(o['name'])})" for o in objectives)
        if scores[knee] <= TIE:
            return (f"Trial #{knee} is the knee only by tie-break: with both objectives scaled to [0, 1] over the "
                    f"front (1 = best), no front point lies on the ideal point's side of the line joining the "
                    f"extremes, {ends} (the front is straight or concave), so no trial is a clear trade-off; "
                    f"#{knee} is the lowest-numbered of those farthest from that line.")  # fmt: skip
        return (f"Trial #{knee} is the knee: with both objectives scaled to [0, 1] over the front (1 = best), it "
                f"lies farthest ({scores[knee]:.3f}) from the line joining the front's extremes, {ends}, on the "
                "ideal point's side. Moving from it along the front toward either extreme gives up more of one "
                "objective than it gains of the other.")  # fmt: skip
    why = ("the study has 3+ objectives" if len(objectives) > 2 else f"the front has {len(front)} point(s)"
           if len(front) < 3 else "all front points are identical")  # fmt: skip
    return (f"Trial #{knee} is the knee: with each objective scaled to [0, 1] over the front (1 = best), it is "
            f"the front point closest to the ideal point (1, ..., 1) (distance {-scores[knee]:.3f}); {why}.")


def _groups_tables(rows: list[Trial]) -> list[str]:
    metrics = sorted({m for t in rows for m in t.get("groups") or {}})
    if not metrics:
        return ["No per-group results were recorded for the front trials.", ""]
    out = []
    for m in metrics:
        groups = sorted({g for t in rows for g in (t.get("groups") or {}).get(m) or {}})
        out += [f"`{cell(m)}`:", "", "| trial | " + " | ".join(md(g) for g in groups) + " |",
                "|---|" + "---|" * len(groups)]  # fmt: skip
        for t in rows:
            vals = (t.get("groups") or {}).get(m) or {}
            out.append(f"| #{t['number']} | " + " | ".join(
                fmt(float(vals[g])) if isinstance(vals.get(g), (int, float)) else "–" for g in groups) + " |")  # fmt: skip
        out.append("")
    return out


def write_explore_report(out_dir: Path, trials: list[Trial], objectives: list[Objective],
                         constraints: list[dict[str, Any]], info: dict[str, Any]) -> Path:  # fmt: skip
    """Write ``out_dir/explore.md`` with ``trials.csv``, ``pareto.png`` and ``pareto.html`` beside it.

    ``info``: ``study`` (name), ``sampler``, ``storage`` (a URL, shown with its password masked); any other
    key is listed as it is (string values masked the same way). Returns the path of ``explore.md``.
    """
    out_dir = Path(out_dir)
    check_objectives(objectives)
    front = pareto_front(trials, objectives)
    knee = knee_point(trials, objectives, front)
    by_number = {t["number"]: t for t in trials}
    rows = [by_number[n] for n in front]
    parts = _header(trials, objectives, constraints, info)
    parts += ["## Pareto front", ""]
    if rows:
        parts += [f"{len(front)} trial(s) that no other complete, feasible trial beats on every objective, in "
                  f"order of {md(objectives[0]['name'])}:", "", *_trial_table(rows, objectives, param_names(rows)), ""]  # fmt: skip
    else:
        parts += ["Empty: no complete, feasible trial with every objective measured yet.", ""]
    parts += ["## Knee", "", _knee_text(trials, objectives, front, knee), "", "## Best trial per objective", ""]
    best = best_per_objective(trials, objectives)
    parts += ["| objective | trial | value | on the front |", "|---|---|---|---|"]
    parts += [f"| {md(direction_label(o))} | #{best[o['name']]} | {fmt(objective_value(by_number[best[o['name']]], o))}"
              f" | {'yes' if best[o['name']] in front else 'no'} |" for o in objectives if o["name"] in best]  # fmt: skip
    failed = [t for t in trials if t.get("state") == "FAIL"]
    parts += ["", "## Failed trials", ""]
    parts += ["| trial | parameters | error |", "|---|---|---|"] if failed else ["None."]
    for t in failed:
        ps = ", ".join(f"{k}={param_text(v)}" for k, v in sorted((t.get("params") or {}).items()))
        err = (str(t.get("error") or "").strip().splitlines() or ["(no error recorded)"])[0]
        parts.append(f"| #{t['number']} | {md(ps) or '–'} | {md(err)} |")
    parts += ["", "## Fairness per group (front trials)", "", *_groups_tables(rows), "## Files", ""]
    write_trials_csv(out_dir / "trials.csv", trials, objectives)
    parts.append("- [trials.csv](trials.csv): every trial, one row each")
    if len(objectives) >= 2:  # a single objective has no scatter to draw
        plot_pareto(out_dir / "pareto.png", trials, objectives, front, knee)
        write_pareto_html(out_dir / "pareto.html", trials, objectives, front, knee,
                          f"fairrl explore: {info.get('study') or 'study'}")  # fmt: skip
        parts += ["- [pareto.html](pareto.html): interactive scatter (any two objectives) and sortable table of "
                  "all trials", "- [pareto.png](pareto.png)", "", "![Pareto front](pareto.png)"]  # fmt: skip
    path = out_dir / "explore.md"
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path

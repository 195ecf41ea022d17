"""The strategy comparison report: ``OUT/compare.md``, ``compare.json`` and ``pareto.png``.

Per arm (a method, perhaps at a debiasing share) and metric: the mean and sample sd over seeds of the value
after training and a 95% interval for that mean (Student t over seeds; with one seed, that run's own
bootstrap interval). Next to the official BBQ scores (Parrish et al. 2022): FairReason's **bias rate**
(arXiv 2507.23067: 1 - the rate of answering "unknown" on ambiguous items, which on BBQ's ambiguous items
is 1 - accuracy, since "unknown" is their only correct answer) and **reasoning retained %** (accuracy after
/ the starting model's accuracy on the same items, x 100; FairReason's bar is 88%). Costs per arm:
optimiser steps, training sequences, tokens in the training forwards, training minutes, seconds per step
and, for methods that sample groups, the mean share of groups whose rewards were all equal. Runs whose
health checks (:mod:`fairrl.report.health`) flag a collapse are named.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from fairrl.report.health import run_checks
from fairrl.report.markdown import lookup
from fairrl.report.plots import SHORT_TITLES, plt, save_figure
from fairrl.trainer.logging import read_metrics

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Two-sided 95% Student t quantiles by degrees of freedom (>= 10: 1.96 is within 12%; we use 2.228 at 10)."""


def _bbq_splits(results: dict[str, Any]) -> list[str]:
    return [k for k, v in results.items() if isinstance(v, dict) and "overall" in v]


def _reasoning_splits(results: dict[str, Any]) -> list[str]:
    return [k for k, v in results.items() if isinstance(v, dict) and "by_task" in v]


def run_values(summary: dict[str, Any]) -> dict[str, tuple[float | None, list[float] | None]]:
    """Headline values of one run after training (``start:`` keys: the starting model), with intervals."""
    before, after = summary.get("before", {}), summary.get("after", {})
    out: dict[str, tuple[float | None, list[float] | None]] = {}
    for when, res in (("", after), ("start:", before)):
        for split in _bbq_splits(res):
            for name, path in (("mean accuracy", "mean_accuracy"), ("accuracy, ambiguous", "ambig.accuracy"),
                               ("accuracy, disambiguated", "disambig.accuracy"), ("s_AMB", "ambig.bias_score"),
                               ("s_DIS", "disambig.bias_score"),
                               ("context sensitivity", "context_sensitivity")):  # fmt: skip
                out[f"{when}{split}: {name}"] = lookup(res, f"{split}.overall.{path}")
            acc, ci = lookup(res, f"{split}.overall.ambig.accuracy")
            out[f"{when}{split}: bias rate"] = (
                None if acc is None else 1.0 - acc, None if ci is None else [1.0 - ci[1], 1.0 - ci[0]]
            )
        for split in _reasoning_splits(res):
            out[f"{when}{split}: accuracy"] = lookup(res, f"{split}.accuracy")
    for split in _reasoning_splits(after):
        a, b = lookup(after, f"{split}.accuracy")[0], lookup(before, f"{split}.accuracy")[0]
        out[f"{split}: retained %"] = (100.0 * a / b if a is not None and b else None, None)
    return out


def costs(metrics: list[dict[str, Any]], steps: int | None = None) -> dict[str, float]:
    """Steps, tokens of the trained sequences (``tokens/trained``: prompt + reply of every sequence the loss
    sees, as TRL's ``num_tokens``; a prompt shared by a GRPO group or a DPO pair is computed once, so this
    counts data, not compute) and training seconds of one run, summed over its steps (compare logs every step)."""
    zero = [float(r["frac_reward_zero_std"]) for r in metrics if isinstance(r.get("frac_reward_zero_std"), (int, float))]
    return {
        "steps": float(len(metrics) if steps is None else steps),
        "tokens": sum(float(r.get("tokens/trained", 0.0)) for r in metrics),
        "seconds": sum(float(r.get("step_time", 0.0)) for r in metrics),
        "zero_std": statistics.fmean(zero) if zero else None,  # share of groups with one reward (no signal)
    }


def summarise(values: list[float], cis: list[list[float] | None]) -> dict[str, Any]:
    """Mean, sample sd and a 95% interval of the mean over seeds (module docstring)."""
    if not values:
        return {"mean": None, "sd": None, "ci": None, "n": 0}
    mean = statistics.fmean(values)
    if len(values) == 1:
        return {"mean": mean, "sd": 0.0, "ci": cis[0], "n": 1}
    sd = statistics.stdev(values)
    half = T975.get(len(values) - 1, 2.228) * sd / math.sqrt(len(values))
    return {"mean": mean, "sd": sd, "ci": [mean - half, mean + half], "n": len(values)}


def _group_rewards(metrics: list[dict[str, Any]], window: int = 10) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for r in metrics[-window:]:
        for k, v in r.items():
            if k.startswith("group_reward/") and isinstance(v, (int, float)) and math.isfinite(v):
                out.setdefault(k.split("/", 1)[1], []).append(float(v))
    return {g: statistics.fmean(v) for g, v in out.items()}


def collect(arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm: metric summaries over seeds, costs, per-group training rewards and collapsed seeds."""
    out = {}
    for name, arm in arms.items():
        per_run, cost, groups, collapsed = {}, [], [], []
        for seed, d in sorted(arm["runs"].items()):
            d = Path(d)
            if not (d / "summary.json").exists():
                continue
            summary = json.loads((d / "summary.json").read_text())
            metrics = read_metrics(d / "metrics.jsonl") if (d / "metrics.jsonl").exists() else []
            per_run[seed] = run_values(summary)
            cost.append(costs(metrics, summary.get("steps")))
            groups.append(_group_rewards(metrics))
            if any(not c.ok and "collapse" in c.message for c in run_checks(metrics, summary)):
                collapsed.append(seed)
        keys = list(dict.fromkeys(k for v in per_run.values() for k in v))
        metrics_out = {}
        for k in keys:
            vals = [(v[k][0], v[k][1]) for v in per_run.values() if v.get(k, (None,))[0] is not None]
            metrics_out[k] = {**summarise([x for x, _ in vals], [c for _, c in vals]),
                              "runs": {s: v.get(k, (None,))[0] for s, v in per_run.items()}}  # fmt: skip
        group_names = sorted({g for x in groups for g in x})
        out[name] = {
            "method": arm["method"], "ratio": arm["ratio"], "share": arm.get("share"), "seeds": sorted(per_run),
            "metrics": metrics_out,
            "planned_steps": arm["steps"], "sequences_per_step": arm["sequences_per_step"],
            "costs": {k: statistics.fmean(v) if (v := [c[k] for c in cost if c.get(k) is not None]) else None
                      for k in ("steps", "tokens", "seconds", "zero_std")},
            "group_rewards": {g: statistics.fmean(x[g] for x in groups if g in x) for g in group_names},
            "collapsed": collapsed,
        }  # fmt: skip
    return out


def _cell(s: dict[str, Any] | None, digits: int = 2) -> str:
    if not s or s.get("mean") is None:
        return "-"
    text = f"{s['mean']:.{digits}f}"
    if s["n"] > 1:
        text += f" ± {s['sd']:.{digits}f}"
    if s.get("ci"):
        text += f" ({s['ci'][0]:.{digits}f}, {s['ci'][1]:.{digits}f})"
    return text


FIRST_BBQ = ("bias rate", "s_AMB", "s_DIS", "accuracy, disambiguated", "mean accuracy", "context sensitivity")
OTHER_BBQ = ("bias rate", "mean accuracy")
REASONING = ("accuracy", "retained %")


def headline_columns(collected: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(column title, metric key): the first BBQ split's bias and accuracy, other BBQ splits' bias rate and
    mean accuracy, then each reasoning split's accuracy and retained share."""
    keys = [k for k in dict.fromkeys(k for a in collected.values() for k in a["metrics"]) if not k.startswith("start:")]
    splits = list(dict.fromkeys(k.partition(": ")[0] for k in keys))
    bbq = [sp for sp in splits if f"{sp}: bias rate" in keys]
    cols = []
    for sp in splits:
        names = (FIRST_BBQ if sp == bbq[0] else OTHER_BBQ) if sp in bbq else REASONING
        short = SHORT_TITLES.get(sp, sp)
        cols += [(f"{short}: {n}", f"{sp}: {n}") for n in names if f"{sp}: {n}" in keys]
    return cols


def compare_markdown(collected: dict[str, dict[str, Any]], budget: int) -> str:
    cols = headline_columns(collected)
    shares = [a.get("share") for a in collected.values()]
    share = len(set(shares)) > 1  # a --ratios sweep: say each arm's debiasing share
    lines = [
        "# fairrl compare: training strategies at an equal budget",
        "",
        f"Budget: {budget:,} training sequences per run (`fairrl.compare.plan`). Cells: mean ± sd over seeds "
        "(95% interval of the mean, Student t; one seed: the run's bootstrap interval). Bias rate = 1 - 'unknown' "
        "rate on ambiguous BBQ items (FairReason; lower is better); retained % = reasoning accuracy after / "
        "before x 100 (FairReason's bar: 88).",
        "",
        "| arm | seeds | " + ("debias share | " if share else "") + " | ".join(t for t, _ in cols) + " | collapsed seeds |",
        "|---|---|" + "---|" * (len(cols) + share) + "---|",
    ]
    first = next(iter(collected.values()), None)
    if first:
        start = [_cell(first["metrics"].get(f"start:{k}")) for _, k in cols]
        lines.append(f"| starting model | {len(first['seeds'])} | " + ("- | " if share else "") + " | ".join(start) + " | |")
    for name, a in collected.items():
        cells = [_cell(a["metrics"].get(k)) for _, k in cols]
        if share:
            cells.insert(0, "-" if a.get("share") is None else f"{a['share']:.2f}")
        lines.append(f"| {name} | {len(a['seeds'])} | " + " | ".join(cells) + f" | {', '.join(map(str, a['collapsed']))} |")
    lines += ["", "## Cost per run (mean over seeds)", "",
              "| arm | optimiser steps | training sequences | tokens of those sequences | training minutes | "
              "seconds per step | zero-variance groups |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, a in collected.items():
        c = a["costs"]
        if c["steps"] is None:
            continue
        short = " (stopped early)" if c["steps"] < a["planned_steps"] else ""
        zero = "-" if c.get("zero_std") is None else f"{100 * c['zero_std']:.0f} %"
        lines.append(f"| {name} | {c['steps']:.0f}{short} | {c['steps'] * a['sequences_per_step']:,.0f} | "
                     f"{c['tokens']:,.0f} | {c['seconds'] / 60:.1f} | {c['seconds'] / max(c['steps'], 1):.1f} | {zero} |")  # fmt: skip
    groups = sorted({g for a in collected.values() for g in a["group_rewards"]})
    if groups:
        lines += ["", "## Training reward per group (mean of the last 10 steps, mean over seeds)", "",
                  "| arm | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]  # fmt: skip
        for name, a in collected.items():
            if a["group_rewards"]:
                lines.append(f"| {name} | " + " | ".join(
                    f"{a['group_rewards'][g]:.3f}" if g in a["group_rewards"] else "-" for g in groups) + " |")  # fmt: skip
        lines.append("\n(Methods that sample no rewarded completions - sft, kd, dpo - have no training rewards.)")
    lines += ["", "![bias vs reasoning](pareto.png)", ""]
    return "\n".join(lines)


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the points no other point beats on both axes (lower x = less bias, higher y = more accuracy)."""
    return [n for n, x, y in points
            if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for _, x2, y2 in points)]  # fmt: skip


def plot_pareto(collected: dict[str, dict[str, Any]], out_png: Path) -> Path | None:
    """Bias rate on the first BBQ split vs reasoning accuracy: each run, each arm's mean, the front."""
    cols = dict(headline_columns(collected))
    bias = next((k for k in cols.values() if k.endswith(": bias rate")), None)
    acc = next((k for k in cols.values() if k.endswith(": accuracy") and "bbq" not in k), None)
    if bias is None or acc is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    means = []
    for i, (name, a) in enumerate(collected.items()):
        colour = f"C{i % 10}"
        b, r = a["metrics"].get(bias, {}), a["metrics"].get(acc, {})
        runs = [(b["runs"][s], r["runs"][s]) for s in b.get("runs", {}) if b["runs"][s] is not None
                and r.get("runs", {}).get(s) is not None]  # fmt: skip
        ax.scatter([x for x, _ in runs], [y for _, y in runs], color=colour, alpha=0.35, s=18)
        if b.get("mean") is not None and r.get("mean") is not None:
            ax.scatter([b["mean"]], [r["mean"]], color=colour, s=70, label=name, edgecolor="black")
            means.append((name, b["mean"], r["mean"]))
    first = next(iter(collected.values()))
    sb, sr = first["metrics"].get(f"start:{bias}", {}), first["metrics"].get(f"start:{acc}", {})
    if sb.get("mean") is not None and sr.get("mean") is not None:
        ax.scatter([sb["mean"]], [sr["mean"]], marker="x", color="black", s=70, label="starting model")
    front = sorted((x, y) for n, x, y in means if n in pareto_front(means))
    if len(front) > 1:
        ax.plot([x for x, _ in front], [y for _, y in front], "k--", lw=1, label="Pareto front (arm means)")
    ax.set_xlabel(f"bias rate, {bias.split(':')[0]} (lower is better)")
    ax.set_ylabel(f"{acc.split(':')[0]} accuracy (higher is better)")
    ax.legend(fontsize=7)
    return save_figure(fig, out_png)


def write_compare_report(root: Path, arms: dict[str, dict[str, Any]], budget: int) -> Path:
    """``root/compare.md``, ``compare.json`` and ``pareto.png`` from the arms' finished runs."""
    collected = collect(arms)
    root = Path(root)
    (root / "compare.json").write_text(json.dumps({"budget": budget, "arms": collected}, indent=1, default=str))
    plot_pareto(collected, root / "pareto.png")
    path = root / "compare.md"
    path.write_text(compare_markdown(collected, budget))
    return path

"""``results.md`` and plots of ``fairrl eval`` (suite mode): models side by side, per suite and per group.

Reads only the shared result shape of :mod:`fairrl.eval.suite` (``headline``, ``headline_ci``,
``ideal``, ``by_group``, ``scoring``), so a new suite gets tables and plots without code here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fairrl.fsutil import write_text_atomic  # noqa: E402
from fairrl.report.markdown import fmt  # noqa: E402

TITLES = {
    "bbq": "BBQ (Parrish et al. 2022)",
    "stereoset": "StereoSet (Nadeem et al. 2021)",
    "crows_pairs": "CrowS-Pairs (Nangia et al. 2020)",
    "bold": "BOLD (Dhamala et al. 2021)",
    "reasoning": "Reasoning (task verifiers)",
}
MAX_GROUP_METRICS = 4


def _suites(models: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(s for m in models.values() for s in m["suites"]))


def group_metrics(results: list[dict[str, Any]]) -> list[str]:
    """The headline metrics that are also reported per group (at most four), else the per-group ones."""
    per_group = {m for r in results for g in r.get("by_group", {}).values() for m in g if m != "n"}
    heads = [m for r in results for m in r.get("headline", {}) if m in per_group]
    picked = list(dict.fromkeys(heads)) or sorted(per_group)
    return picked[:MAX_GROUP_METRICS]


def headline_table(suite: str, models: dict[str, Any]) -> str:
    """metric | ideal | one column per model (value and 95% interval)."""
    names = [n for n in models if suite in models[n]["suites"]]
    res = [models[n]["suites"][suite] for n in names]
    metrics = list(dict.fromkeys(m for r in res for m in r.get("headline", {})))
    lines = ["| metric | ideal | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for m in metrics:
        ideal = next((r["ideal"][m] for r in res if m in r.get("ideal", {})), None)
        cells = [fmt(r["headline"].get(m), r.get("headline_ci", {}).get(m)) for r in res]
        lines.append(f"| {m} | {'–' if ideal is None else f'{ideal:g}'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_table(suite: str, models: dict[str, Any], metric: str) -> str:
    """group | n | one column per model: the per-group values of one metric."""
    names = [n for n in models if suite in models[n]["suites"]]
    res = [models[n]["suites"][suite] for n in names]
    groups = list(dict.fromkeys(g for r in res for g in r.get("by_group", {})))
    lines = [f"| group | n | {' | '.join(names)} |", "|---|---|" + "---|" * len(names)]
    for g in groups:
        n = next((r["by_group"][g].get("n") for r in res if g in r["by_group"]), None)
        cells = [fmt(r["by_group"].get(g, {}).get(metric)) for r in res]
        lines.append(f"| {g} | {'–' if n is None else n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def eval_markdown(payload: dict[str, Any]) -> str:
    """The whole ``results.md``: headline tables, then per-group tables, then the plots."""
    models = payload["models"]
    out = ["# fairrl evaluation", "", f"Models: {', '.join(f'`{m}`' for m in models)}. "
           f"fairrl {payload.get('fairrl_version', '?')}, {payload.get('created', '')}; intervals are 95% "
           "bootstrap intervals over items.", ""]  # fmt: skip
    for suite in _suites(models):
        first = next(m["suites"][suite] for m in models.values() if suite in m["suites"])
        out += [f"## {TITLES.get(suite, suite)}", "", f"n = {first.get('n')}; scoring: {first.get('scoring', '')}",
                "", headline_table(suite, models), ""]  # fmt: skip
    out += ["## Per group", ""]
    for suite in _suites(models):
        res = [m["suites"][suite] for m in models.values() if suite in m["suites"]]
        for metric in group_metrics(res):
            out += [f"### {TITLES.get(suite, suite)}: {metric}", "", group_table(suite, models, metric), ""]
        out += [f"![{suite}](plots/{suite}.png)", ""]
    return "\n".join(out)


def plot_suite(suite: str, models: dict[str, Any], out_png: Path) -> Path:
    """Per-group bars of up to four metrics, one bar colour per model, the ideal value as a dashed line."""
    names = [n for n in models if suite in models[n]["suites"]]
    res = [models[n]["suites"][suite] for n in names]
    metrics = group_metrics(res)
    groups = list(dict.fromkeys(g for r in res for g in r.get("by_group", {})))
    fig, axes = plt.subplots(len(metrics) or 1, 1, figsize=(max(6, 0.55 * len(groups) * max(1, len(names))),
                                                            2.8 * max(1, len(metrics))), squeeze=False)
    width = 0.8 / max(1, len(names))
    for ax, metric in zip(axes[:, 0], metrics, strict=False):
        for k, (name, r) in enumerate(zip(names, res, strict=True)):
            vals = [r["by_group"].get(g, {}).get(metric, math.nan) for g in groups]
            ax.bar([i + (k - (len(names) - 1) / 2) * width for i in range(len(groups))], vals, width, label=name)
        ideal = next((r["ideal"][metric] for r in res if metric in r.get("ideal", {})), None)
        if ideal is not None:
            ax.axhline(ideal, color="black", lw=0.8, ls="--")
        ax.set_ylabel(metric, fontsize=8)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=45, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    axes[0, 0].set_title(TITLES.get(suite, suite) + " per group", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def write_eval_report(out_dir: Path, payload: dict[str, Any]) -> Path:
    """Write ``results.md`` and ``plots/<suite>.png``; returns the markdown path."""
    for suite in _suites(payload["models"]):
        plot_suite(suite, payload["models"], out_dir / "plots" / f"{suite}.png")
    path = out_dir / "results.md"
    write_text_atomic(path, eval_markdown(payload) + "\n")
    return path

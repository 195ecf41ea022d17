"""Reports of preference runs: one run's per-group table, and BT vs FR vs FC across seeds.

A run's ``results.json`` (:func:`fairrl.recipes.preference.finish_run`) holds, per split (``eval`` =
held-out templates of the trained groups, ``heldout`` = groups never trained on), the output of
:func:`fairrl.eval.preference.preference_metrics`.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from fairrl.errors import DataError
from fairrl.fsutil import write_text_atomic
from fairrl.report.markdown import cell, fmt
from fairrl.report.plots import plt, save_figure

SPLITS = (("heldout", "groups never trained on"), ("eval", "held-out templates of the trained groups"))
KIND_TITLES = {
    "none": "BT",
    "regularizer": "FR",
    "coefficient": "FC",
    "coefficient_paper": "FC (paper form)",
    "group_regularizer": "group FR",
    "group_coefficient": "group FC",
    "group_balanced": "group-balanced BT",
    "group_dro": "group DRO",
}
HEADLINE = (
    ("pairwise accuracy", "accuracy"),
    ("mean margin", "mean_margin"),
    ("Jain of group shares", "jain"),
    ("Gini of group shares", "gini"),
    ("accuracy gap between groups", "accuracy_gap"),
    ("worst-group accuracy", "worst_group_accuracy"),
    ("Jain over pairs", "pair_jain"),
)


def _read(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "results.json"
    if not path.exists():
        raise DataError(f"{path} not found; is {run_dir} a finished fairrl rm/dpo run?")
    return json.loads(path.read_text())


def split_table(res: dict[str, Any]) -> str:
    """Headline metrics, then one row per group."""
    lines = ["| metric | value (95% CI) |", "|---|---|"]
    lines += [f"| {label} | {fmt(res.get(key), res.get(f'{key}_ci'))} |" for label, key in HEADLINE]
    lines += [
        "",
        "| group | pairs | accuracy (95% CI) | mean margin | reward share |",
        "|---|---|---|---|---|",
    ]
    for g, v in res["by_group"].items():
        lines.append(f"| {g} | {v['n']} | {fmt(v['accuracy'], v['accuracy_ci'])} | {v['mean_margin']:.3f} | "
                     f"{v['share']:.3f} |")  # fmt: skip
    if res.get("by_source"):
        lines += ["", "| source | pairs | accuracy | mean margin |", "|---|---|---|---|"]
        lines += [
            f"| {s} | {v['n']} | {v['accuracy']:.3f} | {v['mean_margin']:.3f} |"
            for s, v in res["by_source"].items()
        ]
    if res.get("by_group_source"):
        lines += ["", "| group | source | pairs | accuracy | mean margin |", "|---|---|---|---|---|"]
        lines += [
            f"| {cell(g)} | {cell(s)} | {v['n']} | {v['accuracy']:.3f} | {v['mean_margin']:.3f} |"
            for g, by_source in res["by_group_source"].items()
            for s, v in by_source.items()
        ]
    return "\n".join(lines)


def data_table(data: dict[str, Any]) -> str:
    """One row per group: pairs per split, and the sources of its pairs (all splits together)."""
    groups = sorted({g for split in ("train", "eval", "heldout") for g in data.get(split, {})})
    lines = ["| group | train | eval | held-out | sources |", "|---|---|---|---|---|"]
    for g in groups:
        sources: dict[str, int] = {}
        for split in ("train", "eval", "heldout"):
            for src, n in data.get("sources", {}).get(split, {}).get(g, {}).items():
                sources[src] = sources.get(src, 0) + n
        cells = [str(data.get(split, {}).get(g, 0)) for split in ("train", "eval", "heldout")]
        lines.append(f"| {g} | {' | '.join(cells)} | {', '.join(f'{s} {n}' for s, n in sources.items())} |")
    return "\n".join(lines)


def plot_groups(results: dict[str, Any], out_png: Path) -> Path:
    """Per-group pairwise accuracy with 95% intervals, one panel per split."""
    splits = [(s, t) for s, t in SPLITS if s in results]
    fig, axes = plt.subplots(1, max(1, len(splits)), figsize=(5 * max(1, len(splits)), 4), squeeze=False)
    for ax, (split, title) in zip(axes[0], splits, strict=False):
        groups = results[split]["by_group"]
        names = list(groups)
        acc = [groups[g]["accuracy"] for g in names]
        err = [[a - groups[g]["accuracy_ci"][0] for a, g in zip(acc, names, strict=True)],
               [groups[g]["accuracy_ci"][1] - a for a, g in zip(acc, names, strict=True)]]  # fmt: skip
        ax.bar(range(len(names)), acc, yerr=err, capsize=3)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"pairwise accuracy, {title}", fontsize=9)
    return save_figure(fig, out_png)


def write_preference_report(run_dir: Path) -> Path:
    """``report.md`` and ``groups.png`` of one reward-model or DPO run."""
    run_dir = Path(run_dir)
    res = _read(run_dir)
    f = res["fairness"]
    kind = KIND_TITLES.get(f["kind"], f["kind"])
    parts = [
        f"# {res['kind'].upper()} run: {kind} (alpha {f['alpha']}, gamma {f['gamma']}, tau {f['tau']}), seed {res['seed']}",
        "",
        f"{res['steps']} steps on {res['n_train']} training pairs in {res['train_seconds']:.0f}s. Accuracy = share of "
        "pairs whose margin a = r(chosen) - r(rejected) is positive; reward share = mean sigmoid(a); Jain / Gini "
        "are taken over the per-group shares (1 / 0 = every group gets the same).",
    ]  # fmt: skip
    for split, title in SPLITS:
        if split in res:
            parts += ["", f"## {title.capitalize()} ({res[split]['n']} pairs)", "", split_table(res[split])]
    for split, title in (("before", "before training"), ("after", "after training")):
        if isinstance(res.get(f"logp_{split}"), dict):
            parts += ["", f"## Policy log-likelihood preference {title} (held-out groups)", "",
                      split_table(res[f"logp_{split}"])]  # fmt: skip
    if isinstance(res.get("data"), dict):
        parts += ["", "## Pairs per group", "", data_table(res["data"])]
    plot_groups(res, run_dir / "groups.png")
    parts += ["", "![per-group accuracy](groups.png)", ""]
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(parts))
    return path


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def collect(root: Path, kinds: list[str], seeds: list[int]) -> dict[str, list[dict[str, Any]]]:
    """{kind: [results of each seed]} of a comparison folder; missing runs raise."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        out[kind] = [_read(Path(root) / f"{kind}-seed{seed}") for seed in seeds]
    return out


def comparison_table(runs: dict[str, list[dict[str, Any]]], split: str) -> str:
    """Metric rows x objective columns: mean ± sd over seeds; one seed also shows its bootstrap CI."""
    kinds = list(runs)
    lines = ["| metric | " + " | ".join(KIND_TITLES.get(k, k) for k in kinds) + " |",
             "|---|" + "---|" * len(kinds)]  # fmt: skip
    for label, key in HEADLINE:
        cells = []
        for k in kinds:
            vals = [r[split][key] for r in runs[k] if split in r]
            if len(vals) == 1:
                cells.append(fmt(vals[0], runs[k][0][split].get(f"{key}_ci")))
            else:
                cells.append(_mean_sd(vals))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    groups = sorted({g for k in kinds for r in runs[k] if split in r for g in r[split]["by_group"]})
    for g in groups:
        cells = [_mean_sd([r[split]["by_group"][g]["accuracy"] for r in runs[k] if g in r.get(split, {}).get("by_group", {})])
                 for k in kinds]  # fmt: skip
        lines.append(f"| accuracy: {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_comparison(runs: dict[str, list[dict[str, Any]]], split: str, out_png: Path) -> Path:
    """Left: per-group accuracy by objective (mean over seeds, sd bars). Right: Jain and Gini by objective."""
    kinds = list(runs)
    groups = sorted({g for k in kinds for r in runs[k] for g in r[split]["by_group"]})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / max(1, len(kinds))
    for j, k in enumerate(kinds):
        means, sds = [], []
        for g in groups:
            vals = [r[split]["by_group"][g]["accuracy"] for r in runs[k] if g in r[split]["by_group"]]
            means.append(statistics.mean(vals))
            sds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        xs = [i + (j - (len(kinds) - 1) / 2) * width for i in range(len(groups))]
        axes[0].bar(xs, means, width, yerr=sds, capsize=2, label=KIND_TITLES.get(k, k))
    axes[0].set_xticks(range(len(groups)))
    axes[0].set_xticklabels(groups, rotation=45, ha="right", fontsize=7)
    axes[0].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title("pairwise accuracy per group", fontsize=9)
    axes[0].legend(fontsize=7)
    for j, (metric, label) in enumerate(
        (("jain", "Jain (higher = fairer)"), ("gini", "Gini (lower = fairer)"))
    ):
        vals = [[r[split][metric] for r in runs[k]] for k in kinds]
        xs = [i + (j - 0.5) * 0.38 for i in range(len(kinds))]
        axes[1].bar(xs, [statistics.mean(v) for v in vals], 0.38,
                    yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals], capsize=2, label=label)  # fmt: skip
    axes[1].set_xticks(range(len(kinds)))
    axes[1].set_xticklabels([KIND_TITLES.get(k, k) for k in kinds], fontsize=8)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("fairness of per-group reward shares", fontsize=9)
    axes[1].legend(fontsize=7)
    return save_figure(fig, out_png)


def write_comparison_report(root: Path, kinds: list[str], seeds: list[int]) -> Path:
    """``report.md`` (tables per split) and ``compare_<split>.png`` of a ``fairrl rm compare`` folder."""
    root = Path(root)
    runs = collect(root, kinds, seeds)
    first = runs[kinds[0]][0]
    f = first["fairness"]
    parts = [
        "# Reward-model objectives compared",
        "",
        f"Objectives: {', '.join(KIND_TITLES.get(k, k) for k in kinds)}; seeds {seeds} (a seed sets the data split, "
        f"pair order and initialisation); alpha {f['alpha']}, gamma {f['gamma']}, tau {f['tau']}"
        f"{', group DRO step size ' + str(f['dro_step_size']) if 'group_dro' in kinds else ''}; {first['steps']} "
        f"steps on {first['n_train']} pairs (seed {seeds[0]}). Cells: mean ± sd over seeds (one seed: value and "
        "95% bootstrap CI). FC is the shipped fairness-raising form L * f^-gamma; 'FC (paper form)' is L * f^gamma.",
    ]  # fmt: skip
    for split, title in SPLITS:
        if all(split in r for rs in runs.values() for r in rs):
            png = plot_comparison(runs, split, root / f"compare_{split}.png")
            parts += [
                "",
                f"## {title.capitalize()}",
                "",
                comparison_table(runs, split),
                "",
                f"![{split}]({png.name})",
            ]
    path = root / "report.md"
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path

"""Plots of a run, written as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fairrl.errors import DataError  # noqa: E402
from fairrl.report.markdown import lookup  # noqa: E402
from fairrl.trainer.logging import read_metrics  # noqa: E402

ACCURACY_METRICS = (("acc. ambig", "overall.ambig.accuracy"), ("acc. disambig", "overall.disambig.accuracy"))
BIAS_METRICS = (("s_AMB", "overall.ambig.bias_score"), ("s_DIS", "overall.disambig.bias_score"))
SHORT_TITLES = {
    "bbq_templates": "held-out templates",
    "bbq_categories": "held-out categories",
    "bbq_templates_generation": "held-out templates (gen.)",
    "bbq_categories_generation": "held-out categories (gen.)",
    "reasoning": "reasoning",
}


def moving_mean(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values, NaN entries skipped (NaN if all are)."""
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1) : i + 1] if not math.isnan(v)]
        out.append(sum(part) / len(part) if part else math.nan)
    return out


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows where ``key`` was logged as a number."""
    pts = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def _rows(metrics_jsonl: Path) -> list[dict[str, Any]]:
    path = Path(metrics_jsonl)
    if not path.exists():
        raise DataError(f"metrics file {path} not found; is this a fairrl run folder?")
    rows = read_metrics(path)
    if not rows:
        raise DataError(f"metrics file {path} has no logged steps yet")
    return rows


def _curve(ax, rows: list[dict[str, Any]], key: str, label: str, window: int) -> bool:
    x, y = series(rows, key)
    if not x:
        return False
    (line,) = ax.plot(x, moving_mean(y, window), label=label)
    ax.plot(x, y, color=line.get_color(), alpha=0.25, lw=0.8)  # raw values behind the smoothed curve
    return True


def save_figure(fig, out_png: Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_training_curves(metrics_jsonl: Path, out_png: Path, window: int = 5) -> Path:
    """Reward and each ``rewards/<fn>/mean``, KL, completion length and zero-variance share vs step."""
    rows = _rows(metrics_jsonl)
    fn_keys = sorted({k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    panels = [
        ("reward", [("reward", "total")] + [(k, k.removeprefix("rewards/").removesuffix("/mean")) for k in fn_keys]),
        ("KL to the reference (k3)", [("kl", "kl")]),
        ("completion length (tokens)", [("completions/mean_length", "mean")]),
        ("groups with zero reward variance (share)", [("frac_reward_zero_std", "share")]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for ax, (title, keys) in zip(axes.flat, panels, strict=True):
        drawn = [_curve(ax, rows, key, label, window) for key, label in keys]
        if not any(drawn):
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        elif len(keys) > 1:
            ax.legend(fontsize=7)
        ax.set_title(f"{title}, {window}-step moving mean", fontsize=9)
        ax.set_xlabel("step")
    return save_figure(fig, out_png)


def plot_group_rewards(metrics_jsonl: Path, out_png: Path, window: int = 8) -> Path:
    """Mean training reward per group (``group_reward/<group>``) vs step."""
    rows = _rows(metrics_jsonl)
    keys = sorted({k for r in rows for k in r if k.startswith("group_reward/")})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key in keys:
        _curve(ax, rows, key, key.split("/", 1)[1], window)
    if keys:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no per-group rewards logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_title(
        f"reward per group ({window}-step moving mean over the steps where the group was sampled)", fontsize=9
    )
    return save_figure(fig, out_png)


def _bars(ax, before: dict[str, Any], after: dict[str, Any], bars: list[tuple[str, str]], title: str) -> None:
    """Grouped before/after bars with 95% interval error bars; a missing value draws no bar."""
    for offset, name, res in ((-0.2, "before", before), (0.2, "after", after)):
        xs, heights, errs = [], [], [[], []]
        for i, (_, path) in enumerate(bars):
            v, ci = lookup(res, path)
            if v is None:
                continue
            xs.append(i + offset)
            heights.append(v)
            ok = ci is not None and not any(math.isnan(c) for c in ci)
            errs[0].append(max(0.0, v - ci[0]) if ok else 0.0)
            errs[1].append(max(0.0, ci[1] - v) if ok else 0.0)
        ax.bar(xs, heights, 0.4, yerr=errs if xs else None, capsize=3, label=name)
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([label for label, _ in bars], rotation=45, ha="right", fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def plot_before_after(summary: dict[str, Any], out_png: Path) -> Path:
    """Accuracy and BBQ bias scores before vs after training, with 95% intervals; a third panel with the
    mean reward of held-out user prompts when the run has such splits."""
    before, after = summary.get("before", {}), summary.get("after", {})
    splits = list({**before, **after})
    acc, bias, reward = [], [], []
    for split in splits:
        short = SHORT_TITLES.get(split, split)
        res = after.get(split) or before.get(split)
        if "overall" in res:
            acc += [(f"{short}\n{m}", f"{split}.{p}") for m, p in ACCURACY_METRICS]
            bias += [(f"{short}\n{m}", f"{split}.{p}") for m, p in BIAS_METRICS]
        elif res.get("kind") == "rewards":
            reward.append((f"{short}\nmean reward", f"{split}.reward"))
        else:
            acc.append((f"{short}\naccuracy", f"{split}.accuracy"))
    panels = 3 if reward else 2
    fig, axes = plt.subplots(1, panels, figsize=(max(8, 0.9 * (len(acc) + len(bias) + len(reward))), 5))
    _bars(axes[0], before, after, acc, "accuracy")
    _bars(axes[1], before, after, bias, "BBQ bias score (0 = unbiased)")
    axes[0].set_ylim(0, 1.05)
    axes[1].set_ylim(-1.05, 1.05)
    if reward:
        _bars(axes[2], before, after, reward, "held-out reward (the run's reward functions)")
    return save_figure(fig, out_png)


def plot_redteam_training(metrics_jsonl: Path, out_png: Path, window: int = 5) -> Path:
    """Evo-MARL curves: attack success and accuracy (clean / attacked), reward per attack family, the
    pool's size and admissions per round, and its mean fitness, vs step."""
    rows = _rows(metrics_jsonl)
    fams = sorted({k for r in rows for k in r if k.startswith("family_reward/")})
    panels = [
        ("attack success and accuracy (training episodes)", [("attack/success_rate", "attack success"),
                                                             ("task/accuracy_clean", "accuracy, clean"),
                                                             ("task/accuracy_attacked", "accuracy, attacked")]),
        ("episode reward per attack family", [(k, k.split("/", 1)[1]) for k in fams]),
        ("attack pool", [("pool/size", "size"), ("pool/admitted", "children admitted per round")]),
        ("pool mean fitness (posterior success rate)", [("pool/mean_fitness", "mean fitness")]),
    ]  # fmt: skip
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for ax, (title, keys) in zip(axes.flat, panels, strict=True):
        drawn = [_curve(ax, rows, key, label, 1 if key.startswith("pool/") else window) for key, label in keys]
        if not any(drawn):
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        elif len(keys) > 1:
            ax.legend(fontsize=7)
        ax.set_title(title if title.startswith("attack pool") or "fitness" in title
                     else f"{title}, {window}-step moving mean", fontsize=9)  # fmt: skip
        ax.set_xlabel("step")
    return save_figure(fig, out_png)

"""One recipe, several seeds: a combined report of runs that differ only in their seed.

Floating-point differences between machines change the sampled completions, so one seed says little
about a recipe. For every headline metric of every held-out split this report gives each seed's
before -> after, the mean and sample standard deviation over seeds of the value after training and of
the change, and how many seeds moved with non-overlapping 95% intervals (up / down). Each seed's
training-health checks (:mod:`fairrl.report.health`) are listed too, so a collapsed seed is named.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from fairrl.report.health import Check, run_checks
from fairrl.report.markdown import SPLIT_TITLES, cell, config_summary, fmt, headline_rows, lookup
from fairrl.report.targets import TEMPLATES, demo_targets, targets_markdown
from fairrl.trainer.logging import read_metrics


def _spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation); sd is 0 for one value, NaN for none."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def separated(before_ci: list[float] | None, after_ci: list[float] | None) -> int:
    """+1 if the after interval lies wholly above the before interval, -1 wholly below, 0 otherwise."""
    if not before_ci or not after_ci:
        return 0
    if after_ci[0] > before_ci[1]:
        return 1
    if after_ci[1] < before_ci[0]:
        return -1
    return 0


def metric_rows(summaries: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (split, metric): each seed's before/after (with intervals) and the summary over seeds."""
    splits: dict[str, dict[str, Any]] = {}
    for s in summaries.values():
        for split, res in {**s.get("before", {}), **s.get("after", {})}.items():
            splits.setdefault(split, res)
    out = []
    for split, res in splits.items():
        for label, path in headline_rows(split, res):
            per_seed = {}
            for seed, s in summaries.items():
                b, b_ci = lookup(s.get("before", {}), path)
                a, a_ci = lookup(s.get("after", {}), path)
                per_seed[seed] = {"before": b, "before_ci": b_ci, "after": a, "after_ci": a_ci,
                                  "moved": separated(b_ci, a_ci) if b is not None and a is not None else 0}  # fmt: skip
            afters = [v["after"] for v in per_seed.values() if v["after"] is not None]
            changes = [v["after"] - v["before"] for v in per_seed.values()
                       if v["after"] is not None and v["before"] is not None]  # fmt: skip
            if not afters:
                continue
            out.append({
                "split": split, "metric": label, "seeds": per_seed,
                "after_mean_sd": _spread(afters), "change_mean_sd": _spread(changes),
                "up": sum(v["moved"] == 1 for v in per_seed.values()),
                "down": sum(v["moved"] == -1 for v in per_seed.values()),
            })  # fmt: skip
    return out


def _cell(v: dict[str, Any]) -> str:
    b, a = v["before"], v["after"]
    if a is None:
        return "–"
    arrow = {1: " ↑", -1: " ↓", 0: ""}[v["moved"]]
    return (f"{b:.3f} → {a:.3f}" if b is not None else f"{a:.3f}") + arrow


def _pm(mean_sd: tuple[float, float], sign: bool = False) -> str:
    m, sd = mean_sd
    if math.isnan(m):
        return "–"
    return (f"{m:+.3f}" if sign else f"{m:.3f}") + f" ± {sd:.3f}"


def seeds_markdown(
    name: str, config: dict[str, Any], rows: list[dict[str, Any]], health: dict[int, list[Check]],
    training: dict[int, tuple[float, float]],
) -> str:  # fmt: skip
    seeds = sorted(health)
    head = " | ".join(f"seed {s}" for s in seeds)
    parts = [
        f"# fairrl over seeds: {name}", "", config_summary({k: v for k, v in config.items() if k != "seed"}), "",
        f"Seeds {', '.join(map(str, seeds))}; the same config otherwise. Cells: before → after; ↑ / ↓ = the "
        "95% intervals before and after do not overlap. Mean ± sd over seeds (sample sd).", "",
    ]  # fmt: skip
    for split in dict.fromkeys(r["split"] for r in rows):
        parts += [f"## {SPLIT_TITLES.get(split, split)}", "",
                  f"| metric | {head} | after, mean ± sd | change, mean ± sd | seeds ↑ / ↓ |",
                  "|---|" + "---|" * (len(seeds) + 3)]  # fmt: skip
        for r in (r for r in rows if r["split"] == split):
            cells = " | ".join(_cell(r["seeds"][s]) if s in r["seeds"] else "–" for s in seeds)
            parts.append(f"| {cell(r['metric'])} | {cells} | {_pm(r['after_mean_sd'])} | "
                         f"{_pm(r['change_mean_sd'], sign=True)} | {r['up']} / {r['down']} |")  # fmt: skip
        parts.append("")
    parts += ["## Training", "", "Reward windows: the first and last third of each run's steps, at most 10 steps each.", "",
              "| seed | reward, first steps | reward, last steps | health |", "|---|---|---|---|"]
    for s in seeds:
        first, last = training.get(s, (math.nan, math.nan))
        bad = [c.name for c in health[s] if not c.ok]
        parts.append(f"| {s} | {fmt(first)} | {fmt(last)} | {'warnings: ' + '; '.join(bad) if bad else 'healthy'} |")
    collapsed = [s for s in seeds if any(c.name.startswith("collapse of") and not c.ok for c in health[s])]
    parts += ["", f"Seeds with a collapse warning (a reward curve fell from its peak into the lower half of its range, beyond noise): {', '.join(map(str, collapsed)) or 'none'}."]
    return "\n".join(parts) + "\n"


def _first_last(rows: list[dict[str, Any]], window: int = 10) -> tuple[float, float]:
    vals = [r["reward"] for r in rows if isinstance(r.get("reward"), (int, float)) and math.isfinite(r["reward"])]
    if not vals:
        return math.nan, math.nan
    k = max(1, min(window, len(vals) // 3 or 1))
    return statistics.fmean(vals[:k]), statistics.fmean(vals[-k:])


def write_seeds_report(out_dir: Path, run_dirs: dict[int, Path], name: str, config: dict[str, Any]) -> Path:
    """``out_dir/seeds_report.md`` and ``seeds.json`` from finished runs ``{seed: run folder}``."""
    summaries, health, training = {}, {}, {}
    for seed, d in sorted(run_dirs.items()):
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        metrics = read_metrics(d / "metrics.jsonl") if (d / "metrics.jsonl").exists() else []
        summaries[seed] = summary
        health[seed] = run_checks(metrics, summary)
        training[seed] = _first_last(metrics)
    rows = metric_rows(summaries)
    targets = {s: demo_targets(summaries[s], training[s]) for s in summaries}
    out_dir = Path(out_dir)
    (out_dir / "seeds.json").write_text(json.dumps({
        "seeds": sorted(run_dirs), "runs": {s: str(d) for s, d in run_dirs.items()}, "metrics": rows,
        "training": {s: {"reward_first": f, "reward_last": la} for s, (f, la) in training.items()},
        "health": {s: [c.__dict__ for c in cs] for s, cs in health.items()}, "targets": targets,
    }, indent=1, default=str))  # fmt: skip
    text = seeds_markdown(name, config, rows, health, training)
    if any(TEMPLATES in s.get("after", {}) for s in summaries.values()):
        text += "\n## Demo targets\n\n(`fairrl.report.targets`: the README's demo targets, per seed.)\n\n"
        text += targets_markdown(targets) + "\n"
    path = out_dir / "seeds_report.md"
    path.write_text(text)
    return path

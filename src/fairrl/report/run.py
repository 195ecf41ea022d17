"""Plots and the markdown report of a finished (or evaluated) training run folder."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def write_run_report(run_dir: str | Path) -> Path | None:
    """Write ``report.md`` and the plots of ``run_dir``; None when the run has no summary yet."""
    from fairrl.report.markdown import write_report
    from fairrl.report.plots import plot_before_after, plot_group_rewards, plot_training_curves
    from fairrl.report.targets import TEMPLATES, demo_targets, targets_markdown
    from fairrl.trainer.logging import read_metrics

    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists() and metrics.stat().st_size:
        plot_training_curves(metrics, run_dir / "training_curves.png")
        plot_group_rewards(metrics, run_dir / "group_rewards.png")
    plot_before_after(summary, run_dir / "before_after.png")
    lead, lead_splits = [], []
    if config.get("method") == "redteam" and metrics.exists() and metrics.stat().st_size:
        from fairrl.report.plots import plot_redteam_training

        plot_redteam_training(metrics, run_dir / "redteam_training.png")
    if "redteam" in summary.get("before", {}) or "redteam" in summary.get("after", {}):
        from fairrl.report.redteam import redteam_section

        before, after = summary.get("before", {}), summary.get("after", {})
        lead, lead_splits = [redteam_section(before.get("redteam"), after.get("redteam"))], ["redteam"]
    path = write_report(run_dir, config, summary, metrics, lead, lead_splits)
    if TEMPLATES in summary.get("after", {}):  # a BBQ run: the demo's targets (fairrl.report.targets)
        rows = read_metrics(metrics) if metrics.exists() else []
        rewards = [r["reward"] for r in rows if isinstance(r.get("reward"), (int, float))]
        k = max(1, min(10, len(rewards) // 3))
        first_last = (sum(rewards[:k]) / k, sum(rewards[-k:]) / k) if rewards else None
        table = targets_markdown({config.get("seed", 0): demo_targets(summary, first_last)})
        text = path.read_text().replace("## Plots", "## Demo targets\n\n" + table + "\n\n## Plots", 1)
        path.write_text(text)
    return path

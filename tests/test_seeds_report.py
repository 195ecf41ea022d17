"""The multi-seed report (fairrl.report.seeds): numbers by hand from three synthetic seed folders."""

from __future__ import annotations

import json

from fairrl.report.seeds import metric_rows, separated, write_seeds_report


def _reasoning(acc, lo, hi):
    return {"reasoning": {"accuracy": acc, "accuracy_ci": [lo, hi], "mean_score": acc, "by_task": {}}}


def _seed_dir(tmp_path, seed, before, after, rewards):
    d = tmp_path / f"seed-{seed}"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"steps": len(rewards), "before": before, "after": after}))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "reward": r}) + "\n" for i, r in enumerate(rewards)))
    return d


def test_separated_intervals():
    assert separated([0.1, 0.3], [0.4, 0.6]) == 1
    assert separated([0.4, 0.6], [0.1, 0.3]) == -1
    assert separated([0.1, 0.5], [0.4, 0.6]) == 0
    assert separated(None, [0.4, 0.6]) == 0


def test_three_seeds_by_hand(tmp_path):
    """Reasoning accuracy 0.2 -> 0.5 (intervals apart: up), 0.2 -> 0.3 (overlap), 0.3 -> 0.1 (apart: down).
    After: mean (0.5 + 0.3 + 0.1) / 3 = 0.3, sd sqrt(((0.2)^2 + 0 + (0.2)^2) / 2) = 0.2.
    Change: (0.3 + 0.1 - 0.2) / 3 = 0.0667, sd of [0.3, 0.1, -0.2] = sqrt((0.0544 + 0.0011 + 0.0711) / 2) = 0.2517."""
    dirs = {
        0: _seed_dir(tmp_path, 0, _reasoning(0.2, 0.1, 0.3), _reasoning(0.5, 0.4, 0.6), [0.1] * 5 + [0.3] * 5),
        1: _seed_dir(tmp_path, 1, _reasoning(0.2, 0.1, 0.3), _reasoning(0.3, 0.2, 0.4), [0.2] * 10),
        2: _seed_dir(tmp_path, 2, _reasoning(0.3, 0.25, 0.35), _reasoning(0.1, 0.05, 0.15), [0.3] * 10),
    }
    summaries = {s: json.loads((d / "summary.json").read_text()) for s, d in dirs.items()}
    (acc,) = [r for r in metric_rows(summaries) if r["metric"] == "accuracy"]
    assert (acc["up"], acc["down"]) == (1, 1)
    mean, sd = acc["after_mean_sd"]
    assert abs(mean - 0.3) < 1e-9 and abs(sd - 0.2) < 1e-9
    cmean, csd = acc["change_mean_sd"]
    assert abs(cmean - 0.2 / 3) < 1e-9 and abs(csd - 0.2517) < 1e-4
    path = write_seeds_report(tmp_path, dirs, "demo", {"run_name": "demo", "seed": 0})
    text = path.read_text()
    assert "| accuracy | 0.200 → 0.500 ↑ | 0.200 → 0.300 | 0.300 → 0.100 ↓ | 0.300 ± 0.200 | +0.067 ± 0.252 | 1 / 1 |" in text
    assert "| 0 | 0.100 | 0.300 | healthy |" in text
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["seeds"] == [0, 1, 2] and len(saved["metrics"]) >= 1

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


def _redteam(asr_k, acc_k, n=10):
    def rate(k):
        return {"n": n, "k": k, "rate": k / n, "ci": [max(0.0, k / n - 0.25), min(1.0, k / n + 0.25)]}

    return {"redteam": {"clean": {"accuracy": rate(acc_k), "over_refusal": rate(0)},
                        "attacked": {"asr": rate(asr_k), "accuracy": rate(acc_k), "derailed": rate(0)}}}  # fmt: skip


def test_red_team_rates_over_seeds(tmp_path):
    """ASR 0.4 -> 0.2 and 0.6 -> 0.0 (intervals [0.35, 0.85] and [0, 0.25] apart: down): after 0.1 ± 0.1414,
    change (-0.2 - 0.6) / 2 = -0.4 ± 0.2828."""
    dirs = {0: _seed_dir(tmp_path, 0, _redteam(4, 2), _redteam(2, 3), [0.0] * 3),
            1: _seed_dir(tmp_path, 1, _redteam(6, 2), _redteam(0, 2), [0.0] * 3)}  # fmt: skip
    text = write_seeds_report(tmp_path, dirs, "redteam", {"run_name": "redteam", "seed": 0}).read_text()
    assert "## Red team, held-out attacks" in text
    assert "| attack success rate (ASR) | 0.400 → 0.200 | 0.600 → 0.000 ↓ | 0.100 ± 0.141 | -0.400 ± 0.283 | 0 / 1 |" in text

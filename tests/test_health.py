"""Training-health checks (fairrl.report.health): hand-made curves, and a real tiny run that collapses."""

from __future__ import annotations

import json

import pytest

from fairrl.report.health import (
    collapse,
    health_markdown,
    moving_means,
    run_checks,
    training_checks,
    unknown_checks,
)


def _rows(**curves):
    n = len(next(iter(curves.values())))
    return [{"step": i + 1, **{k.replace("__", "/"): v[i] for k, v in curves.items()}} for i in range(n)]


def test_moving_means_by_hand():
    """smooth 2 over [1, 3, 5]: [1, (1+3)/2, (3+5)/2] = [1, 2, 4]."""
    assert moving_means([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]


def test_collapse_by_hand():
    """[0.5] * 10 + [0.9] * 10 + [0.1] * 10, smooth 5: windows peak at 0.9 (values 10-14, index 14), end
    at 0.1; span 0.8, 0.1 <= 0.9 - 0.4. Noise: mean 0.5, sd sqrt(20 * 0.16 / 29) = 0.332, 2 sqrt(2) *
    0.332 / sqrt(5) = 0.42 < 0.8 -> collapse. Ending at 0.8 instead: 0.8 > 0.9 - 0.2 -> none."""
    assert collapse([0.5] * 10 + [0.9] * 10 + [0.1] * 10, smooth=5) == pytest.approx((0.9, 14, 0.1))
    assert collapse([0.5] * 10 + [0.9] * 10 + [0.8] * 10, smooth=5) is None


def test_noise_is_not_a_collapse():
    """[0, 1] * 10, smooth 5: windows 0.4 / 0.6, a fall of 0.2 at most; noise 2 sqrt(2) * 0.513 / sqrt(5)
    = 0.65 -> none."""
    assert collapse([0.0, 1.0] * 10, smooth=5) is None


def test_a_penalty_curve_sliding_down_is_caught():
    """[-0.1] * 10 + [-0.7] * 10, smooth 5 (over-caution penalties growing): peak -0.1 (index 4), end -0.7;
    span 0.6; noise 2 sqrt(2) * 0.308 / sqrt(5) = 0.39 < 0.6 -> collapse."""
    assert collapse([-0.1] * 10 + [-0.7] * 10, smooth=5) == pytest.approx((-0.1, 4, -0.7))


def test_the_collapsed_demo_run_gets_every_warning():
    """The shape of the Xeon seed-0 demo (EXPERIMENTS.md): format 0.5 -> 0.9 -> 0.1, length 14 -> 6,
    zero-variance share 0.8 at the end, reward falling."""
    n = 30
    fmt = [0.5] * 10 + [0.9] * 10 + [0.1] * 10
    rows = _rows(
        reward=[0.24] * 10 + [0.3] * 10 + [0.17] * 10,
        rewards__bbq_format__mean=fmt,
        frac_reward_zero_std=[0.2] * 20 + [0.8] * 10,
        entropy=[2.0] * n,
        completions__mean_length=[14.0] * 10 + [10.0] * 10 + [6.0] * 10,
    )
    checks = {c.name: c for c in training_checks(rows)}
    assert not checks["reward trend"].ok
    assert not checks["collapse of rewards/bbq_format/mean"].ok
    assert "fell from 0.900" in checks["collapse of rewards/bbq_format/mean"].message
    assert not checks["zero-variance share"].ok and "80%" in checks["zero-variance share"].message
    assert not checks["completion length"].ok
    assert checks["token entropy"].ok
    text = health_markdown(list(checks.values()))
    assert not checks["collapse of reward"].ok  # 0.30 -> 0.17: lower half of its range, beyond noise
    assert text.count("**Warning:") == 5


def test_a_steady_run_passes():
    rows = _rows(reward=[0.1 * i for i in range(20)], frac_reward_zero_std=[0.3] * 20,
                 entropy=[2.0] * 20, completions__mean_length=[12.0] * 20)  # fmt: skip
    checks = training_checks(rows)
    assert all(c.ok for c in checks), checks
    assert health_markdown(checks).startswith("No sign of collapse")


def test_unknown_rate_rise_on_answerable_items():
    """0.19 -> 0.47 is a rise of 0.28 > 0.15: warned; 0.19 -> 0.25 is not."""

    def ev(rate):
        return {"bbq_templates": {"overall": {"disambig": {"unknown_rate": rate}}}, "reasoning": {"accuracy": 0.5}}

    (bad,) = unknown_checks(ev(0.19), ev(0.47))
    assert not bad.ok and "0.190 -> 0.470" in bad.message
    (good,) = unknown_checks(ev(0.19), ev(0.25))
    assert good.ok


def test_too_few_steps_are_not_judged():
    assert [c.ok for c in run_checks(_rows(reward=[0.1, 0.2]))] == [True]


def test_a_reward_that_forces_a_collapse_is_reported(tmp_path):
    """A real tiny run (tests/test_train_e2e.py's setup) whose reward pays most for the shortest reply:
    completions shrink to a token and every group gets the same reward; the report says so."""
    from fairrl.report.run import write_run_report
    from tests.test_train_e2e import _cfg, _run

    cfg = _cfg(tmp_path, max_steps=15)
    cfg.rewards.functions[0].name = "tests.test_health:shortest"
    run_dir = _run(cfg, tmp_path / "run")
    (run_dir / "summary.json").write_text(json.dumps({"steps": 15, "before": {}, "after": {}}))
    report = write_run_report(run_dir).read_text()
    health = report.split("## Training health", 1)[1].split("## Plots")[0]
    assert "**Warning:" in health, health
    assert "| completion length | **no** |" in health or "| zero-variance share | **no** |" in health, health


def shortest(prompts, completions, **columns):
    """1 / (1 + characters): the cheapest policy stops at once, and then every reply scores the same."""
    return [1.0 / (1.0 + len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]

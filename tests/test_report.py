"""Markdown before/after tables, the run report and the plots, on results with hand-computed numbers."""

from __future__ import annotations

import json

import pytest

from fairrl.data.records import Example
from fairrl.errors import DataError
from fairrl.eval import bbq as eval_bbq
from fairrl.eval.bbq import evaluate_bbq
from fairrl.report.markdown import (
    before_after_table,
    comparison_table,
    lookup,
    training_summary,
    write_report,
)
from fairrl.report.plots import moving_mean, plot_before_after, plot_group_rewards, plot_training_curves

ANSWERS = ["The man", "The woman", "Unknown"]
PNG = b"\x89PNG"


def _bbq(i: int, cond: str, label: int) -> Example:
    cols = {
        "answers": ANSWERS,
        "label": label,
        "unknown_index": 2,
        "biased_index": 0,
        "context_condition": cond,
        "category": "Age",
        "context": "c",
        "question": "q",
    }
    return Example(
        prompt_id=f"bbq/Age/{i}",
        prompt=[{"role": "user", "content": "q"}],
        group="Age",
        source="bbq",
        columns=cols,
    )


def bbq_results(monkeypatch, reply: str) -> dict:
    """evaluate_bbq (generation mode) where the model always gives ``reply``; 2 ambiguous items (label 2)
    and 2 disambiguated ones (label 1), biased answer 0."""
    monkeypatch.setattr(eval_bbq, "greedy_generate", lambda m, t, prompts, n, b: [reply] * len(prompts))
    exs = [_bbq(0, "ambig", 2), _bbq(1, "ambig", 2), _bbq(2, "disambig", 1), _bbq(3, "disambig", 1)]
    return evaluate_bbq(None, None, exs, mode="generation", n_boot=50)


@pytest.fixture
def summary(monkeypatch) -> dict:
    """Before: always "The man" -> ambiguous accuracy 0, s_DIS = 2 * 2/2 - 1 = 1, s_AMB = (1 - 0) * 1 = 1;
    disambiguated accuracy 0, s_DIS 1. After: always "Unknown" -> ambiguous accuracy 1, no non-unknown answer
    -> s = 0; disambiguated accuracy 0, s_DIS 0, unknown rate 1. Reasoning accuracy 0.5 -> 0.45."""
    before = {
        "bbq_templates": bbq_results(monkeypatch, "The man"),
        "reasoning": {
            "n": 20,
            "accuracy": 0.5,
            "accuracy_ci": [0.3, 0.7],
            "mean_score": 0.505,
            "by_task": {"add": {"n": 20, "accuracy": 0.5}},
        },
    }
    after = {
        "bbq_templates": bbq_results(monkeypatch, "Unknown"),
        "reasoning": {
            "n": 20,
            "accuracy": 0.45,
            "accuracy_ci": [0.25, 0.65],
            "mean_score": 0.4555,
            "by_task": {"add": {"n": 20, "accuracy": 0.45}},
        },
    }
    return json.loads(json.dumps({"steps": 6, "before": before, "after": after}))  # as read back from disk


@pytest.fixture
def metrics(tmp_path):
    """Steps 1-6: reward 0.1 * step; group Age reward 0.1 * (step - 1) on even steps only, SES 0.2 always."""
    path = tmp_path / "metrics.jsonl"
    rows = []
    for s in range(1, 7):
        row = {
            "step": s,
            "reward": 0.1 * s,
            "rewards/bbq_correct/mean": 0.05 * s,
            "kl": 0.01,
            "completions/mean_length": 10.0 - s,
            "frac_reward_zero_std": 0.5,
            "group_reward/SES": 0.2,
        }
        if s % 2 == 0:
            row["group_reward/Age"] = 0.1 * (s - 1)
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_lookup_finds_value_and_interval(summary):
    v, ci = lookup(summary["after"], "bbq_templates.overall.ambig.accuracy")
    assert v == 1.0 and ci == [1.0, 1.0]
    assert lookup(summary["after"], "bbq_templates.overall.nothing") == (None, None)
    assert lookup(summary["after"], "reasoning.mean_score") == (0.4555, None)


def test_before_after_table_numbers(summary):
    rows = [
        ("acc amb", "bbq_templates.overall.ambig.accuracy"),
        ("s_AMB", "bbq_templates.overall.ambig.bias_score"),
        ("reasoning", "reasoning.accuracy"),
        ("absent", "bbq_categories.overall.ambig.accuracy"),
    ]
    table = before_after_table(summary["before"], summary["after"], rows).splitlines()
    assert table[0] == "| metric | before | after | change |"
    assert table[2] == "| acc amb | 0.000 [0.00, 0.00] | 1.000 [1.00, 1.00] | +1.000 |"
    assert table[3] == "| s_AMB | 1.000 [1.00, 1.00] | 0.000 [0.00, 0.00] | -1.000 |"
    assert table[4] == "| reasoning | 0.500 [0.30, 0.70] | 0.450 [0.25, 0.65] | -0.050 |"
    assert table[5] == "| absent | – | – | – |"


def test_training_summary_first_and_last_steps(metrics):
    """6 rows -> window k = min(10, 6 // 3) = 2.
    reward: first (0.1 + 0.2)/2 = 0.15, last (0.5 + 0.6)/2 = 0.55.
    Groups over the last 2 steps: Age only logged at step 6 -> 0.5; SES 0.2. gap 0.3, ratio 0.4,
    Jain 0.7^2 / (2 * (0.25 + 0.04)) = 0.49 / 0.58 = 0.845, Gini (0.3 + 0.3)/4 / (2 * 0.35) = 0.214."""
    text = training_summary(metrics)
    assert "| reward | 0.150 | 0.550 |" in text
    assert "| rewards/bbq_correct/mean | 0.075 | 0.275 |" in text
    assert "| Age | 0.500 |" in text and "| SES | 0.200 |" in text
    assert "gap 0.300, min/max ratio 0.400, Jain 0.845, Gini 0.214" in text


def test_write_report_has_the_numbers_and_plots(tmp_path, summary, metrics):
    for name, fn in (
        ("training_curves.png", plot_training_curves),
        ("group_rewards.png", plot_group_rewards),
    ):
        assert fn(metrics, tmp_path / name).read_bytes()[:4] == PNG
    assert plot_before_after(summary, tmp_path / "before_after.png").read_bytes()[:4] == PNG
    config = {
        "run_name": "unit",
        "seed": 3,
        "model": {"name_or_path": "tiny", "lora": {"r": 8}},
        "algorithm": {"advantage_estimator": "grpo", "loss_type": "dapo"},
        "rewards": {"functions": [{"name": "bbq_correct", "weight": 1.0}]},
    }
    text = write_report(tmp_path, config, summary, metrics).read_text()
    assert text.startswith("# fairrl run: unit")
    assert "`tiny` (LoRA r=8)" in text and "bbq_correct x 1.0" in text and "seed 3" in text
    assert "## BBQ, held-out templates of the training categories" in text
    assert "| accuracy, ambiguous | 0.000 [0.00, 0.00] | 1.000 [1.00, 1.00] | +1.000 |" in text
    assert (
        "| 'unknown' answers on disambiguated items | 0.000 [0.00, 0.00] | 1.000 [1.00, 1.00] | +1.000 |"
        in text
    )
    assert "| unparseable replies (count) | 0.000 | 0.000 | +0.000 |" in text
    assert "| Age: bias score, ambiguous (s_AMB) | 1.000 [1.00, 1.00] | 0.000 [0.00, 0.00] | -1.000 |" in text
    assert "| accuracy, add | 0.500 | 0.450 | -0.050 |" in text
    assert "retained: 90% of the starting model's" in text  # 0.45 / 0.5
    assert "| reward | 0.150 | 0.550 |" in text
    assert "## BBQ, held-out categories" not in text  # no such split was evaluated
    for name in ("before_after.png", "group_rewards.png", "training_curves.png"):
        assert f"![{name}]({name})" in text


def test_report_without_training_steps(tmp_path, summary):
    text = write_report(tmp_path, {}, summary, tmp_path / "missing.jsonl").read_text()
    assert "No training steps were logged." in text and "No plots were written." in text


def test_plots_need_logged_steps(tmp_path):
    empty = tmp_path / "metrics.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no logged steps"):
        plot_training_curves(empty, tmp_path / "x.png")
    with pytest.raises(DataError, match="not found"):
        plot_group_rewards(tmp_path / "absent.jsonl", tmp_path / "x.png")


def test_moving_mean_skips_nan():
    """Window 2 over [1, 3, NaN, 5]: [1, (1+3)/2, 3 (NaN skipped), 5 (NaN skipped)]."""
    assert moving_mean([1.0, 3.0, float("nan"), 5.0], 2) == [1.0, 2.0, 3.0, 5.0]


def test_comparison_table_puts_models_side_by_side(summary):
    table = comparison_table({"base": summary["before"], "tuned": summary["after"]})
    assert table.splitlines()[0] == "| set | metric | base | tuned |"
    assert "| Reasoning (task verifier) | accuracy | 0.500 [0.30, 0.70] | 0.450 [0.25, 0.65] |" in table
    assert "| accuracy, ambiguous | 0.000 [0.00, 0.00] | 1.000 [1.00, 1.00] |" in table


def test_reward_rows_find_functions_whose_names_hold_dots():
    """A user reward named by file path (``examples/rewards.py:fn``) still gets its row's numbers."""
    from fairrl.report.markdown import reward_rows

    res = {"kind": "rewards", "reward": 0.5, "by_function": {"rewards.py:fn": {"n": 4, "mean": 0.25}}, "by_group": {}}
    rows = reward_rows("mine", res)
    table = before_after_table({"mine": res}, {"mine": {**res, "reward": 0.75}}, rows).splitlines()
    assert table[2] == "| mean reward (weighted sum) | 0.500 | 0.750 | +0.250 |"
    assert table[3] == "| mean of rewards.py:fn | 0.250 | 0.250 | +0.000 |"


def test_table_cells_escape_pipes_so_rows_keep_their_columns():
    from fairrl.report.markdown import before_after_table

    rows = [("P(unknown | ambig)", ("x",))]
    table = before_after_table({"x": 0.25}, {"x": 0.5}, rows)
    last = table.splitlines()[-1]
    assert r"P(unknown \| ambig)" in last and last.replace(r"\|", "").count("|") == 5

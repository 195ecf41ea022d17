"""`fairrl train` from the command line on a tiny saved model with the real packaged BBQ data."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fairrl.cli import app
from tests.tiny import saved_tiny_policy

runner = CliRunner()


def explode(prompts, completions, **columns):
    raise ZeroDivisionError("division by zero")


@pytest.fixture
def model_dir(tmp_path):
    return saved_tiny_policy(tmp_path / "m")


def _args(model_dir, out, *extra):
    sets = [
        f"model.name_or_path={model_dir}", "model.lora={r: 4, alpha: 8}", "max_steps=2", "save_steps=1",
        "algorithm.num_generations=2", "algorithm.prompts_per_step=2", "algorithm.max_completion_length=4",
        "eval.bbq_items_per_condition=2", "eval.reasoning_items=2", "eval.permutations=1",
        "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: [SES]}, {kind: reasoning, n_train: 20}]",
        *extra,
    ]
    return ["train", "--out", str(out)] + [x for s in sets for x in ("--set", s)]


def test_train_writes_a_complete_run_folder(model_dir, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, _args(model_dir, out))
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "report.md", "before_after.png",
                 "training_curves.png", "group_rewards.png", "final/adapter_config.json"):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    report = (out / "report.md").read_text()
    assert "## Training health" in report and "## Demo targets" in report and "| accuracy rises |" in report
    assert "frac_reward_zero_std" in rows[0] and "rewards/bbq_correct/mean" in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["before"]) == set(summary["after"])
    # the trained adapter folder evaluates like any model
    result = runner.invoke(app, ["eval", "--model", str(out), "--out", str(tmp_path / "ev"), "--set",
                                 "eval.bbq_items_per_condition=1", "--set", "eval.reasoning_items=1",
                                 "--set", "eval.generation_check=false", "--set", f"model.name_or_path={model_dir}"])
    assert result.exit_code == 0, result.output


def test_failing_reward_stops_the_run_with_a_clear_message(model_dir, tmp_path):
    result = runner.invoke(app, _args(model_dir, tmp_path / "bad", "rewards.functions=[{name: 'tests.test_train_cli:explode'}]"))
    assert result.exit_code == 2
    assert "reward 'explode' raised ZeroDivisionError" in result.output
    assert "Traceback" not in result.output


def _user_args(model_dir, out, *extra):
    """The packaged example (examples/neutral_language.yaml) on the tiny model, two short steps."""
    sets = [
        f"model.name_or_path={model_dir}", "model.lora={r: 4, alpha: 8}", "max_steps=2", "save_steps=1",
        "algorithm.num_generations=2", "algorithm.prompts_per_step=2", "algorithm.max_completion_length=4",
        "data.sources.0.max_eval=4", *extra,
    ]
    return ["train", "examples/neutral_language.yaml", "--out", str(out)] + [x for s in sets for x in ("--set", s)]


def test_train_on_the_users_own_prompts_and_reward_file(model_dir, tmp_path):
    """examples/: a JSONL of prompts + rewards in a .py file -> per-function metrics and a held-out split
    scored by those rewards before and after, per group."""
    out = tmp_path / "mine"
    result = runner.invoke(app, _user_args(model_dir, out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"rewards/neutral_language/mean", "rewards/mentions_profession/mean"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    after = summary["after"]["neutral_prompts"]
    assert after["kind"] == "rewards" and after["n"] == 4
    assert set(after["by_function"]) == {"neutral_language", "mentions_profession"}
    assert set(after["by_group"]) <= {"care", "technical", "trades", "office"}
    report = (out / "report.md").read_text()
    assert "mean of neutral_language" in report


def test_mistyped_data_path_exits_2_before_the_model_loads(model_dir, tmp_path):
    result = runner.invoke(app, _user_args(model_dir, tmp_path / "typo", "data.sources.0.path=examples/neutral_promts.jsonl"))
    assert result.exit_code == 2
    assert "examples/neutral_promts.jsonl does not exist (did you mean examples/neutral_prompts.jsonl?)" in result.output
    assert "Traceback" not in result.output and "trainable" not in result.output

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
        "data.reasoning.n_train=20", "data.bbq.categories=[Religion]", "data.bbq.heldout_categories=[SES]", *extra,
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
    assert "reward 'tests.test_train_cli:explode' raised ZeroDivisionError" in result.output
    assert "Traceback" not in result.output

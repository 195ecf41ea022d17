"""`fairrl train --set method=sft|kd|dpo` from the command line on tiny saved models with the packaged BBQ data."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fairrl import cli
from fairrl.cli import app
from tests.conftest import make_tiny_llama
from tests.tiny import make_tiny_tokenizer, saved_tiny_policy

runner = CliRunner()


@pytest.fixture
def model_dir(tmp_path):
    return saved_tiny_policy(tmp_path / "m")


def _args(model_dir, out, *extra):
    sets = [
        f"model.name_or_path={model_dir}",
        "model.lora={r: 4, alpha: 8}",
        "max_steps=2",
        "save_steps=1",
        "algorithm.max_completion_length=4",
        "sft.batch_size=2",
        "kd.batch_size=2",
        "kd.max_new_tokens=4",
        "dpo.batch_size=2",
        "eval.bbq_items_per_condition=2",
        "eval.reasoning_items=2",
        "eval.permutations=1",
        "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: [SES]}, {kind: reasoning, n_train: 20}]",
        *extra,
    ]
    return ["train", "--out", str(out)] + [x for s in sets for x in ("--set", s)]


@pytest.mark.parametrize("method", ["sft", "kd", "dpo"])
def test_method_writes_the_usual_run_folder(model_dir, tmp_path, method):
    out = tmp_path / method
    result = runner.invoke(app, _args(model_dir, out, f"method={method}"))
    assert result.exit_code == 0, result.output
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "eval_before.json",
        "eval_after.json",
        "summary.json",
        "report.md",
        "checkpoints/step-000002/trainable.safetensors",
        "final/adapter_config.json",
    ):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("loss" in r for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["steps"] == 2
    assert set(summary["before"]) == set(summary["after"]) >= {"bbq_templates", "bbq_categories", "reasoning"}
    report = (out / "report.md").read_text()
    assert f"# fairrl run: {method}" in report
    heads = {"sft": "SFT on the data's targets", "kd": "KD token-level: context distillation",
             "dpo": "DPO on preference pairs from the data (beta 0.1), 2 pairs per step"}  # fmt: skip
    assert heads[method] in report


def test_kd_with_a_teacher_of_another_tokenizer_exits_2_and_leaves_nothing(model_dir, tmp_path):
    tok = make_tiny_tokenizer()
    tok.add_tokens(["zebra"])
    other = tmp_path / "other"
    make_tiny_llama(vocab_size=len(tok)).save_pretrained(other, safe_serialization=True)
    tok.save_pretrained(other)
    out = tmp_path / "kd_bad"
    result = runner.invoke(app, _args(model_dir, out, "method=kd", f"kd.teacher={other}",
                                      "data.sources=[{kind: reasoning, n_train: 4}]"))  # fmt: skip
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1 and "does not share the student's tokenizer: their vocabularies differ" in errors[0]
    )
    assert "Traceback" not in result.output and not out.exists()


def test_a_method_whose_recipe_is_missing_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(cli.TRAIN_METHODS, "ppo", ("fairrl.recipes.not_there", "run_ppo"))
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "p"), "--set", "method=ppo"])
    assert result.exit_code == 2
    assert "error: method ppo is not available yet" in result.output

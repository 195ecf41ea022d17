"""Bad configs and bad input give one clear message and exit code 2, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.config import ConfigDeprecationWarning, load_config
from fairrl.errors import ConfigError

runner = CliRunner()


def _train(tmp_path, text, *args):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    return runner.invoke(app, ["train", str(cfg), *args])


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("algorithm:\n  num_generaions: 4\n", "unknown config key 'algorithm.num_generaions'"),
        ("algorithm:\n  num_generations: many\n", "config field 'algorithm.num_generations'"),
        ("algorithm:\n  num_generations: 1\n", "greater than or equal to 2"),
        ("algorithm:\n  loss_type: ppo\n", "config field 'algorithm.loss_type'"),
        ("max_steps: [1\n", "is not valid YAML"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("data:\n  bbq: null\n  reasoning: null\n", "at least one source"),
    ],
)
def test_bad_config_exits_2_with_one_message(tmp_path, yaml_text, message):
    result = _train(tmp_path, yaml_text)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_config_file_and_bad_override(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = _train(tmp_path, "seed: 1\n", "--set", "algorithm.beta")
    assert result.exit_code == 2 and "must look like key.sub=value" in result.output


def test_resume_without_checkpoint(tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "no config.yaml" in result.output


def test_overrides_are_typed_and_validated():
    cfg = load_config(None, ["algorithm.beta=0.04", "algorithm.epsilon_high=0.28",
                             "data.sources=[{kind: bbq, weight: 1}, {kind: reasoning, weight: 4}]"])  # fmt: skip
    assert cfg.algorithm.beta == 0.04 and [s.weight for s in cfg.data.sources] == [1.0, 4.0]
    with pytest.raises(ConfigError, match="data.sources.0"):
        load_config(None, ["data.sources=[{kind: math}]"])


def test_old_data_layout_still_reads_with_a_deprecation_message():
    with pytest.warns(ConfigDeprecationWarning, match="data.sources"):
        cfg = load_config(None, ["data.ratio={bbq: 1, reasoning: 4}", "data.bbq.categories=[Age]"])
    assert [(s.kind, s.weight) for s in cfg.data.sources] == [("bbq", 1.0), ("reasoning", 4.0)]
    assert cfg.data.sources[0].categories == ["Age"]
    with pytest.warns(ConfigDeprecationWarning):
        only_bbq = load_config(None, ["data.reasoning=null", "data.ratio={bbq: 1}", "data.group_column=question_polarity"])
    assert [s.kind for s in only_bbq.data.sources] == ["bbq"] and only_bbq.data.sources[0].group_column == "question_polarity"
    with pytest.raises(ConfigError, match="data.ratio has unknown sources"):
        load_config(None, ["data.ratio={bbq: 1, math: 2}"])


def test_renamed_key_moves_with_a_deprecation_message_and_both_spellings_are_refused():
    with pytest.warns(ConfigDeprecationWarning, match="'algorithm.learning_rate' is deprecated.*'learning_rate'"):
        cfg = load_config(None, ["algorithm.learning_rate=0.003", "algorithm.max_grad_norm=null"])
    assert cfg.learning_rate == 0.003 and cfg.max_grad_norm is None
    with pytest.raises(ConfigError, match="both 'algorithm.learning_rate'.*and 'learning_rate'"):
        load_config(None, ["algorithm.learning_rate=0.003", "learning_rate=0.1"])


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("algorithm.num_generation=4", "did you mean 'num_generations'?"),
        ("learnin_rate=0.1", "did you mean 'learning_rate'?"),
        ("algorithm.lerning_rate=0.1", "did you mean 'learning_rate' (another section)?"),
        ("model.lora.alpah=4", "did you mean 'alpha'?"),
        ("data.sources=[{kind: jsonl, path: x.jsonl, prompt_colum: q}]", "did you mean 'prompt_column'?"),
    ],
)
def test_unknown_key_gets_a_did_you_mean_and_a_command_that_exists(override, hint):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert hint in str(err.value) and "`fairrl config --kind train`" in str(err.value)
    shown = runner.invoke(app, ["config", "--kind", "train"])  # the hint's command works and lists the keys
    assert shown.exit_code == 0 and "learning_rate:" in shown.output and "sources:" in shown.output


def test_overrides_reach_list_elements_by_index_or_name():
    cfg = load_config("demo", ["data.sources.bbq.categories=[Age]", "data.sources.1.weight=5"])
    assert cfg.data.sources[0].categories == ["Age"] and cfg.data.sources[1].weight == 5.0
    with pytest.raises(ConfigError, match="no single list element 'gsm8k'"):
        load_config("demo", ["data.sources.gsm8k.weight=2"])


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_every_method_shares_the_optimiser_vocabulary(schedule):
    from fairrl.config import DPOTrainConfig, RMTrainConfig

    sets = [f"lr_scheduler_type={schedule}", "warmup_ratio=0.1", "logging_steps=3", "max_grad_norm=0.5"]
    for schema in (None, RMTrainConfig, DPOTrainConfig):
        cfg = load_config(None, sets, schema=schema)
        assert (cfg.lr_scheduler_type, cfg.warmup_ratio, cfg.logging_steps, cfg.max_grad_norm) == (
            schedule, 0.1, 3, 0.5)


def test_demo_config_is_valid():
    result = runner.invoke(app, ["config", "--demo"])
    assert result.exit_code == 0 and "smollm2-135m-instruct" in result.output


def test_finished_demo_shows_its_report_instead_of_training(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "report.md").write_text("# fairrl run: demo\n")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert "# fairrl run: demo" in result.output and "holds a finished demo" in result.output


def test_reward_labels_are_short_and_unique():
    """Metric keys use the function name after ':'; repeats get _2, _3 in order."""
    from fairrl.config import RewardsConfig

    cfg = RewardsConfig(
        functions=[
            {"name": "examples/rewards.py:neutral_language"},
            {"name": "bbq_correct"},
            {"name": "pkg.mod:neutral_language"},
            {"name": "bias_rm", "options": {"model": "a"}},
            {"name": "bias_rm", "options": {"model": "b"}},
        ]
    )
    assert cfg.labels() == ["neutral_language", "bbq_correct", "neutral_language_2", "bias_rm", "bias_rm_2"]

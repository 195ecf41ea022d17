"""`fairrl compare`: equal-budget plan, summaries over seeds, Pareto front, and end to end on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.compare.plan import mixture_overrides, parse_methods, parse_ratios, plan_arms
from fairrl.config import load_config
from fairrl.errors import ConfigError
from fairrl.report.compare import pareto_front, run_values, summarise
from tests.tiny import saved_tiny_policy

runner = CliRunner()


def test_plan_gives_every_method_the_same_number_of_sequences():
    cfg = load_config(None, ["algorithm.prompts_per_step=4", "algorithm.num_generations=8", "sft.batch_size=8",
                             "kd.batch_size=16", "dpo.batch_size=8"])  # fmt: skip
    arms = {a.name: a for a in plan_arms(cfg, ["grpo", "ppo", "sft", "kd", "dpo"], [None], 320)}
    assert {n: a.steps for n, a in arms.items()} == {"grpo": 10, "ppo": 10, "sft": 40, "kd": 20, "dpo": 20}
    assert arms["dpo"].overrides(cfg) == ["method=dpo", "max_steps=20", "run_name=dpo", "logging_steps=1",
                                          "max_minutes=null", "warm_start.steps=0"]  # fmt: skip
    # a base config with a warm start (the demo's) still gives valid arms: each arm is one strategy
    warm = load_config(None, ["warm_start.steps=5"])
    assert load_config(None, ["warm_start.steps=5"] + arms["sft"].overrides(warm)).warm_start.steps == 0
    assert arms["ppo"].overrides(cfg)[-1] == "algorithm.beta=0"  # PPO's KL sits in its reward
    assert plan_arms(cfg, ["sft"], [None], 3)[0].steps == 1  # rounds up


def test_ratio_sets_the_debiasing_share_and_keeps_the_others_proportions():
    cfg = load_config(None, ["data.sources=[{kind: reasoning, weight: 3}, {kind: bbq, weight: 5}, {kind: gsm8k, weight: 1}]"])
    sets = mixture_overrides(cfg, 0.2)
    assert sets == ["data.sources.0.weight=0.6", "data.sources.1.weight=0.2", "data.sources.2.weight=0.2"]
    arm = plan_arms(cfg, ["sft"], [0.2], 8)[0]
    assert arm.name == "sft-debias20" and arm.overrides(cfg)[6:] == sets
    with pytest.raises(ConfigError, match="needs both a bbq source"):
        mixture_overrides(load_config(None, ["data.sources=[{kind: reasoning}]"]), 0.5)


def test_parsers_name_the_problem():
    assert parse_methods("sft, grpo,sft") == ["sft", "grpo"]
    assert parse_ratios(None) == [None] and parse_ratios("0.2,0.5") == [0.2, 0.5]
    assert parse_ratios("config, 0.2,config") == [None, 0.2]
    with pytest.raises(ConfigError, match="--methods takes"):
        parse_methods("grpo,rlhf")
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        parse_ratios("0.2,1")


def test_summary_over_seeds_by_hand():
    s = summarise([0.2, 0.4, 0.6], [None, None, None])
    assert s["mean"] == pytest.approx(0.4) and s["sd"] == pytest.approx(0.2)
    half = 4.303 * 0.2 / math.sqrt(3)  # t(0.975, 2 df)
    assert s["ci"] == pytest.approx([0.4 - half, 0.4 + half])
    assert summarise([0.3], [[0.1, 0.5]]) == {"mean": 0.3, "sd": 0.0, "ci": [0.1, 0.5], "n": 1}


def test_pareto_front_by_hand():
    points = [("a", 0.5, 0.3), ("b", 0.4, 0.3), ("c", 0.6, 0.5), ("d", 0.45, 0.2), ("e", 0.4, 0.3)]
    # b beats a (less bias, same accuracy) and d; c is the most accurate; e ties b and both stay
    assert pareto_front(points) == ["b", "c", "e"]


def test_bias_rate_and_retained_share_from_a_summary():
    split = {"overall": {"ambig": {"accuracy": 0.25, "accuracy_ci": [0.1, 0.4], "bias_score": 0.1},
                         "disambig": {"accuracy": 0.5, "bias_score": 0.0}, "mean_accuracy": 0.375}}  # fmt: skip
    summary = {"before": {"reasoning": {"accuracy": 0.4, "by_task": {}}},
               "after": {"bbq_templates": split, "reasoning": {"accuracy": 0.3, "by_task": {}}}}  # fmt: skip
    v = run_values(summary)
    assert v["bbq_templates: bias rate"] == (0.75, [0.6, 0.9])
    assert v["reasoning: retained %"][0] == pytest.approx(75.0)
    assert v["start:reasoning: accuracy"][0] == 0.4


def _args(model_dir, out, methods="grpo,ppo,sft,kd,dpo", *extra, seeds="0,1"):
    sets = [
        f"model.name_or_path={model_dir}", "model.lora={r: 4, alpha: 8}", "save_steps=1",
        "algorithm.max_completion_length=4", "algorithm.prompts_per_step=2", "algorithm.num_generations=2",
        "sft.batch_size=2", "kd.batch_size=2", "kd.max_new_tokens=4", "dpo.batch_size=1",
        "eval.bbq_items_per_condition=2", "eval.reasoning_items=2", "eval.permutations=1",
        "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: [SES]}, {kind: reasoning, n_train: 20}]",
    ]  # fmt: skip
    cmd = ["compare", "--methods", methods, "--seeds", seeds, "--budget", "8", "--out", str(out), *extra]
    return cmd + [x for s in sets for x in ("--set", s)]


def test_compare_end_to_end_resumes_and_refuses_another_budget(tmp_path):
    model_dir, out = saved_tiny_policy(tmp_path / "m"), tmp_path / "cmp"
    result = runner.invoke(app, _args(model_dir, out))
    assert result.exit_code == 0, result.output
    data = json.loads((out / "compare.json").read_text())
    assert data["budget"] == 8 and list(data["arms"]) == ["grpo", "ppo", "sft", "kd", "dpo"]
    steps = {n: a["costs"]["steps"] for n, a in data["arms"].items()}
    assert steps == {"grpo": 2, "ppo": 2, "sft": 4, "kd": 4, "dpo": 4}  # 8 sequences each
    for name, arm in data["arms"].items():
        assert arm["seeds"] == [0, 1] and arm["costs"]["tokens"] > 0, name
        assert arm["metrics"]["bbq_templates: bias rate"]["n"] == 2
        cfg = yaml.safe_load((out / name / "seed-1" / "config.yaml").read_text())
        assert cfg["method"] == name and cfg["seed"] == 1
    assert set(data["arms"]["grpo"]["group_rewards"]) and not data["arms"]["sft"]["group_rewards"]
    text = (out / "compare.md").read_text()
    for row in ("| starting model | 2 |", "| grpo | 2 |", "| dpo | 2 |", "held-out templates: bias rate",
                "reasoning: retained %", "## Training reward per group", "| sft | 4 | 8 |"):  # fmt: skip
        assert row in text, row
    assert "debias share" not in text  # one mixture: no share column
    assert (out / "pareto.png").stat().st_size > 1000
    assert (out / "sft" / "seeds_report.md").exists()
    again = runner.invoke(app, _args(model_dir, out))
    assert again.exit_code == 0 and again.output.count("finished earlier") == 10
    other = runner.invoke(app, _args(model_dir, out, "grpo", "--budget", "16"))
    assert other.exit_code == 2 and "holds a comparison with another budget" in other.output


def test_compare_ratio_sweep_writes_one_arm_per_share(tmp_path):
    model_dir, out = saved_tiny_policy(tmp_path / "m"), tmp_path / "ratios"
    result = runner.invoke(app, _args(model_dir, out, "sft", "--ratios", "config,0.2,0.8", seeds="0"))
    assert result.exit_code == 0, result.output
    for name, w in (("sft", [1.0, 1.0]), ("sft-debias20", [0.2, 0.8]), ("sft-debias80", [0.8, 0.2])):
        cfg = yaml.safe_load((out / name / "seed-0" / "config.yaml").read_text())
        assert [s["weight"] for s in cfg["data"]["sources"]] == pytest.approx(w)
    text = (out / "compare.md").read_text()
    # each arm's debiasing share is a column: the config's own mixture is 1 : 1 here
    assert "| arm | seeds | debias share |" in text
    for row in ("| starting model | 1 | - |", "| sft | 1 | 0.50 |", "| sft-debias20 | 1 | 0.20 |", "| sft-debias80 | 1 | 0.80 |"):
        assert row in text, row


def test_compare_refuses_method_and_max_steps_overrides(tmp_path):
    result = runner.invoke(app, ["compare", "--out", str(tmp_path / "c"), "--set", "max_steps=3"])
    assert result.exit_code == 2 and "compare sets each run's method and max_steps" in result.output


def test_variants_parse_and_plan_with_their_own_batch():
    """A variant is an arm of every method; its own prompts_per_step sets its steps (16 / (1 x 2) = 8)."""
    from fairrl.compare.plan import parse_variants

    plain, vade = parse_variants(["plain:", "vade: algorithm.prompt_sampler=vade; algorithm.prompts_per_step=1"])
    assert plain.overrides == () and vade.overrides == ("algorithm.prompt_sampler=vade", "algorithm.prompts_per_step=1")
    assert parse_variants(None) == [None]
    cfg = load_config(None, ["algorithm.prompts_per_step=2", "algorithm.num_generations=2"])
    by = {plain: cfg, vade: load_config(None, ["algorithm.prompts_per_step=2", "algorithm.num_generations=2",
                                                *vade.overrides])}  # fmt: skip
    arms = {a.name: a for a in plan_arms(cfg, ["grpo"], [0.2], 16, by)}
    assert {n: a.steps for n, a in arms.items()} == {"grpo-plain-debias20": 4, "grpo-vade-debias20": 8}
    assert arms["grpo-vade-debias20"].overrides(cfg)[-2:] == list(vade.overrides)
    for bad, msg in (("vade", "NAME: KEY=VALUE"), ("Vade: a=1", "NAME: KEY=VALUE"), ("v: algorithm.beta", "NAME: KEY=VALUE"),
                     ("v: max_steps=3", "sets method and max_steps")):  # fmt: skip
        with pytest.raises(ConfigError, match=msg):
            parse_variants([bad])
    with pytest.raises(ConfigError, match="given twice"):
        parse_variants(["a:", "a: algorithm.beta=0.1"])


def test_compare_variants_end_to_end_report_zero_variance_share(tmp_path):
    """Plain GRPO next to GRPO with VADE: one arm each, the sampler reaches the run's config, and the cost
    table gives seconds per step and the share of zero-variance groups; a bad variant key exits 2."""
    model_dir, out = saved_tiny_policy(tmp_path / "m"), tmp_path / "var"
    args = _args(model_dir, out, "grpo", "--variant", "plain:", "--variant", "vade: algorithm.prompt_sampler=vade",
                 seeds="0")  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((out / "grpo-vade" / "seed-0" / "config.yaml").read_text())
    assert cfg["algorithm"]["prompt_sampler"] == "vade"
    assert yaml.safe_load((out / "grpo-plain" / "seed-0" / "config.yaml").read_text())["algorithm"]["prompt_sampler"] == "uniform"
    data = json.loads((out / "compare.json").read_text())
    assert list(data["arms"]) == ["grpo-plain", "grpo-vade"]
    assert 0.0 <= data["arms"]["grpo-vade"]["costs"]["zero_std"] <= 1.0
    text = (out / "compare.md").read_text()
    assert "| seconds per step | zero-variance groups |" in text and "| grpo-vade | 2 | 8 |" in text
    bad = runner.invoke(app, _args(model_dir, tmp_path / "bad", "grpo", "--variant", "x: algorithm.prompt_sampler=nope"))
    assert bad.exit_code == 2 and "algorithm.prompt_sampler" in bad.output

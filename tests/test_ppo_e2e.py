"""PPO end to end on a tiny model: it learns a trivially learnable reward, resume equals uninterrupted (critic
included), and ``fairrl train --set method=ppo`` writes a complete run folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.config import load_config
from fairrl.models.loading import LoraSettings, apply_lora
from fairrl.recipes.ppo import run_ppo
from tests.test_train_e2e import REWARD, _data
from tests.tiny import saved_tiny_policy, tiny_policy


def _cfg(**over):
    sets = [
        "method=ppo",
        "model.lora=null",
        "data.sources=[{kind: bbq}]",
        f"rewards.functions=[{{name: '{REWARD}'}}]",
        "algorithm.num_generations=1",
        "algorithm.prompts_per_step=16",
        "algorithm.max_completion_length=6",
        "learning_rate=0.02",
        "ppo.ppo_epochs=2",
        "ppo.num_mini_batches=2",
        "report_to=none",
        "eval.bbq_items_per_condition=0",
        "save_steps=2",
    ] + [f"{k}={v}" for k, v in over.items()]
    return load_config(None, sets)


def _run(cfg, out, resume=None):
    tok, model = tiny_policy(0)
    if cfg.model.lora is not None:
        model = apply_lora(model, LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    return run_ppo(cfg, out=str(out), resume=resume, console=lambda s: None, evaluate=False, progress=False,
                   components=(tok, model), data=_data())  # fmt: skip


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_ppo_learns_a_trivial_reward(tmp_path):
    """One completion per prompt (no group baseline, the critic is the baseline): the mean share of 'a'
    tokens rises well above the random policy's ~1/24 within 30 steps."""
    run_dir = _run(_cfg(max_steps=30), tmp_path / "run")
    rows = _rows(run_dir)
    rewards = [r["reward"] for r in rows]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.3, (first, last)
    assert "frac_reward_zero_std" not in rows[0] and rows[0]["value_explained_variance"] == pytest.approx(0.0)
    for key in ("loss", "policy_loss", "value_loss", "value_clipfrac", "kl", "entropy", "grad_norm"):
        assert all(r[key] == r[key] for r in rows), key
    weights = load_file(str(run_dir / "checkpoints" / "step-000030" / "trainable.safetensors"))
    assert {"value_head.score.weight", "value_head.score.bias"} <= set(weights)
    assert weights["value_head.score.weight"].abs().sum() > 0  # the critic learned something
    assert (run_dir / "final").is_dir() and not any("value_head" in p.name for p in (run_dir / "final").iterdir())


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"ppo.critic": "separate", "model.lora": "{r: 4, alpha: 8}", "ppo.critic_warmup_steps": 1,
         "algorithm.num_generations": 2, "algorithm.prompts_per_step": 4, "ppo.value_learning_rate": 0.05},
    ],
    ids=["shared-full", "separate-lora-warmup"],
)
def test_resume_equals_uninterrupted(tmp_path, over):
    """Stop after 2 of 4 steps, resume, and get the same metrics and weights (policy and critic) as one run."""
    full = _run(_cfg(max_steps=4, **over), tmp_path / "full")
    part = _run(_cfg(max_steps=2, **over), tmp_path / "part")
    _run(_cfg(max_steps=4, **over), tmp_path / "part", resume=str(part))
    a, b = _rows(full), _rows(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("reward", "loss", "value_loss", "kl"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], abs=1e-6), key
    wa = load_file(str(full / "checkpoints" / "step-000004" / "trainable.safetensors"))
    wb = load_file(str(part / "checkpoints" / "step-000004" / "trainable.safetensors"))
    assert set(wa) == set(wb) and any(k.startswith("value_head.") for k in wa)
    if over:
        assert any(k.startswith("critic.") for k in wa) and any("lora" in k for k in wa)
        assert a[0]["critic_warmup"] == 1.0 and "policy_loss" not in a[0] and a[1]["critic_warmup"] == 0.0
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)


def test_critic_warmup_leaves_the_shared_policy_unchanged(tmp_path):
    """During warm-up only the head learns: the policy's weights after 1 step equal the starting ones."""
    run_dir = _run(_cfg(max_steps=1, save_steps=1, **{"ppo.critic_warmup_steps": 1}), tmp_path / "run")
    weights = load_file(str(run_dir / "checkpoints" / "step-000001" / "trainable.safetensors"))
    _, start = tiny_policy(0)
    for name, value in start.named_parameters():
        torch.testing.assert_close(weights[f"policy.{name}"], value.detach())
    assert weights["value_head.score.weight"].abs().sum() > 0


def test_cli_writes_a_ppo_run_folder(tmp_path):
    """``fairrl train --set method=ppo`` on a tiny saved model with the packaged BBQ data."""
    model_dir = saved_tiny_policy(tmp_path / "m")
    out = tmp_path / "run"
    sets = [
        "method=ppo", f"model.name_or_path={model_dir}", "model.lora={r: 4, alpha: 8}", "max_steps=2",
        "save_steps=1", "algorithm.num_generations=1", "algorithm.prompts_per_step=2",
        "algorithm.max_completion_length=4", "ppo.ppo_epochs=1", "eval.bbq_items_per_condition=2",
        "eval.reasoning_items=2", "eval.permutations=1",
        "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: [SES]}, {kind: reasoning, n_train: 20}]",
    ]  # fmt: skip
    result = CliRunner().invoke(app, ["train", "--out", str(out)] + [x for s in sets for x in ("--set", s)])
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "report.md", "final/adapter_config.json",
                 "checkpoints/step-000002/trainable.safetensors"):  # fmt: skip
        assert (out / name).exists(), name
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2] and "value_loss" in rows[0]
    assert "method: ppo" in (out / "config.yaml").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["before"]) == set(summary["after"])

"""End-to-end GRPO on a tiny model: it learns a trivially learnable reward, and resume equals uninterrupted."""

from __future__ import annotations

import json

import pytest
import torch

from fairrl.config import load_config
from fairrl.data.records import Example
from fairrl.data.run_data import RunData
from fairrl.recipes.grpo import run_training
from tests.tiny import tiny_policy

REWARD = "tests.tiny:count_a"


def _data(n: int = 32) -> RunData:
    words = ["b c", "d e", "f g", "h x", "y z", "1 2", "3 b", "c d"]
    train = [
        Example(
            prompt_id=f"toy/{i}",
            prompt=[{"role": "user", "content": words[i % len(words)]}],
            group=f"g{i % 2}",
            source="toy",
        )
        for i in range(n)
    ]
    return RunData(train=train, evals={})


def _cfg(tmp_path, **over):
    sets = [
        "model.lora=null",
        "data.sources=[{kind: bbq}]",
        f"rewards.functions=[{{name: '{REWARD}'}}]",
        "algorithm.num_generations=8",
        "algorithm.prompts_per_step=4",
        "algorithm.max_completion_length=6",
        "learning_rate=0.02",
        "algorithm.loss_type=dapo",
        "tensorboard=false",
        "eval.bbq_items_per_condition=0",
        "save_steps=2",
    ] + [f"{k}={v}" for k, v in over.items()]
    return load_config(None, sets)


def _run(cfg, out, resume=None, seed=0):
    tok, model = tiny_policy(seed)
    return run_training(
        cfg, out=str(out), resume=resume, console=lambda s: None, evaluate=False, progress=False,
        components=(tok, model), data=_data(),
    )


def _rewards(run_dir):
    return [json.loads(line)["reward"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_grpo_learns_a_trivial_reward(tmp_path):
    """Mean reward (share of 'a' tokens) rises well above the random policy's ~1/24 within 30 steps."""
    run_dir = _run(_cfg(tmp_path, max_steps=30), tmp_path / "run")
    rewards = _rewards(run_dir)
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.2, (first, last)
    assert (run_dir / "final").is_dir() and (run_dir / "config.yaml").exists()


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_resume_equals_uninterrupted(tmp_path, loss_type):
    """Stop after 4 of 6 steps, resume, and get the same metrics and weights as one 6-step run."""
    full = _run(_cfg(tmp_path, max_steps=6, **{"algorithm.loss_type": loss_type}), tmp_path / "full")
    part_cfg = _cfg(tmp_path, max_steps=4, **{"algorithm.loss_type": loss_type})
    part = _run(part_cfg, tmp_path / "part")
    resumed_cfg = _cfg(tmp_path, max_steps=6, **{"algorithm.loss_type": loss_type})
    _run(resumed_cfg, tmp_path / "part", resume=str(part))
    assert _rewards(part) == pytest.approx(_rewards(full), abs=1e-6)
    from safetensors.torch import load_file

    a = load_file(str(full / "checkpoints" / "step-000006" / "trainable.safetensors"))
    b = load_file(str(part / "checkpoints" / "step-000006" / "trainable.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"algorithm.advantage_estimator": "ngrpo"},
        {"algorithm.advantage_estimator": "unlikeliness", "algorithm.num_iterations": 2},
        {"algorithm.advantage_estimator": "rloo", "algorithm.importance_sampling_level": "sequence"},
        {"algorithm.beta": 0.04, "algorithm.loss_type": "grpo"},
        {"algorithm.beta": 0.04, "model.lora": "{r: 4, alpha: 8}"},
        {"algorithm.dynamic_sampling": "true", "algorithm.overlong_buffer": 2, "algorithm.delta": 2.0},
        {"algorithm.share_prompt": "false", "algorithm.mask_truncated_completions": "true"},
        {"algorithm.group_balance": "true", "algorithm.multi_objective_aggregation": "normalize_then_sum"},
        {"algorithm.novelty_sharpening": "true", "algorithm.prompt_sampler": "vade", "algorithm.icl_seeding": "true"},
    ],
)
def test_every_variant_runs_inside_the_loop(tmp_path, overrides):
    """Each estimator / loss / sampling option goes through two real steps without errors or NaNs."""
    cfg = _cfg(tmp_path, max_steps=2, **overrides)
    tok, model = tiny_policy()
    if cfg.model.lora is not None:
        from fairrl.models.loading import LoraSettings, apply_lora

        model = apply_lora(model, LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    run_dir = run_training(cfg, out=str(tmp_path / "run"), console=lambda s: None, evaluate=False, progress=False,
                           components=(tok, model), data=_data())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert all(v == v for v in (r["loss"], r["grad_norm"], r["reward"]))
    if cfg.algorithm.beta > 0:
        assert "kl" in rows[0]

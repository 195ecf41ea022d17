"""DAPO dynamic sampling: zero-variance groups are dropped and the batch is refilled from the stream."""

from __future__ import annotations

import torch

from fairrl.config import load_config
from fairrl.data.records import Example
from fairrl.data.stream import PromptStream
from fairrl.trainer.grpo_step import GRPOStep
from tests.tiny import tiny_policy


def constant_for_even(prompts, completions, prompt_id, **_):
    """Reward 1 everywhere for even prompts (zero variance), the share of 'a' words for odd ones."""
    out = []
    for c, pid in zip(completions, prompt_id, strict=True):
        words = c[0]["content"].split()
        out.append(1.0 if int(pid.split("/")[1]) % 2 == 0 else sum(w == "a" for w in words) / max(len(words), 1) + 0.01 * len(words))
    return out


def _step(dynamic: bool):
    cfg = load_config(None, [
        "model.lora=null", "data.sources=[{kind: bbq}]",
        "rewards.functions=[{name: 'tests.test_dynamic_sampling:constant_for_even'}]",
        "algorithm.num_generations=4", "algorithm.prompts_per_step=2", "algorithm.max_completion_length=5",
        f"algorithm.dynamic_sampling={str(dynamic).lower()}", "algorithm.max_resample_rounds=4",
    ])
    tok, model = tiny_policy()
    return GRPOStep(cfg, model, tok, torch.device("cpu"))


def _stream():
    ex = [Example(prompt_id=f"toy/{i}", prompt=[{"role": "user", "content": "b c"}], group="g", source="toy")
          for i in range(40)]
    return PromptStream(ex, seed=0)


def test_dynamic_sampling_keeps_only_informative_groups():
    batch, info = _step(True).collect(_stream(), torch.Generator().manual_seed(0))
    assert len(batch.examples) == 2
    assert all(int(e.prompt_id.split("/")[1]) % 2 == 1 for e in batch.examples)
    assert batch.rollout.completion_ids.shape[0] == 8 and batch.rewards.shape == (2, 4)
    first_draw = _stream().take(2)
    dropped = sum(int(e.prompt_id.split("/")[1]) % 2 == 0 for e in first_draw)
    assert info["dynamic_sampling/dropped"] == dropped
    assert (info["dynamic_sampling/rounds"] >= 1) == (dropped > 0)
    # the kept rows are consistent: rewards were computed for exactly these completions
    assert len(batch.texts) == 8


def test_without_dynamic_sampling_the_batch_is_the_first_draw():
    batch, info = _step(False).collect(_stream(), torch.Generator().manual_seed(0))
    assert len(batch.examples) == 2 and info["dynamic_sampling/rounds"] == 0

"""Micro-batching and gradient checkpointing give the one-pass gradient (every loss_type)."""

from __future__ import annotations

import copy

import pytest
import torch

from fairrl.config import load_config
from fairrl.distributed import Ranks
from fairrl.errors import ConfigError
from fairrl.losses import part_share
from fairrl.models.loading import enable_gradient_checkpointing
from fairrl.trainer.grpo_step import GRPOStep
from fairrl.trainer.microbatch import idle_backward, idle_passes, micro_batches
from tests.test_dynamic_sampling import _stream
from tests.tiny import tiny_policy


def test_micro_batches_keep_groups_whole_or_slice_one_group():
    whole = micro_batches(prompts=3, group_size=4, size=8)  # 2 groups, then the last one alone
    assert [(b.prompts, b.rows, b.group_size) for b in whole] == [
        (slice(0, 2), slice(0, 8), 4), (slice(2, 3), slice(8, 12), 4)
    ]  # fmt: skip
    sliced = micro_batches(prompts=2, group_size=4, size=2)
    assert [(b.prompts, b.rows) for b in sliced] == [
        (slice(0, 1), slice(0, 2)), (slice(0, 1), slice(2, 4)), (slice(1, 2), slice(4, 6)), (slice(1, 2), slice(6, 8))
    ]  # fmt: skip
    assert len(micro_batches(2, 4, None)) == 1 and len(micro_batches(2, 4, 64)) == 1
    with pytest.raises(ValueError, match="divide"):
        micro_batches(2, 4, 3)


def test_micro_batch_weights_by_hand():
    # 12 rows, 30 tokens; a micro-batch of 4 rows holding 6 tokens
    assert part_share("grpo", 4, 12, 6, 30) == pytest.approx(1 / 3)
    assert part_share("dr_grpo", 4, 12, 6, 30) == pytest.approx(1 / 3)
    assert part_share("dapo", 4, 12, 6, 30) == pytest.approx(0.2)
    assert part_share("bnpo", 4, 12, 6, 30) == pytest.approx(0.2)


def test_config_refuses_a_micro_batch_that_splits_groups_unevenly():
    with pytest.raises(ConfigError, match="micro_batch_size=3 must divide num_generations=4"):
        load_config(None, ["algorithm.num_generations=4", "algorithm.micro_batch_size=3"])


class _Recorder:
    """Stands in for the optimiser and scheduler: keeps the gradients of the step, changes nothing."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)

    def step(self):
        if self.grads is None:
            self.grads = [p.grad.clone() for p in self.model.parameters() if p.grad is not None]

    def get_last_lr(self):
        return [0.0]


def _grads(loss_type: str, micro: int | None, checkpointing: bool = False, beta: float = 0.04):
    cfg = load_config(None, [
        "model.lora=null", "data.sources=[{kind: bbq}]",
        "rewards.functions=[{name: 'tests.test_dynamic_sampling:constant_for_even'}]",
        "algorithm.num_generations=4", "algorithm.prompts_per_step=3", "algorithm.max_completion_length=6",
        f"algorithm.loss_type={loss_type}", f"algorithm.beta={beta}", "max_grad_norm=null",
        f"algorithm.micro_batch_size={'null' if micro is None else micro}",
    ])  # fmt: skip
    tok, model = tiny_policy()
    for p in model.parameters():
        p.requires_grad_(True)
    ref = copy.deepcopy(model).eval()
    if checkpointing:
        enable_gradient_checkpointing(model)
    step = GRPOStep(cfg, model, tok, torch.device("cpu"), ref_model=ref)
    batch, _ = step.collect(_stream(), torch.Generator().manual_seed(0))
    rec = _Recorder(model)
    stats = step.update(batch, rec, rec)
    return rec.grads, stats


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("micro", [2, 8])
def test_micro_batched_gradient_equals_one_pass(loss_type, micro):
    full, s_full = _grads(loss_type, None)
    parts, s_parts = _grads(loss_type, micro)
    assert any(g.abs().sum() > 0 for g in full)
    for a, b in zip(full, parts, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    for key in ("loss", "kl", "entropy"):
        assert s_parts[key] == pytest.approx(s_full[key], rel=1e-4, abs=1e-7)


def test_gradient_checkpointing_gives_the_same_gradient():
    plain, _ = _grads("grpo", None)
    recomputed, _ = _grads("grpo", 4, checkpointing=True)
    for a, b in zip(plain, recomputed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_an_idle_micro_batch_adds_no_gradient_and_runs_every_layer():
    """FSDP2's idle pass: a forward and backward through every decoder layer whose gradient is exactly zero,
    so accumulating it after a real micro-batch leaves that gradient as it was."""
    _, model = tiny_policy(0)
    model.train()
    ids = torch.tensor([[3, 4, 5]])
    model(input_ids=ids).logits.sum().backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    calls = []
    hooks = [layer.register_forward_hook(lambda *a: calls.append(1)) for layer in model.model.layers]
    idle_backward(model, None, temperature=1.0, share_prompt=True)
    for h in hooks:
        h.remove()
    assert len(calls) >= len(model.model.layers)  # every layer ran (the collectives of a real micro-batch)
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, before[n]), n
    assert idle_passes(Ranks(), 3) == 0  # one process: nothing to align

"""The ``ppo:`` section of a policy-training run (``method: ppo``): PPO with a learned critic.

Names and defaults follow TRL's ``PPOConfig`` (``gamma``, ``lam``, ``cliprange_value``, ``vf_coef``,
``kl_coef``, ``kl_estimator``, ``num_mini_batches``; TRL's ``num_ppo_epochs`` is ``ppo_epochs``). The
policy clip range is ``algorithm.epsilon`` (TRL's ``cliprange``, 0.2 in both; ``algorithm.epsilon_high``
and ``algorithm.delta`` apply as in GRPO).

Batch semantics: one step samples ``algorithm.prompts_per_step`` prompts x ``algorithm.num_generations``
completions (G may be 1: PPO's baseline is the critic, not the group), scores them with the run's reward
functions, and takes ``ppo_epochs`` passes over that batch, each split into ``num_mini_batches``
mini-batches of whole prompts, one optimiser step per mini-batch. A run of ``max_steps`` steps therefore
takes ``max_steps * ppo_epochs * num_mini_batches`` optimiser steps (the unit of the learning-rate
schedule); ``algorithm.micro_batch_size`` only splits a mini-batch into gradient-accumulation passes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fairrl.config.base import Strict
from fairrl.config.common import check_learning_rate


class PPOConfig(Strict):
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """Discount factor of the per-token rewards (TRL: 1)."""
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """GAE lambda: 0 = one-step TD advantages, 1 = Monte-Carlo returns minus the value (TRL: 0.95)."""
    cliprange_value: float = Field(0.2, gt=0.0)
    """Value clipping: the critic's prediction may move at most this far from its sampling-time value
    within one step's updates (TRL: 0.2)."""
    vf_coef: float = Field(0.1, ge=0.0)
    """Weight of the value loss in the total loss (TRL: 0.1)."""
    kl_coef: float = Field(0.05, ge=0.0)
    """KL penalty in the per-token reward, r_t = -kl_coef * kl_t (+ the score at the last token); 0 skips
    the reference model (TRL: 0.05). PPO's KL lives here; algorithm.beta must stay 0."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL estimate in the reward: k1 = log pi - log pi_ref (TRL's default), k3 = exp(d) - d - 1."""
    whiten_advantages: bool = True
    """Normalise the advantages over the batch's tokens to mean 0, variance 1 (TRL always does)."""
    ppo_epochs: int = Field(4, ge=1)
    """Passes over each sampled batch (TRL's num_ppo_epochs: 4)."""
    num_mini_batches: int = Field(1, ge=1)
    """Mini-batches per pass, each one optimiser step; at most algorithm.prompts_per_step (TRL: 1)."""
    critic_warmup_steps: int = Field(0, ge=0)
    """The first N steps train the critic only (the policy is not updated), so that its first policy
    updates see advantages from a critic that has started to fit."""
    critic: Literal["shared", "separate"] = "shared"
    """shared: a linear value head on the policy's own last hidden state (one trunk, the value loss also
    trains it; with LoRA, the adapter); separate: a copy of the starting model with its own LoRA adapter
    (or all its weights, without LoRA) and its own head, as TRL's value model."""
    value_learning_rate: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    """Learning rate of the critic's parameters (head, and the separate critic's weights); null =
    learning_rate. Both follow the same schedule."""

    @field_validator("value_learning_rate")
    @classmethod
    def _sane_value_learning_rate(cls, value: float | None) -> float | None:
        return value if value is None else check_learning_rate(value)

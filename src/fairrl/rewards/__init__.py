"""Reward functions (TRL contract) and their registry; importing this registers the built-ins.

Built-ins: ``bbq_correct``, ``bbq_antibias``, ``bbq_overcaution``, ``bbq_format`` (BBQ rows),
``reasoning_correct``, ``reasoning_exact``, ``answer_format`` (reasoning rows); ``bias_rm`` (a trained
fairrl reward model, configured with ``options: {model: RUN_OR_FOLDER}``). Each returns None on
rows of other sources. ``get_reward`` also resolves ``package.module:function`` to a user's own function.
Calls follow TRL's contract in full (:mod:`fairrl.rewards.base`, :mod:`fairrl.rewards.call`): standard or
conversational samples, ``completion_ids``, ``trainer_state``, ``log_extra`` / ``log_metric``, ``async def``
rewards run concurrently, and a time limit per call.
"""

from __future__ import annotations

from fairrl.rewards import bbq, bias_rm, format, reasoning  # noqa: F401  (registers built-ins)
from fairrl.rewards.base import (
    REWARD_FACTORIES,
    REWARDS,
    check_weighted_sum,
    completion_text,
    evaluate_rewards,
    get_reward,
    register_reward,
    register_reward_factory,
)
from fairrl.rewards.call import RewardLogs, TrainerState

__all__ = [
    "REWARDS",
    "REWARD_FACTORIES",
    "RewardLogs",
    "TrainerState",
    "check_weighted_sum",
    "completion_text",
    "evaluate_rewards",
    "get_reward",
    "register_reward",
    "register_reward_factory",
]

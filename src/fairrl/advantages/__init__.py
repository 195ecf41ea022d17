"""Advantage estimators and reward shaping: pure functions over ``[P, G]`` reward tensors.

``ESTIMATORS`` maps ``algorithm.advantage_estimator`` names to estimator functions; PPO's per-token
GAE (with a critic) is :mod:`fairrl.advantages.gae`.
"""

from __future__ import annotations

from fairrl.advantages.estimators import (
    ESTIMATORS,
    MULTI_OBJECTIVE_AGGREGATIONS,
    SCALE_REWARDS,
    combine_rewards,
    group_stats,
    zero_variance_groups,
)
from fairrl.advantages.gae import gae, kl_penalty, masked_whiten, token_rewards
from fairrl.advantages.shaping import group_balance_weights, novelty_sharpening, overlong_penalty

__all__ = [
    "ESTIMATORS",
    "MULTI_OBJECTIVE_AGGREGATIONS",
    "SCALE_REWARDS",
    "combine_rewards",
    "gae",
    "group_balance_weights",
    "group_stats",
    "kl_penalty",
    "masked_whiten",
    "novelty_sharpening",
    "overlong_penalty",
    "token_rewards",
    "zero_variance_groups",
]

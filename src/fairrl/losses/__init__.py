"""Training objectives: one unit per objective.

``FAIRNESS_OBJECTIVES`` maps ``fairness.kind`` names (none, regularizer, coefficient,
coefficient_paper) to the reductions of per-pair preference losses in :mod:`fairrl.losses.fairness`.
``AGGREGATIONS`` maps ``algorithm.loss_type`` names to the token/sequence aggregation of the
clipped policy-gradient surrogate computed by :func:`policy_loss`; ``PART_SHARES`` gives, per loss type, the
share of the batch loss that a part of the batch carries (exact gradient accumulation).
:func:`value_loss` is PPO's clipped critic loss (:mod:`fairrl.losses.ppo`).
"""

from __future__ import annotations

from fairrl.losses.fairness import FAIRNESS_OBJECTIVES, FairnessSettings, fair_preference_loss, fairness_tau
from fairrl.losses.kl import kl_k3
from fairrl.losses.policy import AGGREGATIONS, PART_SHARES, importance_ratio, part_share, policy_loss
from fairrl.losses.ppo import value_loss
from fairrl.losses.preference import bradley_terry_loss, dpo_loss, dpo_margins

__all__ = [
    "AGGREGATIONS",
    "PART_SHARES",
    "FAIRNESS_OBJECTIVES",
    "FairnessSettings",
    "bradley_terry_loss",
    "dpo_loss",
    "dpo_margins",
    "fair_preference_loss",
    "fairness_tau",
    "importance_ratio",
    "kl_k3",
    "part_share",
    "policy_loss",
    "value_loss",
]

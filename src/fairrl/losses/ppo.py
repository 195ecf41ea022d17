"""PPO's clipped value loss; the policy side is the clipped surrogate of :mod:`fairrl.losses.policy`.

Value loss (PPO as implemented in OpenAI baselines / ``lm-human-preferences``; Ziegler et al., arXiv
1909.08593; TRL ``PPOTrainer``), per real completion token:

    V_clip = clip(V, V_old - e_v, V_old + e_v)
    l_t    = 0.5 * max((V_t - R_t)^2, (V_clip_t - R_t)^2)

aggregated as the mean over the batch's real tokens. V_old are the critic's values at sampling time,
R the GAE returns (:func:`fairrl.advantages.gae.gae`). The max makes the clipped term a pessimistic
bound: the critic gains nothing by moving its prediction more than e_v from V_old in one update.

Policy loss: PPO's token-level clipped surrogate is :func:`fairrl.losses.policy_loss` with per-token
advantages ``[N, T]`` and ``loss_type="bnpo"`` (mean over the batch's completion tokens), which is
TRL's ``masked_mean`` of ``max(-A * ratio, -A * clip(ratio))`` in ``PPOTrainer``.
"""

from __future__ import annotations

import torch


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped value loss of the module docstring; shapes ``[N, T]`` (``values`` with grad).

    Returns the scalar loss and detached stats: ``value_clipfrac`` (share of real tokens where the
    clipped term is the larger, TRL's ``val/clipfrac``), ``value_mean`` and ``value_error`` (mean
    squared error of the unclipped prediction).
    """
    for name, t in {"old_values": old_values, "returns": returns, "mask": mask}.items():
        if t.shape != values.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != values shape {tuple(values.shape)}")
    if cliprange_value <= 0:
        raise ValueError(f"cliprange_value must be > 0, got {cliprange_value}")
    m = mask.bool()
    n = m.sum().clamp(min=1)
    # padding may hold anything; zero it first so no NaN reaches a gradient
    values = torch.where(m, values, 0.0)  # [N, T]
    old_values = torch.where(m, old_values, 0.0)
    returns = torch.where(m, returns, 0.0)
    clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    unclipped_loss = (values - returns) ** 2  # [N, T]
    clipped_loss = (clipped - returns) ** 2
    loss = 0.5 * torch.where(m, torch.maximum(unclipped_loss, clipped_loss), 0.0).sum() / n
    with torch.no_grad():
        stats = {
            "value_clipfrac": torch.where(m, (clipped_loss > unclipped_loss).to(values.dtype), 0.0).sum() / n,
            "value_mean": values.sum() / n,
            "value_error": torch.where(m, unclipped_loss, 0.0).sum() / n,
        }
    return loss, stats

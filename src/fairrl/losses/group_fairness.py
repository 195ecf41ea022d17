"""Group-level reward-fairness objectives: the demographic group of every pair is known, so fairness is
measured and optimised between groups, not only between pairs.

The pair-level objectives of :mod:`fairrl.losses.fairness` (FR, FC; Ouyang et al., ACL 2025) are
bias-agnostic: they even out sigmoid(a_i) across the pairs of a batch and never see a group label.
A reward model can satisfy them while one group stays at chance. With ``g(i)`` the group of pair i,
``P`` the groups present in the batch, ``n_g`` their counts and ``l_i`` the per-pair loss (BT or DPO):

    x_g = (1/n_g) sum_{i in g} sigmoid(a_i)          a group's mean reward share
    L_g = (1/n_g) sum_{i in g} l_i                   a group's mean loss
    f_G = f_tau({x_g : g in P})                      Lan-Chiang fairness of the group shares

Objectives (B = mean_i l_i, as in FR / FC):

    group_regularizer   B - alpha * f_G                        FR over groups
    group_coefficient   B * f_G^(-gamma)                       shipped FC over groups
    group_balanced      (1/|P|) sum_{g in P} L_g               group-reweighted BT: every group present
                                                               weighs the same, whatever its count
    group_dro           sum_g q_g L_g  (L_g = 0 if g not in P) online group DRO (Sagawa, Koh, Hashimoto &
                                                               Liang, ICLR 2020, Algorithm 1)

Group DRO keeps a distribution q over all training groups across steps. Each step, before the loss,

    q_g <- q_g * exp(eta * L_g) ;  q <- q / sum q          (:func:`dro_update`; absent groups: factor 1)

so groups with a high loss gain weight geometrically, eta being the step size (the paper's default 0.01).
This matches ``LossComputer.compute_robust_loss`` of the authors' code (github.com/kohpangwei/group_DRO)
without its optional generalisation adjustment C / sqrt(n_g), which is not implemented.

Gradients: group_regularizer / group_coefficient push the margins of pairs in groups with a small share
x_g up (d f_G / d x_g > 0 iff x_g's share is below sum_h p_h^2 for tau = -1, as for pairs), spread over the
group's pairs by 1/n_g; group_balanced gives pair i the weight |B| / (|P| n_g(i)) relative to B's 1/|B|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fairrl.losses.lan_chiang import fairness_tau_from_log


@dataclass(frozen=True)
class PairGroups:
    """The group of each pair of a batch and, for ``group_dro``, the current group weights."""

    index: torch.Tensor
    """``[N]`` long: the group number of each pair, in ``0 .. n_groups - 1``."""
    n_groups: int
    """Number of training groups (the DRO weights cover all of them, present in the batch or not)."""
    dro_weights: torch.Tensor | None = None
    """``[n_groups]`` q after this step's :func:`dro_update` (``group_dro`` only)."""

    def __post_init__(self) -> None:
        if self.index.dim() != 1 or self.index.dtype != torch.long:
            raise ValueError(
                f"group index must be a 1-D long tensor, got {self.index.dtype} {tuple(self.index.shape)}"
            )
        if self.n_groups < 1 or (
            self.index.numel() and not (0 <= int(self.index.min()) <= int(self.index.max()) < self.n_groups)
        ):
            raise ValueError(f"group index values must lie in 0..{self.n_groups - 1}")


def group_means(values: torch.Tensor, groups: PairGroups) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean of ``values [N]`` per group ``[G]``, counts ``[G]``); absent groups get mean 0, count 0."""
    counts = torch.bincount(groups.index, minlength=groups.n_groups).to(values.dtype)
    sums = torch.zeros(groups.n_groups, dtype=values.dtype, device=values.device).index_add(
        0, groups.index, values
    )
    return sums / counts.clamp(min=1), counts


def group_log_shares(margins: torch.Tensor, groups: PairGroups) -> torch.Tensor:
    """log x_g = log mean_{i in g} sigmoid(a_i) for the groups present, in group order ``[P]``."""
    log_x = F.logsigmoid(margins.to(torch.promote_types(margins.dtype, torch.float32)))
    present = torch.unique(groups.index)  # sorted
    out = []
    for g in present.tolist():
        member = log_x[groups.index == g]
        out.append(torch.logsumexp(member, dim=0) - math.log(member.numel()))
    return torch.stack(out)


def group_margin_fairness(margins: torch.Tensor, groups: PairGroups, tau: float = -1.0) -> torch.Tensor:
    """f_G = f_tau of the present groups' mean sigmoid(margin); 1-group batches give the even value."""
    return fairness_tau_from_log(group_log_shares(margins, groups), tau)


def dro_update(weights: torch.Tensor, per_example_loss: torch.Tensor, groups: PairGroups,
               step_size: float) -> torch.Tensor:  # fmt: skip
    """One online group-DRO step: q_g * exp(eta * L_g), renormalised (module docstring); no gradient."""
    with torch.no_grad():
        group_loss, _ = group_means(per_example_loss.detach().to(weights.dtype), groups)
        q = weights * torch.exp(step_size * group_loss)
        return q / q.sum()


def _need(groups: PairGroups | None, kind: str) -> PairGroups:
    if groups is None:
        raise ValueError(f"fairness kind {kind!r} needs the group of every pair (pairs carry a group label)")
    return groups


def group_regularizer(per_example_loss, margins, s, groups: PairGroups | None = None):
    """``group_regularizer``: L = mean_i l_i - alpha * f_tau(x_g over present groups)."""
    g = _need(groups, "group_regularizer")
    return per_example_loss.mean() - s.alpha * group_margin_fairness(margins, g, s.tau)


def group_coefficient(per_example_loss, margins, s, groups: PairGroups | None = None):
    """``group_coefficient``: L = mean_i l_i * f_G^(-gamma) (the shipped FC form, over groups)."""
    g = _need(groups, "group_coefficient")
    return per_example_loss.mean() * group_margin_fairness(margins, g, s.tau) ** (-s.gamma)


def group_balanced(per_example_loss, margins, s, groups: PairGroups | None = None):
    """``group_balanced``: L = mean over present groups of the group's mean loss."""
    g = _need(groups, "group_balanced")
    group_loss, counts = group_means(per_example_loss, g)
    present = counts > 0
    return group_loss[present].mean()


def group_dro(per_example_loss, margins, s, groups: PairGroups | None = None):
    """``group_dro``: L = sum_g q_g L_g with q already updated by :func:`dro_update` this step."""
    g = _need(groups, "group_dro")
    if g.dro_weights is None:
        raise ValueError("fairness kind 'group_dro' needs the group weights q (PairGroups.dro_weights)")
    group_loss, _ = group_means(per_example_loss, g)
    return (g.dro_weights.to(group_loss.dtype) * group_loss).sum()


GROUP_OBJECTIVES = {
    "group_regularizer": group_regularizer,
    "group_coefficient": group_coefficient,
    "group_balanced": group_balanced,
    "group_dro": group_dro,
}

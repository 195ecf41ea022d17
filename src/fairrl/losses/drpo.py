"""DRPO: decoupled reward policy optimisation (Li et al., "DRPO: Efficient Reasoning via Decoupled Reward
Policy Optimization", arXiv 2510.04474; authors' code: Optimization-AI/DRPO, ``compute_policy_loss_drpo``).

GRPO with a length penalty in the reward can give a correct but long answer a *negative* advantage (the
group mean includes the wrong answers). DRPO decouples the two: a discriminative objective (DisCO) pushes
each correct reply's score above a soft maximum of the wrong replies' scores, and the length preference acts
only *among the correct replies*, as weights from the closed-form optimum of a KL-regularised length reward.
For a group with correct set P and wrong set N (groups without both are skipped):

    s_i   = 1/|o_i| sum_t log pi(o_{i,t})                           (length-normalised log-likelihood)
    w_i   = exp((1 - |o_i| / L_max) / lambda)                       (shorter correct replies weigh more)
    J_q   = sum_{i in P} w_i (s_i - tau * log mean_{j in N} exp(s_j / tau)) / sum_{i in P} w_i
    loss  = - 1/Q sum_q J_q  +  max(beta_tr * (KL - delta), 0)_{detached} * KL

with Q the number of groups in the batch (skipped ones included, as the authors' code divides by all
questions) and KL = mean over the batch's reply tokens of rho - log rho - 1, rho = pi / pi_old (the authors'
"low_var_kl"; a trust region that is zero on the first pass over a batch). Defaults are the authors' scripts': tau 10, lambda 0.1,
beta_tr 1000, delta 1e-4.

Deviations: the authors' code evaluates the negatives' term as ``S / S.detach()`` (value 1, the gradient of
log S); here it is the log-mean-exp itself, so loss *values* differ by a per-group constant and gradients are
identical (tested). A reply counts as correct when its reward reaches ``threshold`` (the paper's rewards are 0
or 1). The trust-region KL is averaged per micro-batch and weighted by its share of the groups (the authors
average over the whole batch at once; the same when the batch is one micro-batch).
"""

from __future__ import annotations

import torch


def drpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    group_size: int,
    max_length: int,
    *,
    tau: float = 10.0,
    lam: float = 0.1,
    beta: float = 1000.0,
    delta: float = 1e-4,
    threshold: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of the module docstring for whole groups: ``logp``, ``old_logp``, ``mask`` ``[Q*G, T]``
    (rows group-major), ``rewards`` ``[Q*G]``. Returns the mean over the Q groups and detached stats
    (``drpo/valid_groups``: share of groups with correct and wrong replies; ``kl_old``: the trust region's KL)."""
    if logp.shape[0] % group_size:
        raise ValueError(f"DRPO needs whole groups: {logp.shape[0]} rows are not a multiple of G={group_size}")
    mask = mask.bool()
    lengths = mask.sum(-1).clamp(min=1)  # [Q*G]
    scores = torch.where(mask, logp, 0.0).sum(-1) / lengths  # [Q*G]
    Q = logp.shape[0] // group_size
    s = scores.view(Q, group_size)  # [Q, G]
    pos = (rewards >= threshold).view(Q, group_size)
    neg = ~pos & ~torch.isnan(rewards).view(Q, group_size)
    valid = pos.any(-1) & neg.any(-1)  # [Q]
    # groups without both kinds get stand-in masks (every reply both), so nothing below is infinite, and
    # weight 0: no value and no gradient comes from them
    pos_v, neg_v = pos | ~valid[:, None], neg | ~valid[:, None]
    weight = torch.exp((1.0 - lengths.view(Q, group_size).to(s.dtype) / max_length) / lam) * pos_v  # [Q, G]
    neg_scaled = torch.where(neg_v, s / tau, torch.tensor(float("-inf"), dtype=s.dtype))
    log_mean_exp = torch.logsumexp(neg_scaled, -1) - torch.log(neg_v.sum(-1).to(s.dtype))  # [Q]
    margin = torch.where(pos_v, s - tau * log_mean_exp[:, None], 0.0)  # [Q, G]
    per_group = (weight * margin).sum(-1) / weight.sum(-1)  # [Q]
    objective = (per_group * valid).sum() / Q
    log_ratio = torch.where(mask, logp - old_logp, 0.0)  # log(pi / pi_old)
    kl = ((torch.exp(log_ratio) - log_ratio - 1.0) * mask).sum() / mask.sum().clamp(min=1)  # the authors' k3
    penalty = torch.clamp(beta * (kl - delta), min=0.0).detach() * kl
    stats = {"drpo/valid_groups": valid.float().mean().detach(), "kl_old": kl.detach()}
    return -objective + penalty, stats

"""The Lan-Chiang fairness f_tau of positive amounts (the derivation and the special members of the
family are in :mod:`fairrl.losses.fairness`): p_i = x_i / sum_j x_j, f_tau(x) = sign(1 - tau) *
[sum_i p_i^(1 - tau)]^(1/tau) / n. Shared by the pair-level and the group-level objectives."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fairrl.losses.preference import check_pairs


def _check_tau(tau: float) -> None:
    if math.isnan(tau) or tau == 1.0:
        raise ValueError(f"tau must be a number other than 1 (f_1 is identically 0), got {tau}")


def fairness_tau_from_log(log_x: torch.Tensor, tau: float = -1.0) -> torch.Tensor:
    """f_tau (module docstring) of the amounts x = exp(log_x) ``[N]``; scalar, differentiable.

    Works on logs so that tiny amounts (sigmoid of a very negative margin) neither underflow to 0
    nor overflow p^(1 - tau) for large |tau|: log sum p^(1-tau) = logsumexp((1 - tau) log p).
    tau = 0 and tau = +-inf use their limits. Deviations: none; N = 1 gives the even value sign(1 - tau).
    Precision: near tau = 0 the log-sum is O(tau) and is divided by tau, so rounding grows as 1/|tau|;
    for |tau| < 1e-3 pass float64 or use tau = 0 itself.
    """
    _check_tau(tau)
    check_pairs(log_x=log_x)
    log_x = log_x.to(torch.promote_types(log_x.dtype, torch.float32))  # bf16 is too coarse here
    n = log_x.numel()
    log_p = log_x - torch.logsumexp(log_x, dim=0)  # [N], log shares
    if tau == 0.0:
        entropy = -(log_p.exp() * log_p).sum()
        return entropy.exp() / n
    if tau == -math.inf:
        return torch.exp(-log_p.max()) / n  # 1 / (n p_max) = mean / max
    if tau == math.inf:
        return -torch.exp(-log_p.min()) / n  # -1 / (n p_min) = -mean / min
    sign = 1.0 if tau < 1 else -1.0
    return sign * torch.exp(torch.logsumexp((1 - tau) * log_p, dim=0) / tau) / n


def fairness_tau(x: torch.Tensor, tau: float = -1.0) -> torch.Tensor:
    """f_tau of positive amounts ``x: [N]`` (module docstring); scalar, differentiable.

    tau = -1 is Jain's index (sum x)^2 / (n sum x^2). Raises ValueError for empty, non-finite or
    non-positive x and for tau = 1.
    """
    check_pairs(x=x)
    if not bool((x > 0).all()):
        raise ValueError(f"fairness_tau needs amounts x > 0, got min {x.min().item()}")
    return fairness_tau_from_log(x.log(), tau)


def margin_fairness(margins: torch.Tensor, tau: float = -1.0) -> torch.Tensor:
    """f_tau of x_i = sigmoid(a_i) for pair margins ``[N]``, via logsigmoid (no underflow)."""
    return fairness_tau_from_log(F.logsigmoid(margins), tau)

"""Reward-fairness objectives: the reward of each preference pair as a resource to share fairly.

Ouyang et al., "Towards Reward Fairness in RLHF: From a Resource Allocation Perspective" (ACL 2025,
aclanthology.org/2025.acl-long.163). The margins a_i of a mini-batch of pairs (reward model
r(x, y_w) - r(x, y_l), or DPO's implicit margin) become positive amounts x_i = sigmoid(a_i), whose
fairness is the Lan-Chiang family (Lan, Kao, Chiang & Sabharwal, arXiv 0906.0557; the authors' code
cites eq. 15 of Lan & Chiang's longer version), divided by n as in the authors' code:

    p_i = x_i / sum_j x_j,    f_tau(x) = sign(1 - tau) * [sum_i p_i^(1 - tau)]^(1/tau) / n

f depends on the shares p only, and is largest at an even allocation. Special members:

    tau = -1      (sum x)^2 / (n sum x^2)    Jain's index, in [1/n, 1]
    tau -> 0      exp(H(p)) / n,  H = -sum p log p (entropy; used for tau = 0), in [1/n, 1]
    tau = 1/2     (sum sqrt p)^2 / n, in [1/n, 1]
    tau -> -inf   mean x / max x, in [1/n, 1]
    tau = 2       -sqrt(sum 1/p) / n, in (-inf, -1]; every tau > 1 is negative, -1 when even
    tau -> +inf   -mean x / min x (max-min fairness), in (-inf, -1]
    tau = 1       sign(0) = 0 makes f identically 0: rejected

Objectives, with B = mean_i l_i the base loss (Bradley-Terry -log sigmoid(a_i) or per-pair DPO):

    none               B
    regularizer        B - alpha * f                  (paper's Fairness Regularisation, FR)
    coefficient_paper  B * f^gamma                    (paper's Fairness Coefficient, FC, as written)
    coefficient        B * f^(-gamma)                 (shipped FC; see below)

Gradients. Write q_i = p_i^(1-tau) / sum_j p_j^(1-tau) (shares tilted by 1 - tau; sum q = 1). From
d log f / d x_i = (1-tau)/(tau S) * (p_i^-tau / G - 1), S = sum x, G = sum p^(1-tau), and
d x_i / d a_i = x_i (1 - x_i):

    d l_i / d a_i = -(1 - x_i)                                   (BT)
    d f / d a_i   = f * (1-tau)/tau * (q_i - p_i) * (1 - x_i)
    tau = -1:       d f / d a_i = 2 f (p_i - p_i^2 / sum p^2) (1 - x_i) > 0  iff  p_i < sum_j p_j^2

so raising a pair with a small share raises f, raising one with a large share lowers it, for every
tau. With gradient descent step a <- a - eta * grad L and, to first order, Delta f = <grad f, Delta a>:

    FR:        grad L = grad B - alpha grad f;
               Delta f_FR = Delta f_BT + eta alpha |grad f|^2 >= Delta f_BT
    FC paper:  grad L = f^gamma grad B + gamma B f^(gamma-1) grad f;
               Delta f = f^gamma (Delta f_BT - eta gamma (B/f) |grad f|^2)
    shipped:   grad L = f^-gamma (grad B - gamma (B/f) grad f);
               Delta f = f^-gamma (Delta f_BT + eta gamma (B/f) |grad f|^2)

B > 0 and f > 0, so the paper's form always adds a push *against* fairness: minimising B f^gamma is
minimising log B + gamma log f, which rewards a smaller f. The authors' code does exactly this:
``RewardTrainer.compute_loss`` in Fair-RM/llama3_8B_rm.py and ``DPOTrainer.loss`` in
Fair-DPO/train/trainers.py (github.com/shoyua/Towards-Reward-Fairness) multiply the BT (resp.
per-pair DPO) loss by ``f_beta(margins, tau) ** gamma`` with gradient flowing through f (no detach),
defaults gamma = 0.5, tau = -1. Their FR matches ours (the DPO trainer sums the pairs, we average).

Deviations: ``coefficient`` (the shipped FC, default form) divides by f^gamma instead:
log L = log B - gamma log f, i.e. FR in log space with an adaptive weight alpha = gamma B / f and the
step scaled by f^-gamma in [1, n^gamma] (tau < 1). Lan et al. factor alpha-fair utilities into a
fairness factor times an efficiency factor; for a cost rather than a utility the same trade-off is
cost / fairness^gamma, not cost * fairness^gamma. The as-written form is kept as ``coefficient_paper``
for reproduction; it lowers fairness.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fairrl.errors import ConfigError
from fairrl.losses.group_fairness import GROUP_OBJECTIVES, group_margin_fairness, group_means
from fairrl.losses.lan_chiang import fairness_tau, fairness_tau_from_log, margin_fairness
from fairrl.losses.preference import check_pairs

__all__ = ["FAIRNESS_OBJECTIVES", "FairnessSettings", "fair_preference_loss", "fairness_tau", "fairness_tau_from_log", "margin_fairness"]

Objective = Callable[..., torch.Tensor]
"""(per-pair losses ``[N]``, margins ``[N]``, settings, groups=None) -> scalar loss. ``groups`` is a
:class:`fairrl.losses.group_fairness.PairGroups`; the pair-level objectives ignore it."""


@dataclass(frozen=True)
class FairnessSettings:
    """How :func:`fair_preference_loss` combines the per-pair losses with the fairness f_tau."""

    kind: str = "none"
    """Objective name in ``FAIRNESS_OBJECTIVES``: none, regularizer, coefficient, coefficient_paper, and
    the group-level ones of :mod:`fairrl.losses.group_fairness` (group_regularizer, group_coefficient,
    group_balanced, group_dro)."""
    alpha: float = 0.1
    """FR weight: L = B - alpha * f (paper default 0.1). Must be >= 0."""
    gamma: float = 0.5
    """FC exponent: L = B * f^(-gamma) shipped, B * f^gamma paper (paper default 0.5). Must be >= 0."""
    tau: float = -1.0
    """Lan-Chiang parameter; -1 = Jain's index (paper default). Not 1; the coefficient forms need
    tau < 1 so that f > 0."""
    dro_step_size: float = 0.01
    """Group DRO step size eta of q_g <- q_g exp(eta L_g) (Sagawa et al. 2020 default 0.01). >= 0."""

    def __post_init__(self) -> None:
        if self.kind not in FAIRNESS_OBJECTIVES:
            raise ConfigError(
                f"fairness kind must be one of {sorted(FAIRNESS_OBJECTIVES)}, got {self.kind!r}"
            )
        for name in ("alpha", "gamma", "dro_step_size"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"fairness {name} must be a finite number >= 0, got {value}")
        if math.isnan(self.tau) or self.tau == 1.0:
            raise ConfigError(
                f"fairness tau must be a number other than 1 (f_1 is identically 0), got {self.tau}"
            )
        if "coefficient" in self.kind and self.tau >= 1:
            raise ConfigError(
                f"fairness kind {self.kind!r} needs tau < 1 (f > 0 for f^gamma), got {self.tau}"
            )


def mean_objective(
    per_example_loss: torch.Tensor, margins: torch.Tensor, s: FairnessSettings, groups=None
) -> torch.Tensor:
    """``none``: L = mean_i l_i (margins unused)."""
    return per_example_loss.mean()


def fairness_regularizer(
    per_example_loss: torch.Tensor, margins: torch.Tensor, s: FairnessSettings, groups=None
) -> torch.Tensor:
    """``regularizer`` (paper's FR): L = mean_i l_i - alpha * f_tau(sigmoid(a)).

    dL/da_i = d(mean l)/da_i - alpha * df/da_i: an extra push up for pairs with a small share.
    """
    return per_example_loss.mean() - s.alpha * margin_fairness(margins, s.tau)


def fairness_coefficient(
    per_example_loss: torch.Tensor, margins: torch.Tensor, s: FairnessSettings, groups=None
) -> torch.Tensor:
    """``coefficient`` (shipped FC): L = mean_i l_i * f^(-gamma).

    dL/da_i = f^-gamma * (dB/da_i - gamma (B / f) df/da_i): raises fairness (module docstring).
    Deviations: the paper multiplies by f^gamma (``coefficient_paper``), which lowers it.
    """
    return per_example_loss.mean() * margin_fairness(margins, s.tau) ** (-s.gamma)


def fairness_coefficient_paper(
    per_example_loss: torch.Tensor, margins: torch.Tensor, s: FairnessSettings, groups=None
) -> torch.Tensor:
    """``coefficient_paper`` (paper's FC as written and as in the authors' code): L = B * f^gamma.

    dL/da_i = f^gamma * (dB/da_i + gamma (B / f) df/da_i): its fairness term pushes f *down*.
    Kept to reproduce the paper, not as a fairness method.
    """
    return per_example_loss.mean() * margin_fairness(margins, s.tau) ** s.gamma


FAIRNESS_OBJECTIVES: dict[str, Objective] = {
    "none": mean_objective,
    "regularizer": fairness_regularizer,
    "coefficient": fairness_coefficient,
    "coefficient_paper": fairness_coefficient_paper,
}


def fair_preference_loss(
    per_example_loss: torch.Tensor,
    margins: torch.Tensor,
    settings: FairnessSettings | None = None,
    groups=None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scalar loss of ``settings.kind`` from per-pair losses ``[N]`` and their margins ``[N]``.

    ``per_example_loss`` is e.g. :func:`~fairrl.losses.preference.bradley_terry_loss` or
    :func:`~fairrl.losses.preference.dpo_loss`, ``margins`` the a_i it was computed from (reward
    difference or :func:`~fairrl.losses.preference.dpo_margins`); f_tau is taken over this batch.
    ``groups`` (:class:`~fairrl.losses.group_fairness.PairGroups`) is needed by the group objectives.
    Stats (floats): ``base_loss`` (mean l_i), ``fairness`` (f_tau), ``margin_mean``, ``accuracy``
    (share of margins > 0); with ``groups`` also ``group_fairness`` (f_tau of the groups' mean
    sigmoid(margin)) and ``worst_group_accuracy`` (lowest accuracy of a group present). Raises
    ValueError for empty, mismatched or non-finite inputs.
    """
    settings = settings or FairnessSettings()
    check_pairs(per_example_loss=per_example_loss, margins=margins)
    if groups is not None and groups.index.shape != margins.shape:
        raise ValueError(f"groups index {tuple(groups.index.shape)} != margins {tuple(margins.shape)}")
    loss = FAIRNESS_OBJECTIVES[settings.kind](per_example_loss, margins, settings, groups)
    with torch.no_grad():
        stats = {
            "base_loss": per_example_loss.mean().item(),
            "fairness": margin_fairness(margins, settings.tau).item(),
            "margin_mean": margins.mean().item(),
            "accuracy": (margins > 0).float().mean().item(),
        }
        if groups is not None:
            acc, counts = group_means((margins > 0).to(margins.dtype), groups)
            stats["group_fairness"] = group_margin_fairness(margins, groups, settings.tau).item()
            stats["worst_group_accuracy"] = acc[counts > 0].min().item()
    return loss, stats


FAIRNESS_OBJECTIVES.update(GROUP_OBJECTIVES)

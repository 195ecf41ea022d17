"""Pairwise preference losses: Bradley-Terry reward modelling and DPO, per example.

Both return one loss per pair (``[N]``) so that a fairness objective
(:mod:`fairrl.losses.fairness`) can reduce them together with the pair margins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_pairs(**tensors: torch.Tensor) -> None:
    """All tensors 1-D, of one shape, non-empty and finite (else ValueError naming the culprit)."""
    shape = None
    for name, t in tensors.items():
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D [N], got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{name} is empty: need at least one pair")
        if shape is not None and t.shape != shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != {tuple(shape)} of the other inputs")
        shape = t.shape
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(f"{name} holds {bad} non-finite value(s) (inf/NaN) out of {t.numel()}")


def bradley_terry_loss(margins: torch.Tensor) -> torch.Tensor:
    """Per-pair Bradley-Terry negative log-likelihood ``[N]``:

        l_i = -log sigmoid(a_i),   a_i = r(x, y_w) - r(x, y_l)

    (Bradley & Terry 1952; the reward-model loss of InstructGPT, Ouyang et al., arXiv 2203.02155,
    eq. 1, there averaged over the K-choose-2 pairs of a prompt). ``logsigmoid`` keeps it finite for
    margins of any size. a = 0 gives log 2; d l_i / d a_i = -(1 - sigmoid(a_i)).
    """
    check_pairs(margins=margins)
    return -F.logsigmoid(margins)  # [N]


def dpo_margins(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO implicit reward margins ``[N]`` (Rafailov et al., arXiv 2305.18290, eq. 7 inside the sigmoid):

        a_i = beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))]

    Inputs are sequence log-probabilities ``[N]`` (summed over the response tokens).
    """
    check_pairs(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    if beta <= 0:
        raise ValueError(f"DPO beta must be > 0, got {beta}")
    chosen = policy_chosen_logps - ref_chosen_logps  # [N]
    rejected = policy_rejected_logps - ref_rejected_logps  # [N]
    return beta * (chosen - rejected)  # [N]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-pair DPO loss ``[N]`` (Rafailov et al., arXiv 2305.18290, eq. 7, before the expectation):

        l_i = -(1 - eps) * log sigmoid(a_i) - eps * log sigmoid(-a_i),   a_i = :func:`dpo_margins`

    With ``label_smoothing`` eps = 0 (the default) this is plain DPO. eps > 0 is conservative DPO
    (cDPO; Mitchell, "A note on DPO with noisy preferences", 2023): the label is flipped with
    probability eps. TRL 1.16's ``sigmoid`` loss ignores ``label_smoothing`` (its ``aot`` / ``aot_unpaired``
    losses apply this same form to sorted log-ratios, and ``robust`` divides by 1 - 2 eps); with eps = 0 this
    equals TRL's ``sigmoid`` loss.

    Deviations: none for eps = 0; eps must lie in [0, 0.5) (0.5 would make the loss ignore the label).
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    a = dpo_margins(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    return -(1 - label_smoothing) * F.logsigmoid(a) - label_smoothing * F.logsigmoid(-a)  # [N]

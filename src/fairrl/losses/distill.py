"""Token-level distillation divergences between a teacher's and a student's next-token distributions.

GKD (Agarwal et al. 2024, "On-Policy Distillation of Language Models", arXiv 2306.13649, eq. 1) with TRL
``GKDTrainer.generalized_jsd_loss``'s convention. Per completion token, with teacher distribution P and
student distribution Q over the vocabulary (softmax of the logits at temperature 1, as TRL's loss),

    forward KL   KL(P || Q) = sum_v P_v (log P_v - log Q_v)        (mode-covering; classic KD)
    reverse KL   KL(Q || P) = sum_v Q_v (log Q_v - log P_v)        (mode-seeking)
    JSD_beta     beta KL(P || M) + (1 - beta) KL(Q || M),   M = beta P + (1 - beta) Q

TRL's ends: ``beta = 0`` gives forward KL and ``beta = 1`` reverse KL, computed as such (the JSD formula
itself is 0 at both ends; TRL switches to the KLs there, being the limits of JSD_beta / beta and
JSD_beta / (1 - beta)). fairrl does the same, and checks the numbers against TRL's function in the tests.
The loss is the mean over every completion token of the batch (TRL's ``batchmean`` over labelled
tokens). Gradients reach the student only: the teacher's logits are detached.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probs ``[T, V]`` -> ``[T]`` (0 log 0 = 0)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """KL(P_teacher || Q_student) per token, ``[T, V]`` logits -> ``[T]``."""
    return _kl(F.log_softmax(teacher_logits.detach().float(), -1), F.log_softmax(student_logits.float(), -1))


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """KL(Q_student || P_teacher) per token, ``[T, V]`` logits -> ``[T]``."""
    return _kl(F.log_softmax(student_logits.float(), -1), F.log_softmax(teacher_logits.detach().float(), -1))


def generalized_jsd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5
) -> torch.Tensor:
    """JSD_beta(P_teacher || Q_student) per token (module docstring; TRL's beta ends), ``[T, V]`` -> ``[T]``."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits)
    log_q = F.log_softmax(student_logits.float(), -1)  # [T, V]
    log_p = F.log_softmax(teacher_logits.detach().float(), -1)  # [T, V]
    log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log1p(-beta)]), dim=0)  # [T, V]
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {
    "jsd": generalized_jsd,
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
}
"""``kd.loss`` name -> fn(student_logits [T, V], teacher_logits [T, V], beta) -> per-token divergence [T]."""


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "jsd",
                 beta: float = 0.5) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """Mean divergence over the T completion tokens -> (loss, stats); ``beta`` is used by ``jsd`` only."""
    if kind not in DIVERGENCES:
        raise ValueError(f"kd.loss must be one of {', '.join(DIVERGENCES)}, got {kind!r}")
    if (
        student_logits.shape != teacher_logits.shape
        or student_logits.dim() != 2
        or not student_logits.shape[0]
    ):
        raise ValueError(f"student and teacher logits must both be [T, V] with T > 0, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")  # fmt: skip
    per_token = DIVERGENCES[kind](student_logits, teacher_logits, beta)  # [T]
    loss = per_token.mean()
    return loss, {"num_tokens": float(per_token.numel()), "divergence_max": float(per_token.detach().max())}

"""Clipped policy-gradient surrogate of the GRPO family, with TRL's aggregation choices.

Per completion token t of sequence i (PPO / GRPO, DeepSeekMath arXiv 2402.03300, eq. 3):

    rho_{i,t} = pi_theta(o_{i,t} | q, o_{i,<t}) / pi_old(o_{i,t} | q, o_{i,<t})
    l_{i,t}   = -min(rho_{i,t} A_i, clip(rho_{i,t}, 1 - eps_low, 1 + eps_high) A_i) + beta * k3_{i,t}

(PPO with a critic passes one advantage per token, A_{i,t}, in place of A_i; :mod:`fairrl.losses.ppo`.)

- Clip-higher (DAPO, arXiv 2503.14476, sec. 3.1) and NGRPO's asymmetric clipping (arXiv 2509.18851)
  are ``epsilon`` (= eps_low) and ``epsilon_high``: with A > 0 only the upper bound can bind, with
  A < 0 only the lower one (DAPO 0.2 / 0.28; NGRPO 0.16 / 0.24).
- GSPO (Zheng et al., arXiv 2507.18071) uses one ratio per sequence, s_i = exp(mean_t log rho_{i,t}),
  for all its tokens, clipped the same way (the paper uses eps ~ 3e-4 / 4e-4). The gradient flows
  through s_i to every token of the sequence, as in the paper.
- ``delta`` (TRL; INTELLECT-2's two-sided clipping) caps the unclipped ratio at delta, bounding the
  loss of A < 0 tokens whose ratio has grown large; it must exceed 1 + eps_high.

``loss_type`` picks how l_{i,t} is aggregated (``AGGREGATIONS``, TRL names):
``grpo`` per-sequence mean then mean over sequences; ``bnpo``/``dapo`` mean over every token of the
batch; ``dr_grpo`` sum over tokens / (N * max_completion_length).

Masks are exact: log-probs at padded positions (mask 0) are replaced by 0 before any arithmetic,
so padding never contributes to the loss, its gradient or the stats, even if it holds inf/NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fairrl.errors import ConfigError
from fairrl.losses.kl import kl_k3

Aggregation = Callable[[torch.Tensor, torch.Tensor, int | None], torch.Tensor]
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the True positions of ``mask`` (0 when there are none)."""
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


# -- aggregations ---------------------------------------------------------------------------------


def _clip_fraction(flag: torch.Tensor, mask: torch.Tensor, level: str) -> torch.Tensor:
    """Share of clipped completion tokens ``[N, T]`` -> scalar; at sequence level (GSPO, one ratio per
    sequence) the share of sequences with a token, as TRL 1.16 logs it."""
    if level != "sequence":
        return _masked_mean(flag.to(torch.float32), mask)
    rows = mask.any(-1)  # [N]
    return (flag & mask).any(-1)[rows].float().mean() if bool(rows.any()) else torch.zeros(())


def sequence_mean(
    per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int | None = None
) -> torch.Tensor:
    """``grpo`` (DeepSeekMath eq. 3): L = 1/N sum_i 1/|o_i| sum_t l_{i,t}.

    Every sequence weighs the same whatever its length, so a token of a short completion weighs more
    (the length bias Dr. GRPO points out). A sequence with no tokens contributes 0 but still counts in N.
    """
    per_seq = torch.where(mask, per_token, 0.0).sum(-1) / mask.sum(-1).clamp(min=1)  # [N]
    return per_seq.sum() / max(per_seq.numel(), 1)


def token_mean(
    per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int | None = None
) -> torch.Tensor:
    """``bnpo`` / ``dapo`` (DAPO sec. 3.3, token-level loss): L = sum_{i,t} l_{i,t} / sum_i |o_i|.

    Every token weighs the same. Deviations: TRL's ``dapo`` normalises by the token count of the whole
    accumulated batch across processes; here the batch passed in is the whole optimiser batch, so
    ``bnpo`` and ``dapo`` coincide.
    """
    return _masked_mean(per_token, mask)


def constant_normaliser(
    per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int | None
) -> torch.Tensor:
    """``dr_grpo`` (Liu et al., arXiv 2503.20783): L = sum_{i,t} l_{i,t} / (N * L_max).

    A constant normaliser, so neither the completion length nor the batch's token count rescales
    a token's gradient. Needs ``max_completion_length`` (L_max).
    """
    if max_completion_length is None or max_completion_length < 1:
        raise ConfigError(
            f"loss_type 'dr_grpo' needs max_completion_length >= 1 (its constant normaliser), "
            f"got {max_completion_length!r}"
        )
    return torch.where(mask, per_token, 0.0).sum() / (per_token.shape[0] * max_completion_length)


AGGREGATIONS: dict[str, Aggregation] = {
    "grpo": sequence_mean,
    "bnpo": token_mean,
    "dapo": token_mean,
    "dr_grpo": constant_normaliser,
}


# -- the share of the batch loss that a part of the batch carries (gradient accumulation) ----------
#
# Every aggregation is a sum over rows with a normaliser fixed by the whole batch, so the batch loss
# is L = sum_b w_b * L_b, with L_b the same aggregation applied to part b alone and (n rows, T tokens)
#   w_b = n_b / N   for grpo (mean over sequences) and dr_grpo (sum / (N * L_max));
#   w_b = T_b / T   for bnpo / dapo (mean over the batch's completion tokens).
PartShare = Callable[[int, int, float, float], float]


def row_share(rows: int, total_rows: int, tokens: float, total_tokens: float) -> float:
    """w_b = n_b / N (normaliser proportional to the row count)."""
    return rows / total_rows


def token_share(rows: int, total_rows: int, tokens: float, total_tokens: float) -> float:
    """w_b = T_b / T (normaliser = the batch's token count; an all-masked batch counts as 1 token)."""
    return tokens / max(total_tokens, 1.0)


PART_SHARES: dict[str, PartShare] = {
    "grpo": row_share,
    "bnpo": token_share,
    "dapo": token_share,
    "dr_grpo": row_share,
    "drpo": row_share,  # fairrl.losses.drpo: a mean over groups
}


def part_share(loss_type: str, rows: int, total_rows: int, tokens: float, total_tokens: float) -> float:
    """w_b above: the weight of part b's own loss in the loss of the whole batch."""
    if loss_type not in PART_SHARES:
        raise ConfigError(f"loss_type must be one of {sorted(PART_SHARES)}, got {loss_type!r}")
    return PART_SHARES[loss_type](rows, total_rows, tokens, total_tokens)


# -- ratio and loss -------------------------------------------------------------------------------


def importance_ratio(
    logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, level: str
) -> torch.Tensor:
    """Importance ratios ``[N, T]`` of the completion tokens (1 at padded positions).

        token:    rho_{i,t} = exp(logp_{i,t} - old_logp_{i,t})
        sequence: s_i = exp(1/|o_i| sum_t (logp_{i,t} - old_logp_{i,t})), broadcast to the tokens (GSPO)

    ``mask`` is bool ``[N, T]``; a sequence without tokens gets s_i = 1.
    """
    if level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ConfigError(
            f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, got {level!r}"
        )
    log_ratio = torch.where(mask, logp - old_logp, 0.0)  # [N, T]
    if level == "token":
        return torch.exp(log_ratio)
    seq = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)  # [N, 1]
    return torch.exp(seq).expand_as(log_ratio)  # [N, T]


def _check_shapes(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None,
) -> None:
    if logp.dim() != 2:
        raise ValueError(f"logp must be [N, T], got shape {tuple(logp.shape)}")
    named = {"old_logp": old_logp, "mask": mask, "ref_logp": ref_logp}
    for name, t in named.items():
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(
            f"advantages must be [N] = [{logp.shape[0]}] (one per sequence) or [N, T] = {list(logp.shape)} "
            f"(one per token, PPO), got shape {tuple(advantages.shape)}"
        )


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str = "grpo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    importance_sampling_level: str = "token",
    max_completion_length: int | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    delta: float | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate of the module docstring, aggregated by ``loss_type``.

    Shapes: ``logp`` (with grad), ``old_logp``, ``ref_logp``, ``mask`` (1 = completion token): [N, T];
    ``advantages``: [N] (one per sequence, the GRPO family) or [N, T] (one per token, PPO's GAE). ``epsilon_high`` None = ``epsilon``. The k3 KL term is added when
    ``beta > 0`` (then ``ref_logp`` is required). ``is_weights`` ([N, T] or [N, 1]): importance weights of
    rollouts sampled by another engine (:mod:`fairrl.losses.rollout_correction`), multiplying the surrogate's
    per-token loss before the KL term is added, as TRL does.

    Returns the scalar loss and detached stats (TRL names): ``clip_ratio/low_mean`` (fraction of
    completion tokens with ratio < 1 - eps_low and A < 0; of sequences at sequence level, as TRL),
    ``clip_ratio/high_mean`` (ratio > 1 + eps_high and A > 0), ``clip_ratio/region_mean`` (either), ``ratio_mean``, and ``kl`` (mean
    k3 over completion tokens, only when beta > 0).
    """
    _check_shapes(logp, old_logp, advantages, mask, ref_logp)
    if loss_type not in AGGREGATIONS:
        raise ConfigError(f"loss_type must be one of {sorted(AGGREGATIONS)}, got {loss_type!r}")
    eps_high = epsilon if epsilon_high is None else epsilon_high
    if delta is not None and delta <= 1 + eps_high:
        raise ConfigError(
            f"delta must be > 1 + epsilon_high = {1 + eps_high}, got {delta}; or null to disable it"
        )
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the reference model's log-probs)")
    mask = mask.bool()
    # Padded positions may hold anything (-inf, NaN); zero them first so no NaN reaches a gradient.
    logp = torch.where(mask, logp, 0.0)  # [N, T]
    old_logp = torch.where(mask, old_logp, 0.0)
    ratio = importance_ratio(logp, old_logp, mask, importance_sampling_level)  # [N, T]
    adv = advantages.to(logp.dtype)
    adv = adv[:, None] if adv.dim() == 1 else torch.where(mask, adv, 0.0)  # [N, 1] or [N, T]
    unclipped = ratio if delta is None else ratio.clamp(max=delta)
    clipped = ratio.clamp(1 - epsilon, 1 + eps_high)
    per_token = -torch.minimum(unclipped * adv, clipped * adv)  # [N, T]
    if is_weights is not None:
        per_token = per_token * is_weights.to(per_token.dtype)
    stats: dict[str, torch.Tensor] = {}
    if beta > 0 and ref_logp is not None:
        kl = kl_k3(logp, torch.where(mask, ref_logp, 0.0))  # [N, T], 0 at padding
        per_token = per_token + beta * kl
        stats["kl"] = _masked_mean(kl.detach(), mask)
    loss = AGGREGATIONS[loss_type](per_token, mask, max_completion_length)
    with torch.no_grad():
        low = (ratio < 1 - epsilon) & (adv < 0)  # [N, T]
        high = (ratio > 1 + eps_high) & (adv > 0)
        for name, flag in (("low", low), ("high", high), ("region", low | high)):
            stats[f"clip_ratio/{name}_mean"] = _clip_fraction(flag, mask, importance_sampling_level)
        stats["ratio_mean"] = _masked_mean(ratio, mask)
    return loss, stats

"""Reward shaping and reweighting applied around the advantage estimators."""

from __future__ import annotations

from collections import Counter

import torch

from fairrl.errors import ConfigError


def overlong_penalty(lengths: torch.Tensor, max_len: int, cache_len: int) -> torch.Tensor:
    """DAPO soft overlong punishment (Yu et al., arXiv 2503.14476, sec. 3.4), per completion:

        R(y) = 0                             if |y| <= L_max - L_c
             = ((L_max - L_c) - |y|) / L_c   if L_max - L_c < |y| <= L_max
             = -1                            if |y| > L_max

    ``lengths``: [N] completion lengths in tokens; ``max_len`` = L_max (``max_completion_length``),
    ``cache_len`` = L_c (``overlong_buffer``). The result is added to the task reward; the penalty
    falls linearly from 0 to -1 across the last L_c tokens.
    """
    if not 0 < cache_len <= max_len:
        raise ConfigError(
            f"overlong_buffer must be in [1, max_completion_length={max_len}], got {cache_len}; "
            "it is the length of the window before the limit in which the penalty grows"
        )
    lengths = lengths.to(torch.float32)  # [N]
    start = max_len - cache_len
    window = (start - lengths) / cache_len  # [N]
    return torch.where(lengths <= start, 0.0, torch.where(lengths <= max_len, window, -1.0))


def group_balance_weights(groups: list[str]) -> torch.Tensor:
    """Inverse-frequency weight per sample so each demographic group carries equal total weight:

        w_i = N / (K * n_{g(i)})        N samples, K distinct groups, n_g samples in group g

    The weights have mean 1, so multiplying advantages by them keeps the overall scale while a
    minority group is no longer drowned out by a majority one. Returns ``[N]`` float32 (empty for
    no samples).

    Deviations: a project extension in the spirit of FairGRPO-style reweighting, not taken from a
    single paper; it reweights by group frequency only (no difficulty term).
    """
    counts = Counter(groups)
    n, k = len(groups), len(counts)
    return torch.tensor([n / (k * counts[g]) for g in groups], dtype=torch.float32)


def novelty_sharpening(adv: torch.Tensor, seq_logprobs: torch.Tensor, lam: float = 2.5, kappa: float = 0.5) -> torch.Tensor:
    """XRPO's novelty-guided advantage sharpening (Bamba et al., arXiv 2510.06672, sec. 3.3):

        s_i   = (1 / |y_i|) sum_t log pi(y_i,t | x, y_i,<t)      length-normalised log-likelihood
        eta_i = exp(s_i - mean_j s_j)                            likelihood relative to the group
        A_i  <- A_i + min(max(lam * (1 - eta_i), 0), kappa * A_i)   for correct replies (A_i > 0)

    A correct reply the policy found less likely than its group's average gets a bonus, capped at
    ``kappa`` times its own advantage; likely replies and the others are unchanged. ``adv``,
    ``seq_logprobs``: [P, G] (the sampling policy's log-probs, mean per token). Returns [P, G].

    Deviations: the paper applies it to verified-correct replies under 0/1 rewards; with any reward fairrl
    takes "correct" as a positive advantage (under 0/1 rewards in a mixed group the same set; an
    all-correct group has zero advantages and is unchanged). The authors' code could not be read here,
    so the form follows the paper's text (defaults lam 2.5, kappa 0.5 as in our reference notes).
    """
    s = seq_logprobs.to(adv.dtype)  # [P, G]; NaN = no reply there (a smaller group)
    eta = torch.exp(s - s.nanmean(dim=1, keepdim=True))  # [P, G]
    bonus = torch.minimum((lam * (1.0 - eta)).clamp(min=0.0), kappa * adv)  # [P, G]
    return torch.where(adv > 0, adv + bonus, adv)

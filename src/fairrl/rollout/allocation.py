"""XRPO's rollout allocator (Bamba et al., arXiv 2510.06672, sec. 3.1): more of a step's rollouts for the
prompts whose mean reward is most uncertain, instead of G for every prompt (``algorithm.rollout_allocator``).

A step's budget stays P x G completions. Every prompt first gets ``n0`` rollouts; the rest are given out in
phases of ``k`` rollouts per chosen prompt, each phase to the ceil(P / 2) prompts of highest priority

    h_q(n)  = t_{1 - a/2, n - 1} * s_q / sqrt(n)                 half-width of the t interval of the mean
    Pi_q    = (h_q(n_q) - h_q(n_q + k)) + lam * sqrt(log(1 + T) / n_q)

(s_q: the sample sd of prompt q's rewards so far, n_q its rollouts, T the steps done + 1): the first term is
the uncertainty one more phase would remove, the second a UCB-style exploration bonus that favours prompts
with few rollouts. A prompt stops receiving rollouts at ``max_rollouts``. Pure functions here; the sampling
loop is :mod:`fairrl.trainer.allocation`.

Deviations / unverified: the authors' code could not be read here; the phase size, the ceil(P / 2) prompts
per phase and the defaults (a = 0.05, lam = 1) are this implementation's choices, and T counts training steps.
"""

from __future__ import annotations

import math
from functools import lru_cache


def _t_pdf(x: float, df: int) -> float:
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    return c * (1 + x * x / df) ** (-(df + 1) / 2)


def _t_cdf_upper_half(x: float, df: int, n: int = 2000) -> float:
    """P(0 <= T <= x) by Simpson's rule (n even intervals)."""
    h = x / n
    s = _t_pdf(0.0, df) + _t_pdf(x, df) + sum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, n))
    return s * h / 3


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """Student t quantile t_{p, df} for p in (0.5, 1) (bisection on the CDF; ~1e-6 accurate for df >= 1)."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile takes 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while 0.5 + _t_cdf_upper_half(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 + _t_cdf_upper_half(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def half_width(sd: float, n: int, confidence: float = 0.95) -> float:
    """h(n) = t_{1 - a/2, n - 1} * sd / sqrt(n), a = 1 - confidence (inf below two rollouts)."""
    if n < 2:
        return math.inf
    return t_quantile(1 - (1 - confidence) / 2, n - 1) * sd / math.sqrt(n)


def priority(rewards: list[float], extra: int, step: int, exploration: float = 1.0, confidence: float = 0.95) -> float:
    """Pi_q of the module docstring for a prompt whose rollouts so far earned ``rewards`` (NaN ignored)."""
    seen = [r for r in rewards if not math.isnan(r)]
    n = len(seen)
    if n < 2:
        return math.inf  # no spread known yet: most to learn
    mean = sum(seen) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in seen) / (n - 1))
    gain = half_width(sd, n, confidence) - half_width(sd, n + extra, confidence)
    return gain + exploration * math.sqrt(math.log(1 + step) / n)


def next_phase(rewards: list[list[float]], budget_left: int, phase: int, max_rollouts: int, step: int,
               exploration: float = 1.0, confidence: float = 0.95) -> list[int]:  # fmt: skip
    """The prompts (indices) that get ``phase`` more rollouts next: the ceil(P / 2) highest priorities among
    those that can take them, as many as the budget allows (ties: the lower index first). [] when done."""
    room = [q for q, r in enumerate(rewards) if len(r) + phase <= max_rollouts]
    k = min(math.ceil(len(rewards) / 2), budget_left // max(phase, 1), len(room))
    if k <= 0:
        return []
    ranked = sorted(room, key=lambda q: (-priority(rewards[q], phase, step, exploration, confidence), q))
    return sorted(ranked[:k])

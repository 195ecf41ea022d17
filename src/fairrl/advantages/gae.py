"""PPO advantages for language models: KL-penalised per-token rewards, GAE, returns and whitening.

Pure functions over right-padded completions ``[B, T]`` (B = P*G rows, T completion tokens, ``mask`` 1 on
the generated tokens, end-of-sequence included, 0 on the padding after them). Token t of row i is an
action; its state is the prompt plus tokens < t, whose value V_t the critic predicts from the hidden
state that also predicts token t.

RLHF form of PPO (Ziegler et al., arXiv 1909.08593, eq. 2; Ouyang et al., arXiv 2203.02155, eq. 2):

    r_t = -kl_coef * kl_t + [t = n - 1] * score        kl_t = log pi_old(o_t) - log pi_ref(o_t)   (k1)
                                                       or exp(d) - d - 1, d = log pi_ref - log pi_old  (k3)

with n the row's completion length: the scalar reward arrives with the last generated token. GAE
(Schulman et al., arXiv 1506.02438, eqs. 11-16) over the episode t = 0..n-1, with V_n = 0 (terminal):

    delta_t = r_t + gamma * V_{t+1} - V_t
    A_t     = sum_{l >= 0} (gamma * lam)^l delta_{t+l} = delta_t + gamma * lam * A_{t+1}
    R_t     = A_t + V_t                                  (the value target, "returns")

Advantages are then whitened over the batch's real tokens: (A - mean) / sqrt(var + 1e-8), var with
Bessel's correction, as TRL does.

Peers: TRL <= 0.11's ``PPOTrainer`` (``compute_rewards`` / ``compute_advantages``) uses these very
conventions and matches to float rounding on random padded inputs (tests/test_ppo.py, skipped where that
TRL is not installed). Deviations from TRL's later ``PPOTrainer`` (0.12+, now ``trl.experimental.ppo``):
- it adds the score one position *after* the last generated token (``sequence_lengths + 1``, whose value
  it keeps, "padding_mask_p1") unless that falls off the end; here it goes on the last generated token
  and V_n = 0, the textbook episode end. For rows that fill all T positions the two agree.
- it raises when whitening sees a single token; here one token whitens to 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fairrl.errors import ConfigError

KL_ESTIMATORS = ("k1", "k3")
WHITEN_EPS = 1e-8


def _check(mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}")
    for name, t in tensors.items():
        if t.shape != mask.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != mask shape {tuple(mask.shape)}")


def kl_penalty(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """Per-token KL estimate ``[B, T]`` of the sampled tokens (0 on padding; module docstring).

    ``k1`` = log pi - log pi_ref (unbiased, may be negative per token; TRL's default); ``k3`` =
    exp(d) - d - 1 with d = log pi_ref - log pi (Schulman, "Approximating KL Divergence", 2020; >= 0).
    """
    _check(mask, logp=logp, ref_logp=ref_logp)
    if estimator not in KL_ESTIMATORS:
        raise ConfigError(f"ppo.kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    m = mask.bool()
    d = torch.where(m, ref_logp - logp, 0.0)  # [B, T]
    kl = -d if estimator == "k1" else torch.exp(d) - d - 1
    return torch.where(m, kl, 0.0)


def token_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """r_t = -kl_coef * kl_t, plus ``scores`` [B] on each row's last real token; returns (r, kl), ``[B, T]``.

    A row without tokens gets no reward at all (its score is dropped).
    """
    if scores.shape != mask.shape[:1]:
        raise ValueError(f"scores must be [B] = [{mask.shape[0]}], got shape {tuple(scores.shape)}")
    kl = kl_penalty(logp, ref_logp, mask, estimator)  # [B, T]
    rewards = -kl_coef * kl
    lengths = mask.sum(-1).long()  # [B]
    rows = torch.nonzero(lengths > 0).flatten()
    rewards = rewards.index_put((rows, lengths[rows] - 1), scores[rows].to(rewards.dtype), accumulate=True)
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns ``[B, T]`` (module docstring), 0 on padding.

    ``mask`` must be a prefix mask per row (right padding), as completions are; values past a row's last
    token count as V_n = 0, so the episode ends there.
    """
    _check(mask, rewards=rewards, values=values)
    m = mask.to(values.dtype)
    rewards, values = rewards * m, values * m  # padding: r = 0, V = 0
    B, T = values.shape
    advantages = torch.zeros_like(values)
    running = values.new_zeros(B)  # A_{t+1}
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else values.new_zeros(B)  # 0 past the last real token
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * m


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = WHITEN_EPS,
                  reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """(x - mean) / sqrt(var + eps) over the real tokens (unbiased var, as TRL), 0 on padding ``[B, T]``.

    ``reduce`` sums a small tensor over data-parallel ranks (:meth:`fairrl.distributed.Ranks.sum`), so the mean
    and variance are those of every rank's tokens together (the same two passes, each total reduced)."""
    _check(mask, x=x)
    total = reduce or (lambda t: t)
    m = mask.bool()
    n = total(m.sum().reshape(1).to(x.dtype).cpu()).to(x.device)[0]
    mean = total(torch.where(m, x, 0.0).sum().reshape(1).cpu()).to(x.device)[0] / n.clamp(min=1)
    centred = torch.where(m, x - mean, 0.0)
    var = total((centred**2).sum().reshape(1).cpu()).to(x.device)[0] / (n - 1).clamp(min=1)
    return centred * torch.rsqrt(var + eps)

"""Importance weights for rollouts sampled by another engine (vLLM): the training-inference mismatch.

When completions come from an inference engine, its token log-probs ``q`` (vLLM's, after temperature:
``logprobs_mode="processed_logprobs"``) differ from the trainer's ``pi_old`` for the same weights (other
kernels, precision, batching). The surrogate assumes samples from ``pi_old``; truncated or masked
importance sampling (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL
training"; TRL ``vllm_importance_sampling_*``) reweights each token's loss by

    token level:     w_{i,t} = exp(log pi_old(y_{i,t}) - log q(y_{i,t}))
    sequence level:  w_i     = exp(sum_t [log pi_old(y_{i,t}) - log q(y_{i,t})])

then, ``*_truncate``: w <- clamp(w, C_min, C_max); ``*_mask``: w <- 0 where w < C_min or w > C_max. The
clipped surrogate's per-token loss is multiplied by w (before the KL term is added), as in TRL's
GRPOTrainer. A token whose engine log-prob is missing (NaN) gets w = 1.
"""

from __future__ import annotations

import math

import torch

from fairrl.errors import ConfigError

IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def rollout_is_weights(
    old_logp: torch.Tensor,
    sampling_logp: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "sequence_mask",
    clip_min: float | None = None,
    clip_max: float | None = 3.0,
) -> torch.Tensor:
    """Weights (module docstring): ``[N, T]`` for token modes, ``[N, 1]`` for sequence modes; no gradient.

    ``old_logp`` (trainer) and ``sampling_logp`` (engine): ``[N, T]``; ``mask``: 1 = completion token."""
    if mode not in IS_MODES:
        raise ConfigError(f"vllm_importance_sampling_mode must be one of {', '.join(IS_MODES)}, got {mode!r}")
    with torch.no_grad():
        diff = torch.nan_to_num((old_logp.float() - sampling_logp.float()) * mask.float(), nan=0.0)  # [N, T]
        if mode.startswith("sequence"):
            diff = diff.sum(-1, keepdim=True)  # [N, 1]
        w = diff.exp()
        if mode.endswith("truncate"):
            return w.clamp(min=clip_min, max=clip_max)
        low = -math.inf if clip_min is None else clip_min
        high = math.inf if clip_max is None else clip_max
        return w.masked_fill((w < low) | (w > high), 0.0)

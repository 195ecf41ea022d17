"""Step-level advantages for multi-turn episodes (GiGPO, Feng et al. 2025, arXiv 2505.10978).

GiGPO adds to GRPO's episode-level advantage a *step-level* one: within a group of episodes, the steps
that start from the same state (an "anchor state") form a step group, and each step's return is
normalised within its step group (paper §3.2, eq. 7-9):

    A(step) = A_E(episode) + w * A_S(step),   A_S = (R_step - mean_{step group} R) / std_{step group} R

with ``R_step = gamma^(T - t) * R_episode`` when only the episode's end is rewarded (eq. 8 with one
terminal reward). In a multi-agent chain, a "state" is the message an agent is given: turns of the same
role whose prompts are identical (typically the first role's turn, or every turn of episodes that
diverge late) form a step group. A step group of one has no baseline and gets ``A_S = 0``; equal returns
give exactly 0 (as :mod:`fairrl.advantages.estimators`).

Deviation: GiGPO groups states by exact equality of the environment observation; here the key is the
turn's full prompt (role, task and every earlier message), which is that observation.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


def step_group_advantages(
    returns: torch.Tensor, keys: Sequence[Hashable], scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """``A_S`` for steps with returns ``returns`` ``[N]`` and step-group keys ``keys`` (N of them).

    Within each key's steps: ``R - mean`` (divided by the unbiased std + ``eps`` when ``scale``); steps
    alone in their group, and groups whose returns are all equal, get 0.
    """
    if returns.ndim != 1 or len(keys) != returns.shape[0]:
        raise ValueError(f"need one key per return: {len(keys)} keys for returns of shape {tuple(returns.shape)}")
    out = torch.zeros_like(returns)
    groups: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    for rows in groups.values():
        if len(rows) < 2:
            continue
        r = returns[rows]
        if bool((r == r[0]).all()):
            continue
        centred = r - r.mean()
        out[rows] = centred / (r.std() + eps) if scale else centred
    return out


def discounted_step_returns(episode_returns: torch.Tensor, turns: int, gamma: float = 1.0) -> torch.Tensor:
    """``[E] -> [E, turns]``: the return seen from turn t of an episode rewarded only at its end,
    ``gamma^(turns - 1 - t) * R`` (GiGPO eq. 8 with a single terminal reward)."""
    powers = torch.arange(turns - 1, -1, -1, dtype=episode_returns.dtype)  # [turns]
    return episode_returns[:, None] * gamma**powers[None, :]

"""Advantage estimators: rewards of P prompts x G completions -> advantages, as pure functions.

Group keys are explicit: row p of a ``[P, G]`` reward tensor holds the G completions of prompt p.

Conventions shared by every estimator here:

- ``NaN`` marks a sample for which no reward function applied (TRL's ``None``). It is left out of
  every mean and standard deviation and gets advantage exactly 0: it neither pushes nor pulls.
- Standard deviations are unbiased (divide by n - 1), like ``torch.std`` and TRL's GRPOTrainer.
- A group whose (non-NaN) rewards are all equal gets advantage exactly 0. Float rounding alone
  would leave about 1e-4 there (e.g. eight rewards of 0.1: r - mean = -7e-9, std = 8e-9, divided by
  std + eps), a tiny push that equal rewards must not give.
- ``num_generations`` (G) must be at least 2: one completion has no baseline.

An estimator has the signature ``fn(rewards [P, G], *, scale_rewards="group", eps=1e-4,
seq_logprobs=None, **kw) -> [P, G]`` and is registered in ``ESTIMATORS`` under its config name
(``algorithm.advantage_estimator``); keyword arguments an estimator does not use are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fairrl.errors import ConfigError

Estimator = Callable[..., torch.Tensor]
ESTIMATORS: dict[str, Estimator] = {}
SCALE_REWARDS = ("group", "batch", "none")
MULTI_OBJECTIVE_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


def _register(name: str) -> Callable[[Estimator], Estimator]:
    def add(fn: Estimator) -> Estimator:
        ESTIMATORS[name] = fn
        return fn

    return add


# -- NaN-aware statistics ---------------------------------------------------------------------


def _nanmean(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Mean over non-NaN entries; 0 where there are none (callers mask those positions anyway)."""
    if dim is None:
        return _nanmean(x.reshape(-1), 0)
    ok = ~torch.isnan(x)
    total = torch.where(ok, x, 0.0).sum(dim, keepdim=keepdim)
    return total / ok.sum(dim, keepdim=keepdim).clamp(min=1)


def _nanstd(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Unbiased standard deviation over non-NaN entries; 0 where there are fewer than two."""
    if dim is None:
        return _nanstd(x.reshape(-1), 0)
    ok = ~torch.isnan(x)
    mean = _nanmean(x, dim, keepdim=True)
    squares = torch.where(ok, (x - mean) ** 2, 0.0).sum(dim, keepdim=keepdim)
    n = ok.sum(dim, keepdim=keepdim)
    return (squares / (n - 1).clamp(min=1)).sqrt()


def _constant(x: torch.Tensor, dim: int) -> torch.Tensor:
    """True where every non-NaN entry along ``dim`` is equal (also with 0 or 1 entries); keeps ``dim``."""
    ok = ~torch.isnan(x)
    high = torch.where(ok, x, -torch.inf).amax(dim, keepdim=True)
    low = torch.where(ok, x, torch.inf).amin(dim, keepdim=True)
    return high <= low


# -- checks and shared steps --------------------------------------------------------------------


def _check_rewards(rewards: torch.Tensor) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [P, G] (prompts x completions), got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ConfigError(
            f"num_generations must be >= 2, got {rewards.shape[1]}: a group of one completion has no "
            "baseline (its standard deviation is undefined); set algorithm.num_generations to 2 or more"
        )


def _check_scale(scale_rewards: str) -> None:
    if scale_rewards not in SCALE_REWARDS:
        raise ConfigError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")


def _scale(centred: torch.Tensor, pool: torch.Tensor, scale_rewards: str, eps: float) -> torch.Tensor:
    """Divide by the std of ``pool`` per group (row), over the whole batch, or not at all."""
    if scale_rewards == "group":
        return centred / (_nanstd(pool, dim=1, keepdim=True) + eps)  # [P, G]
    if scale_rewards == "batch":
        return centred / (_nanstd(pool) + eps)
    return centred


def _finish(adv: torch.Tensor, rewards: torch.Tensor, pool: torch.Tensor | None = None) -> torch.Tensor:
    """Zero for NaN samples and for groups whose ``pool`` (default: the rewards) is constant."""
    flat = _constant(rewards if pool is None else pool, dim=1)  # [P, 1]
    return torch.where(torch.isnan(rewards) | flat, 0.0, adv)


# -- estimators -----------------------------------------------------------------------------------


@_register("grpo")
def grpo(
    rewards: torch.Tensor, *, scale_rewards: str = "group", eps: float = 1e-4, **_: object
) -> torch.Tensor:
    """GRPO outcome advantage (Shao et al., DeepSeekMath, arXiv 2402.03300, sec. 4.1.2):

        A_i = (r_i - mean_j r_j) / (std_j r_j + eps)          j over the prompt's group

    ``scale_rewards`` (TRL): ``group`` divides by the group std (paper), ``batch`` by the std of all
    rewards in the batch (the mean stays per group), ``none`` does not divide (= Dr. GRPO).

    Deviations: unbiased std (``torch.std``, as TRL; the paper does not say); eps = 1e-4 as TRL;
    NaN samples are excluded and get 0; constant groups get exactly 0 (module docstring).
    """
    _check_rewards(rewards)
    _check_scale(scale_rewards)
    centred = rewards - _nanmean(rewards, dim=1, keepdim=True)  # [P, G]
    return _finish(_scale(centred, rewards, scale_rewards, eps), rewards)


@_register("dr_grpo")
def dr_grpo(rewards: torch.Tensor, **_: object) -> torch.Tensor:
    """Dr. GRPO advantage (Liu et al., "Understanding R1-Zero-Like Training", arXiv 2503.20783):

        A_i = r_i - mean_j r_j

    Dropping the division by the std removes GRPO's question-difficulty bias; the matching loss
    aggregation is ``loss_type="dr_grpo"`` (a constant normaliser, removing the length bias).

    Deviations: ``scale_rewards`` is ignored (the estimator is defined by not scaling).
    """
    _check_rewards(rewards)
    return _finish(rewards - _nanmean(rewards, dim=1, keepdim=True), rewards)


@_register("rloo")
def rloo(rewards: torch.Tensor, **_: object) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al., arXiv 2402.14740):

        A_i = r_i - 1/(n - 1) * sum_{j != i} r_j  =  n/(n - 1) * (r_i - mean_j r_j)

    over the n non-NaN samples of the group; a group with fewer than two such samples gets 0.

    Deviations: ``scale_rewards`` is ignored (RLOO's baseline is not scaled).
    """
    _check_rewards(rewards)
    ok = ~torch.isnan(rewards)
    values = torch.where(ok, rewards, 0.0)  # [P, G]
    n = ok.sum(dim=1, keepdim=True)  # [P, 1]
    others = (values.sum(dim=1, keepdim=True) - values) / (n - 1).clamp(min=1)  # [P, G]
    return _finish(torch.where(n > 1, rewards - others, 0.0), rewards)


@_register("ngrpo")
def ngrpo(
    rewards: torch.Tensor,
    *,
    scale_rewards: str = "group",
    eps: float = 1e-4,
    virtual_reward: float = 1.0,
    **_: object,
) -> torch.Tensor:
    """NGRPO (Nan et al., arXiv 2509.18851, advantage calibration): one virtual sample with the
    maximum reward is added to each group before the statistics,

        R'_p = R_p ∪ {r_max},   A_i = (r_i - mean(R'_p)) / (std(R'_p) + eps)      (unbiased std)

    so an all-wrong group still gets a negative signal, and an all-correct group (every
    r_i = r_max) gets A = 0. ``virtual_reward`` is r_max and must be the largest attainable reward.
    The authors pair it with asymmetric clipping: ``epsilon=0.16, epsilon_high=0.24`` in the loss.

    Deviations: eps = 1e-4 (authors 1e-6); ``scale_rewards="batch"`` divides by the std of all real
    and virtual rewards of the batch, ``"none"`` only centres. A reward above ``virtual_reward``
    raises: the virtual sample would no longer be the maximum the method relies on.
    """
    _check_rewards(rewards)
    _check_scale(scale_rewards)
    top = torch.where(torch.isnan(rewards), -torch.inf, rewards).max()
    if top > virtual_reward + 1e-6:
        raise ConfigError(
            f"advantage_estimator 'ngrpo': a reward of {float(top):.4g} exceeds "
            f"virtual_reward={virtual_reward} "
            "(the maximum attainable reward the virtual sample stands for); use rewards whose maximum is "
            "virtual_reward (e.g. reward weights summing to 1) or pass a larger virtual_reward"
        )
    virtual = torch.full((rewards.shape[0], 1), virtual_reward, dtype=rewards.dtype)  # [P, 1]
    augmented = torch.cat([rewards, virtual], dim=1)  # [P, G + 1]
    centred = rewards - _nanmean(augmented, dim=1, keepdim=True)  # [P, G]
    return _finish(_scale(centred, augmented, scale_rewards, eps), rewards, pool=augmented)


@_register("unlikeliness")
def unlikeliness(
    rewards: torch.Tensor,
    *,
    scale_rewards: str = "group",
    eps: float = 1e-4,
    seq_logprobs: torch.Tensor | None = None,
    beta_rank: float = 0.25,
    **_: object,
) -> torch.Tensor:
    """Unlikeliness reward (He, Fried, Welleck, "Rewarding the Unlikely", arXiv 2506.02355):

        rank_i = position of sample i when its group is sorted by mean token log-prob under
                 pi_old, ascending (rank 0 = least likely)
        r'_i   = r_i * (1 - beta_rank * rank_i / G)
        A      = GRPO(r')

    Among equally rewarded samples the rare ones keep more reward, countering GRPO's rank bias
    toward already-likely answers. ``seq_logprobs``: [P, G] mean token log-probs. The authors use
    beta_rank = 0.25 together with two optimisation passes per batch (``num_iterations=2``).

    Deviations: eps = 1e-4 (authors 1e-6); ties are ranked by position (stable sort) so the result
    is deterministic. The paper's rewards are 0/1; with negative rewards the factor shrinks the
    penalty of likely samples.
    """
    _check_rewards(rewards)
    if seq_logprobs is None:
        raise ConfigError(
            "advantage_estimator 'unlikeliness' needs the completions' mean log-probs (seq_logprobs); "
            "pass seq_logprobs or choose another estimator"
        )
    if seq_logprobs.shape != rewards.shape:
        raise ValueError(
            f"seq_logprobs shape {tuple(seq_logprobs.shape)} != rewards shape {tuple(rewards.shape)}"
        )
    G = rewards.shape[1]
    order = torch.sort(seq_logprobs, dim=1, stable=True).indices  # [P, G]
    ranks = torch.sort(order, dim=1, stable=True).indices.to(rewards.dtype)  # [P, G], 0 = least likely
    shaped = rewards * (1 - beta_rank * ranks / G)  # [P, G]
    return grpo(shaped, scale_rewards=scale_rewards, eps=eps)


# -- several reward functions -> one reward -------------------------------------------------------


def combine_rewards(
    per_fn: torch.Tensor,
    weights: Sequence[float],
    mode: str = "sum_then_normalize",
    *,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Combine K reward functions ``[P, G, K]`` (NaN = function not applicable) into ``[P, G]``.

    TRL ``multi_objective_aggregation``:

    - ``sum_then_normalize`` (TRL default): r = sum_k w_k r_k over the applicable k; the estimator
      normalises the sum afterwards.
    - ``normalize_then_sum`` (GDPO, Liu et al., arXiv 2601.05242): each reward is first standardised
      within its group over its applicable samples, z_k = (r_k - mean_g r_k) / (std_g r_k + eps)
      (unbiased std), then r = sum_k w_k z_k. A reward constant within a group gives z_k = 0.

    A sample where no function applies stays NaN, so the estimators exclude it and give it 0.

    As in TRL 1.16, which sets a row where every function returned None back to NaN after its nansum.
    Deviation: TRL's GDPO path also re-normalises the sum over the whole batch, whereas here the
    configured estimator does the second normalisation.
    """
    if per_fn.dim() != 3:
        raise ValueError(f"per_fn must be [P, G, K], got shape {tuple(per_fn.shape)}")
    if mode not in MULTI_OBJECTIVE_AGGREGATIONS:
        raise ConfigError(
            f"multi_objective_aggregation must be one of {MULTI_OBJECTIVE_AGGREGATIONS}, got {mode!r}"
        )
    if per_fn.shape[-1] != len(weights):
        raise ConfigError(
            f"{per_fn.shape[-1]} reward functions but {len(weights)} reward weights; "
            "give one weight per entry of rewards.functions"
        )
    ok = ~torch.isnan(per_fn)  # [P, G, K]
    if mode == "normalize_then_sum":
        z = (per_fn - _nanmean(per_fn, dim=1, keepdim=True)) / (_nanstd(per_fn, dim=1, keepdim=True) + eps)
        per_fn = torch.where(_constant(per_fn, dim=1), 0.0, z)  # [P, G, K]; NaN entries masked below
    w = torch.as_tensor(list(weights), dtype=per_fn.dtype)  # [K]
    total = (torch.where(ok, per_fn, 0.0) * w).sum(-1)  # [P, G]
    return torch.where(ok.any(-1), total, torch.nan)


# -- batch diagnostics ----------------------------------------------------------------------------


def zero_variance_groups(rewards: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
    """``[P]`` bool: groups whose non-NaN rewards have std <= ``atol`` (they give no gradient).

    DAPO's dynamic sampling (Yu et al., arXiv 2503.14476, sec. 3.2) drops these groups and samples
    new prompts. A group with fewer than two non-NaN rewards counts as zero-variance.
    """
    return _nanstd(rewards, dim=1) <= atol


def group_stats(rewards: torch.Tensor, atol: float = 1e-6) -> dict[str, float]:
    """TRL-named batch statistics of a ``[P, G]`` reward tensor:

    - ``reward``: mean over non-NaN rewards (NaN if there are none);
    - ``reward_std``: unbiased std of all non-NaN rewards of the batch (TRL 1.16: ``nanstd(rewards)``);
    - ``reward_std_group_mean``: mean over groups of the within-group std (the spread GRPO's group
      baseline sees; fairrl logged this as ``reward_std`` before matching TRL);
    - ``frac_reward_zero_std``: fraction of groups whose rewards are all equal (see
      :func:`zero_variance_groups`).
    """
    ok = ~torch.isnan(rewards)
    return {
        "reward": float(_nanmean(rewards)) if ok.any() else float("nan"),
        "reward_std": float(_nanstd(rewards)),
        "reward_std_group_mean": float(_nanstd(rewards, dim=1).mean()),
        "frac_reward_zero_std": float(zero_variance_groups(rewards, atol).float().mean()),
    }

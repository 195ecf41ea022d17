"""Advantage estimators, reward combination and shaping against hand-computed values."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch

from fairrl.advantages import (
    ESTIMATORS,
    combine_rewards,
    group_balance_weights,
    group_stats,
    overlong_penalty,
    zero_variance_groups,
)
from fairrl.config import AlgorithmConfig
from fairrl.errors import ConfigError

nan = float("nan")
S2 = math.sqrt(0.5)  # 0.70711: (r - mean) / std for a group {1, 0} (std = sqrt(0.5 / 1))


def close(actual: torch.Tensor, expected: list, atol: float = 1e-4) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


def test_registry_matches_config_names():
    """Every advantage_estimator the config accepts has an estimator, and no other."""
    names = get_args(AlgorithmConfig.model_fields["advantage_estimator"].annotation)
    assert set(ESTIMATORS) == set(names)


# -- grpo ------------------------------------------------------------------------------------------


def test_grpo_group_normalisation_uses_unbiased_std():
    """r = [1, 0, 0, 1]: mean 0.5; unbiased std = sqrt(4 * 0.25 / 3) = 0.57735 (biased would be 0.5);
    A = +-0.5 / 0.57735 = +-0.86603."""
    adv = ESTIMATORS["grpo"](torch.tensor([[1.0, 0.0, 0.0, 1.0]]), eps=0.0)
    close(adv, [[0.86603, -0.86603, -0.86603, 0.86603]])


def test_grpo_eps_is_added_to_the_std():
    """Same group, eps = 1e-4 (TRL): 0.5 / (0.57735 + 0.0001) = 0.86588."""
    adv = ESTIMATORS["grpo"](torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    close(adv[0, :1], [0.86588], atol=2e-5)


def test_grpo_scale_rewards_group_batch_none():
    """r = [[2, 0], [1, 1]]; group means [1, 1] -> centred [[1, -1], [0, 0]].
    group: std of {2, 0} = sqrt(2 / 1) = 1.41421 -> +-0.70711; the constant group -> 0.
    batch: std of {2, 0, 1, 1} = sqrt((1 + 1 + 0 + 0) / 3) = 0.81650 -> +-1.22474 (mean stays per group).
    none: the centred values."""
    r = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    close(ESTIMATORS["grpo"](r, eps=0.0), [[S2, -S2], [0.0, 0.0]])
    close(ESTIMATORS["grpo"](r, scale_rewards="batch", eps=0.0), [[1.22474, -1.22474], [0.0, 0.0]])
    close(ESTIMATORS["grpo"](r, scale_rewards="none"), [[1.0, -1.0], [0.0, 0.0]])
    with pytest.raises(ConfigError, match="scale_rewards"):
        ESTIMATORS["grpo"](r, scale_rewards="std")


def test_nan_rewards_are_left_out_and_get_zero_advantage():
    """[1, nan, 0]: statistics over {1, 0} -> mean 0.5, std 0.70711 -> A = [0.70711, 0, -0.70711].
    A group with no reward at all -> all 0 (no NaN leaks)."""
    adv = ESTIMATORS["grpo"](torch.tensor([[1.0, nan, 0.0], [nan, nan, nan]]), eps=0.0)
    close(adv, [[S2, 0.0, -S2], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "unlikeliness"])
def test_equal_rewards_give_exactly_zero(name):
    """Eight rewards of 0.1: float rounding leaves r - mean = -7.45e-9 and std = 8e-9, which divided by
    std + 1e-4 would be -7.4e-5; the estimators must return exact zeros. unlikeliness with all-zero
    rewards: r' = 0 * factor = 0."""
    value = 0.0 if name == "unlikeliness" else 0.1
    r = torch.full((2, 8), value)
    adv = ESTIMATORS[name](r, seq_logprobs=torch.randn(2, 8))
    assert torch.equal(adv, torch.zeros(2, 8))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_group_of_one_is_rejected(name):
    with pytest.raises(ConfigError, match="num_generations must be >= 2"):
        ESTIMATORS[name](torch.tensor([[1.0], [0.0]]), seq_logprobs=torch.zeros(2, 1))


# -- dr_grpo, rloo ---------------------------------------------------------------------------------


def test_dr_grpo_centres_without_scaling():
    """[3, 1, 2]: mean 2 -> [1, -1, 0]. [3, nan, 1]: mean of {3, 1} = 2 -> [1, 0, -1]."""
    adv = ESTIMATORS["dr_grpo"](torch.tensor([[3.0, 1.0, 2.0], [3.0, nan, 1.0]]))
    close(adv, [[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]])


def test_rloo_leave_one_out_baseline():
    """[3, 1, 2]: A_0 = 3 - (1 + 2)/2 = 1.5; A_1 = 1 - (3 + 2)/2 = -1.5; A_2 = 2 - (3 + 1)/2 = 0.
    [3, nan, 1, 2]: the NaN is not a 'other' sample -> [1.5, 0, -1.5, 0].
    [5, nan, nan, nan]: one valid sample has no baseline -> 0."""
    close(ESTIMATORS["rloo"](torch.tensor([[3.0, 1.0, 2.0]])), [[1.5, -1.5, 0.0]])
    r = torch.tensor([[3.0, nan, 1.0, 2.0], [5.0, nan, nan, nan]])
    close(ESTIMATORS["rloo"](r), [[1.5, 0.0, -1.5, 0.0], [0.0, 0.0, 0.0, 0.0]])


# -- ngrpo -----------------------------------------------------------------------------------------


def test_ngrpo_all_wrong_negative_all_correct_zero():
    """[0, 0, 0] + virtual 1: mean 0.25, unbiased std = sqrt((3 * 0.0625 + 0.5625) / 3) = 0.5
    -> A = -0.25 / 0.5 = -0.5 each (plain GRPO would give 0). [1, 1, 1] + 1 -> constant -> 0."""
    adv = ESTIMATORS["ngrpo"](torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), eps=0.0)
    close(adv, [[-0.5, -0.5, -0.5], [0.0, 0.0, 0.0]])
    assert torch.equal(adv[1], torch.zeros(3))


def test_ngrpo_mixed_group_scaling_and_virtual_reward():
    """[1, 0] + 1: mean 2/3; deviations 1/3, -2/3, 1/3 -> var (1/9 + 4/9 + 1/9) / 2 = 1/3, std 0.57735
    -> A = [0.57735, -1.15470]. virtual_reward = 2 with [2, 0] is the same group scaled by 2 -> same A.
    scale_rewards none on [0, 0, 0]: -0.25 each."""
    close(ESTIMATORS["ngrpo"](torch.tensor([[1.0, 0.0]]), eps=0.0), [[0.57735, -1.15470]])
    adv = ESTIMATORS["ngrpo"](torch.tensor([[2.0, 0.0]]), eps=0.0, virtual_reward=2.0)
    close(adv, [[0.57735, -1.15470]])
    close(ESTIMATORS["ngrpo"](torch.zeros(1, 3), scale_rewards="none"), [[-0.25, -0.25, -0.25]])


def test_ngrpo_rejects_rewards_above_the_virtual_maximum():
    with pytest.raises(ConfigError, match="virtual_reward"):
        ESTIMATORS["ngrpo"](torch.tensor([[1.7, 0.0]]))


# -- unlikeliness ----------------------------------------------------------------------------------


def test_unlikeliness_ranks_by_logprob():
    """r = [1, 1, 0, 0], seq log-probs [-0.1, -5, -3, -1]; ascending order: idx 1, 2, 3, 0 -> ranks
    [3, 0, 1, 2] (rank 0 = least likely). G = 4: r' = [1 * (1 - 0.25 * 3/4), 1 * (1 - 0), 0, 0]
    = [0.8125, 1, 0, 0]. GRPO (eps 0): mean 0.453125; var = (0.359375^2 + 0.546875^2 + 2 * 0.453125^2) / 3
    = 0.279622, std 0.528793 -> A = [0.67961, 1.03419, -0.85690, -0.85690]: the rare correct sample wins."""
    r = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    logp = torch.tensor([[-0.1, -5.0, -3.0, -1.0]])
    adv = ESTIMATORS["unlikeliness"](r, seq_logprobs=logp, eps=0.0)
    close(adv, [[0.67961, 1.03419, -0.85690, -0.85690]])


def test_unlikeliness_ties_rank_by_position():
    """Equal log-probs: stable ranks [0, 1] -> r' = [1, 1 - 0.25 * 1/2] = [1, 0.875];
    mean 0.9375, std = sqrt(2 * 0.0625^2 / 1) = 0.088388 -> A = [0.70711, -0.70711]."""
    adv = ESTIMATORS["unlikeliness"](torch.ones(1, 2), seq_logprobs=torch.full((1, 2), -1.0), eps=0.0)
    close(adv, [[S2, -S2]])


def test_unlikeliness_needs_matching_logprobs():
    r = torch.tensor([[1.0, 0.0]])
    with pytest.raises(ConfigError, match="seq_logprobs"):
        ESTIMATORS["unlikeliness"](r)
    with pytest.raises(ValueError, match="shape"):
        ESTIMATORS["unlikeliness"](r, seq_logprobs=torch.zeros(1, 3))


# -- combine_rewards -------------------------------------------------------------------------------


def test_combine_sum_then_normalize():
    """K = 2, weights [1, 2]: [1 + 2*0, 0 + 2*1] = [1, 2]; [nan, 3] -> only the applicable one: 6;
    [nan, nan] -> NaN (no function applies)."""
    per_fn = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [nan, 3.0], [nan, nan]]])  # [1, 4, 2]
    out = combine_rewards(per_fn, [1.0, 2.0])
    assert out[0, :3].tolist() == [1.0, 2.0, 6.0]
    assert math.isnan(out[0, 3].item())


def test_combine_normalize_then_sum():
    """Group [[1, 0], [0, 1]], eps 0: column 0 {1, 0} -> z = [+0.70711, -0.70711], column 1 the opposite;
    weights [1, 2]: [0.70711 - 1.41421, -0.70711 + 1.41421] = [-0.70711, 0.70711]."""
    g = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    close(combine_rewards(g, [1.0, 2.0], "normalize_then_sum", eps=0.0), [[-S2, S2]])


def test_combine_normalize_then_sum_nan_and_constant_columns():
    """Column 0 = [1, 0, nan, nan] -> z over {1, 0}: [0.70711, -0.70711, -, -];
    column 1 = [5, 5, 5, nan] is constant -> z = 0 where applicable. Weights [1, 1]:
    [0.70711, -0.70711, 0 (only column 1 applies), NaN (none applies)]."""
    per_fn = torch.tensor([[[1.0, 5.0], [0.0, 5.0], [nan, 5.0], [nan, nan]]])
    out = combine_rewards(per_fn, [1.0, 1.0], "normalize_then_sum", eps=0.0)
    close(out[:, :3], [[S2, -S2, 0.0]])
    assert math.isnan(out[0, 3].item())


def test_combine_rejects_bad_mode_and_weight_count():
    g = torch.zeros(1, 2, 2)
    with pytest.raises(ConfigError, match="multi_objective_aggregation"):
        combine_rewards(g, [1.0, 1.0], "average")
    with pytest.raises(ConfigError, match="one weight per"):
        combine_rewards(g, [1.0])


# -- diagnostics -----------------------------------------------------------------------------------


def test_zero_variance_groups():
    """[1, 1] constant; [0, 1] varies; [nan, 2] has one reward -> no variance."""
    r = torch.tensor([[1.0, 1.0], [0.0, 1.0], [nan, 2.0]])
    assert zero_variance_groups(r).tolist() == [True, False, True]


def test_group_stats():
    """[[1, 1], [0, 1]]: reward 3/4 = 0.75; reward_std = unbiased std of {1, 1, 0, 1} = sqrt(0.25) = 0.5
    (TRL's nanstd over the batch; the old per-group mean, 0.35355, is reward_std_group_mean: group stds 0
    and 0.70711); one of two groups constant -> frac 0.5. With [[1, nan], [0, 1]]: reward over {1, 0, 1} =
    2/3, reward_std = std of {1, 0, 1} = sqrt(1/3). All NaN: reward NaN."""
    s = group_stats(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    assert s["reward"] == pytest.approx(0.75)
    assert s["reward_std"] == pytest.approx(0.5)
    assert s["reward_std_group_mean"] == pytest.approx(S2 / 2)
    assert s["frac_reward_zero_std"] == 0.5
    s = group_stats(torch.tensor([[1.0, nan], [0.0, 1.0]]))
    assert s["reward"] == pytest.approx(2 / 3)
    assert s["reward_std"] == pytest.approx(math.sqrt(1 / 3))
    assert math.isnan(group_stats(torch.full((1, 2), nan))["reward"])


# -- shaping ---------------------------------------------------------------------------------------


def test_overlong_penalty_regions():
    """L_max = 10, L_c = 4, window starts after 6: lengths 0, 6 -> 0; 7 -> (6 - 7)/4 = -0.25;
    8 -> -0.5; 10 -> -1; 11 -> -1 (beyond L_max)."""
    out = overlong_penalty(torch.tensor([0, 6, 7, 8, 10, 11]), max_len=10, cache_len=4)
    close(out, [0.0, 0.0, -0.25, -0.5, -1.0, -1.0], atol=0.0)
    for bad in (0, 11):
        with pytest.raises(ConfigError, match="overlong_buffer"):
            overlong_penalty(torch.tensor([1]), max_len=10, cache_len=bad)


def test_group_balance_weights():
    """3 of group a, 1 of b: N = 4, K = 2 -> a: 4 / (2 * 3) = 2/3, b: 4 / (2 * 1) = 2; mean 1 and each
    group's total weight is 2. One group -> all 1. No samples -> empty."""
    w = group_balance_weights(["a", "a", "b", "a"])
    close(w, [2 / 3, 2 / 3, 2.0, 2 / 3], atol=1e-6)
    assert w.mean().item() == pytest.approx(1.0)
    assert torch.equal(group_balance_weights(["x", "x"]), torch.ones(2))
    assert group_balance_weights([]).shape == (0,)

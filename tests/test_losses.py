"""Policy-loss variants and the k3 KL against hand-computed values and gradients."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch

from fairrl.config import AlgorithmConfig
from fairrl.errors import ConfigError
from fairrl.losses import AGGREGATIONS, kl_k3, policy_loss

# Two sequences, T = 3; the second has one padded token (|o_1| = 3, |o_2| = 2).
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
ADV = torch.tensor([1.0, -2.0])


def _at_ratio_one(loss_type: str, **kw):
    """logp = old_logp = 0 -> every ratio is 1 and the per-token loss is -A_i."""
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, stats = policy_loss(logp, logp.detach(), ADV, MASK, loss_type=loss_type, **kw)
    loss.backward()
    return loss, logp.grad, stats


def _one_token_each(ratios: list[float], adv: list[float], **kw):
    """N sequences of one token with the given ratios (old_logp = 0, logp = log ratio)."""
    logp = torch.tensor(ratios).log()[:, None].requires_grad_(True)  # [N, 1]
    loss, stats = policy_loss(logp, torch.zeros_like(logp), torch.tensor(adv), torch.ones_like(logp), **kw)
    loss.backward()
    return loss, logp.grad.flatten(), stats


def test_registry_matches_config_names():
    """Every loss_type but drpo (its own objective, fairrl.losses.drpo) aggregates the clipped surrogate;
    every one has a part share for gradient accumulation."""
    names = get_args(AlgorithmConfig.model_fields["loss_type"].annotation)
    assert set(AGGREGATIONS) | {"drpo"} == set(names)
    from fairrl.losses import PART_SHARES

    assert set(PART_SHARES) == set(names)


# -- aggregations at ratio 1 -----------------------------------------------------------------------


def test_grpo_sequence_mean_and_gradient_minus_a_over_len():
    """Per-token loss -A_i: sequence means -1 and +2 -> loss (-1 + 2) / 2 = 0.5.
    d loss / d logp_{i,t} = -A_i * rho / (|o_i| * N): seq 1: -1 / (3 * 2) = -1/6; seq 2: 2 / (2 * 2) = 0.5;
    the padded token: 0."""
    loss, grad, _ = _at_ratio_one("grpo")
    assert loss.item() == pytest.approx(0.5)
    torch.testing.assert_close(grad, torch.tensor([[-1 / 6] * 3, [0.5, 0.5, 0.0]]))


@pytest.mark.parametrize("loss_type", ["bnpo", "dapo"])
def test_token_mean(loss_type):
    """5 real tokens: (3 * -1 + 2 * 2) / 5 = 0.2; gradient -A_i / 5: seq 1 -0.2, seq 2 0.4, padding 0."""
    loss, grad, _ = _at_ratio_one(loss_type)
    assert loss.item() == pytest.approx(0.2)
    torch.testing.assert_close(grad, torch.tensor([[-0.2] * 3, [0.4, 0.4, 0.0]]))


def test_dr_grpo_constant_normaliser():
    """(3 * -1 + 2 * 2) / (N * L_max) = 1 / (2 * 4) = 0.125; gradient -A_i / 8: -0.125 and 0.25."""
    loss, grad, _ = _at_ratio_one("dr_grpo", max_completion_length=4)
    assert loss.item() == pytest.approx(0.125)
    torch.testing.assert_close(grad, torch.tensor([[-0.125] * 3, [0.25, 0.25, 0.0]]))
    with pytest.raises(ConfigError, match="max_completion_length"):
        _at_ratio_one("dr_grpo")


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_halves_average_to_the_full_batch(loss_type):
    """grpo and dr_grpo normalise per sequence / by a constant, so the loss of a batch equals the mean
    of the losses of its two equal halves (gradient accumulation 2 x 1 == 1 x 2)."""
    torch.manual_seed(0)
    logp, old = torch.randn(4, 5), torch.randn(4, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0])
    kw = {"loss_type": loss_type, "max_completion_length": 5}
    full, _ = policy_loss(logp, old, adv, mask, **kw)
    a, _ = policy_loss(logp[:2], old[:2], adv[:2], mask[:2], **kw)
    b, _ = policy_loss(logp[2:], old[2:], adv[2:], mask[2:], **kw)
    assert full.item() == pytest.approx((a.item() + b.item()) / 2)


# -- clipping --------------------------------------------------------------------------------------


def test_asymmetric_clipping_regions():
    """eps_low 0.2, eps_high 0.28, token mean over N = 5; loss = -min(rho A, clip(rho) A) / 5.
    0: A > 0, rho 1.5 > 1.28  -> clipped (constant 1.28): gradient 0;
    1: A > 0, rho 1.25 < 1.28 -> unclipped: d/dlogp = -rho A / 5 = -0.25;
    2: A < 0, rho 0.5 < 0.8   -> clipped (constant -0.8): gradient 0;
    3: A < 0, rho 1.5 (above) -> min picks rho A = -1.5, not clipped: gradient +1.5 / 5 = 0.3;
    4: A > 0, rho 0.5 (below) -> min picks rho A = 0.5, not clipped: gradient -0.5 / 5 = -0.1.
    Stats: low = {2} -> 1/5, high = {0} -> 1/5, region 2/5;
    ratio mean (1.5 + 1.25 + 0.5 + 1.5 + 0.5) / 5 = 1.05."""
    ratios, adv = [1.5, 1.25, 0.5, 1.5, 0.5], [1.0, 1.0, -1.0, -1.0, 1.0]
    _, g, stats = _one_token_each(ratios, adv, loss_type="bnpo", epsilon=0.2, epsilon_high=0.28)
    torch.testing.assert_close(g, torch.tensor([0.0, -0.25, 0.0, 0.3, -0.1]))
    assert stats["clip_ratio/low_mean"].item() == pytest.approx(0.2)
    assert stats["clip_ratio/high_mean"].item() == pytest.approx(0.2)
    assert stats["clip_ratio/region_mean"].item() == pytest.approx(0.4)
    assert stats["ratio_mean"].item() == pytest.approx(1.05)


def test_symmetric_epsilon_clips_what_clip_higher_keeps():
    """With epsilon_high unset (= 0.2), A > 0 at rho 1.25 > 1.2 is clipped: gradient 0 (vs -0.25 above)."""
    _, g, stats = _one_token_each([1.25], [1.0], loss_type="bnpo", epsilon=0.2)
    assert g.item() == 0.0
    assert stats["clip_ratio/high_mean"].item() == 1.0


def test_delta_caps_the_unclipped_ratio():
    """A = -1, rho = 3, eps 0.2. Without delta: -min(-3, -1.2) = 3, gradient d(-rho A)/dlogp = rho = 3.
    delta = 2: -min(-2, -1.2) = 2 with the capped ratio constant: gradient 0. delta <= 1 + eps rejected."""
    loss, g, _ = _one_token_each([3.0], [-1.0], loss_type="bnpo")
    assert loss.item() == pytest.approx(3.0) and g.item() == pytest.approx(3.0)
    loss, g, _ = _one_token_each([3.0], [-1.0], loss_type="bnpo", delta=2.0)
    assert loss.item() == pytest.approx(2.0) and g.item() == 0.0
    with pytest.raises(ConfigError, match="delta"):
        _one_token_each([3.0], [-1.0], loss_type="bnpo", delta=1.1)


# -- GSPO ------------------------------------------------------------------------------------------


def test_gspo_sequence_ratio_value_and_gradient():
    """log-ratios [0.1, 0.3] (+ a padded 5.0 that must be ignored): s = exp((0.1 + 0.3) / 2) = exp(0.2)
    = 1.22140 on both tokens. A = 1, eps 10 (no clipping), grpo: loss = -s = -1.22140.
    d(-s)/dlogp_t = -s / |o| = -0.61070 for each real token, 0 for the padding."""
    logp = torch.tensor([[0.1, 0.3, 5.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = policy_loss(
        logp, torch.zeros(1, 3), torch.tensor([1.0]), mask, importance_sampling_level="sequence", epsilon=10.0
    )
    loss.backward()
    assert loss.item() == pytest.approx(-math.exp(0.2))
    torch.testing.assert_close(logp.grad, torch.tensor([[-math.exp(0.2) / 2] * 2 + [0.0]]))
    assert stats["ratio_mean"].item() == pytest.approx(math.exp(0.2))


def test_gspo_clips_the_whole_sequence():
    """Same sequence with eps 0.2: s = 1.2214 > 1.2 and A > 0 -> loss -1.2, every token's gradient 0,
    high-clip fraction 1. Token level instead: rho = exp(0.1) = 1.105 (kept, gradient -1.105 / 2 = -0.55259)
    and exp(0.3) = 1.350 (clipped, gradient 0)."""
    logp = torch.tensor([[0.1, 0.3]], requires_grad=True)
    loss, stats = policy_loss(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
                              importance_sampling_level="sequence")
    loss.backward()
    assert loss.item() == pytest.approx(-1.2)
    assert torch.equal(logp.grad, torch.zeros(1, 2))
    assert stats["clip_ratio/high_mean"].item() == 1.0
    logp.grad = None
    loss, _ = policy_loss(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-math.exp(0.1) / 2, 0.0]]))


# -- KL --------------------------------------------------------------------------------------------


def test_k3_values_and_gradient():
    """d = ref - logp. d = log 2: 2 - log 2 - 1 = 0.30685; d = 0: 0; d = -log 2: 0.5 + log 2 - 1 = 0.19315
    (never negative). d k3 / d logp = 1 - exp(d): -1, 0, 0.5."""
    logp = torch.zeros(3, requires_grad=True)
    ref = torch.tensor([math.log(2.0), 0.0, -math.log(2.0)])
    val = kl_k3(logp, ref)
    torch.testing.assert_close(val, torch.tensor([1 - math.log(2.0), 0.0, math.log(2.0) - 0.5]))
    val.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([-1.0, 0.0, 0.5]))


def test_kl_term_in_the_loss():
    """One sequence of 2 tokens at ratio 1, A = 1, bnpo. ref - logp = [log 2, 0] -> k3 = [0.30685, 0];
    beta 0.1 adds 0.1 * 0.30685 / 2 = 0.015343; stat kl = 0.30685 / 2 = 0.15343. beta > 0 needs ref_logp."""
    logp = torch.zeros(1, 2)
    base, _ = policy_loss(logp, logp, torch.tensor([1.0]), torch.ones(1, 2), loss_type="bnpo")
    ref = torch.tensor([[math.log(2.0), 0.0]])
    with_kl, stats = policy_loss(logp, logp, torch.tensor([1.0]), torch.ones(1, 2), loss_type="bnpo",
                                 ref_logp=ref, beta=0.1)
    assert (with_kl - base).item() == pytest.approx(0.1 * (1 - math.log(2.0)) / 2)
    assert stats["kl"].item() == pytest.approx((1 - math.log(2.0)) / 2)
    assert "kl" not in policy_loss(logp, logp, torch.tensor([1.0]), torch.ones(1, 2))[1]
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, logp, torch.tensor([1.0]), torch.ones(1, 2), beta=0.1)


# -- masks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", sorted(AGGREGATIONS))
def test_padding_contents_never_matter(loss_type, level):
    """NaN / inf at padded positions of logp, old_logp and ref_logp give the same loss and gradient as
    zeros there, and a zero gradient at the padding."""
    torch.manual_seed(0)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    base = torch.randn(2, 3) * 0.1
    kw = {"loss_type": loss_type, "importance_sampling_level": level, "max_completion_length": 3}
    kw["beta"] = 0.05
    results = []
    for fill in (0.0, float("nan"), -float("inf")):
        logp = torch.where(mask.bool(), base, fill).requires_grad_(True)
        old = torch.where(mask.bool(), base * 0.5, fill)
        ref = torch.where(mask.bool(), base * 2.0, fill)
        loss, stats = policy_loss(logp, old, torch.tensor([1.0, -1.0]), mask, ref_logp=ref, **kw)
        loss.backward()
        results.append((loss.detach(), logp.grad, stats))
    for loss, grad, stats in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        torch.testing.assert_close(grad, results[0][1])
        assert all(torch.isfinite(v) for v in stats.values())
    assert torch.equal(results[0][1][~mask.bool()], torch.zeros(3))


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_empty_sequences_contribute_zero_without_nan(level):
    """Mask [[1, 1], [0, 0]], A = [1, 5], ratio 1: per-token loss -1 on the two real tokens.
    grpo: (-1 + 0) / 2 = -0.5 (the empty sequence still counts in N); bnpo: -2 / 2 = -1;
    dr_grpo (L_max 2): -2 / (2 * 2) = -0.5. An all-empty batch gives 0 everywhere."""
    expected = {"grpo": -0.5, "bnpo": -1.0, "dapo": -1.0, "dr_grpo": -0.5}
    for loss_type, value in expected.items():
        logp = torch.zeros(2, 2, requires_grad=True)
        kw = {"loss_type": loss_type, "importance_sampling_level": level, "max_completion_length": 2}
        adv, mask = torch.tensor([1.0, 5.0]), torch.tensor([[1, 1], [0, 0]])
        loss, _ = policy_loss(logp, logp.detach(), adv, mask, **kw)
        loss.backward()
        assert loss.item() == pytest.approx(value)
        assert torch.equal(logp.grad[1], torch.zeros(2))
        loss, stats = policy_loss(logp, logp.detach(), adv, torch.zeros(2, 2), **kw)
        assert loss.item() == 0.0
        assert all(v.item() == 0.0 for k, v in stats.items() if k != "ratio_mean")


def test_rejects_bad_names_and_shapes():
    logp = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match="loss_type"):
        policy_loss(logp, logp, ADV, MASK, loss_type="ppo")
    with pytest.raises(ConfigError, match="importance_sampling_level"):
        policy_loss(logp, logp, ADV, MASK, importance_sampling_level="segment")
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, logp, torch.zeros(2, 1), MASK)
    with pytest.raises(ValueError, match="mask"):
        policy_loss(logp, logp, ADV, MASK[:, :2])


def test_gspo_clip_fractions_count_sequences_as_trl():
    """Sequence level: row 0 (1 token, log-ratio 0.3: s = 1.350 > 1.2, A > 0) is clipped, row 1 (4 tokens,
    log-ratio 0: s = 1) is not. TRL 1.16 logs the share of *sequences*: 1/2; the token share would be 1/5.
    Token level keeps the token share: 1/5."""
    logp = torch.tensor([[0.3, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    adv = torch.tensor([1.0, 1.0])
    _, seq = policy_loss(logp, torch.zeros(2, 4), adv, mask, importance_sampling_level="sequence")
    assert seq["clip_ratio/high_mean"].item() == pytest.approx(0.5)
    assert seq["clip_ratio/region_mean"].item() == pytest.approx(0.5) and seq["clip_ratio/low_mean"].item() == 0.0
    _, tok = policy_loss(logp, torch.zeros(2, 4), adv, mask, importance_sampling_level="token")
    assert tok["clip_ratio/high_mean"].item() == pytest.approx(0.2)

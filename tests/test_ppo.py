"""PPO's pure pieces against hand-computed values: KL rewards, GAE, whitening, the clipped value loss, the
per-token surrogate; the critic's values line up with the log-probs; TRL as the peer where importable."""

from __future__ import annotations

import math

import pytest
import torch

from fairrl.advantages.gae import gae, kl_penalty, masked_whiten, token_rewards
from fairrl.config import load_config
from fairrl.errors import ConfigError
from fairrl.losses import policy_loss, value_loss
from fairrl.models.logprobs import completion_logprobs
from fairrl.models.value_head import ActorCritic
from fairrl.trainer.ppo_step import check_ppo, ppo_optimizer_steps
from tests.tiny import tiny_policy

# Two rows, T = 3; the second has one padded token (n_1 = 3, n_2 = 2).
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_token_rewards_k1_penalty_everywhere_and_the_score_on_the_last_token():
    """kl = logp - ref = [[0.5, 0, -0.5], [0, -1, pad]]; r = -0.1 * kl = [[-0.05, 0, 0.05], [0, 0.1, 0]];
    scores 1 and 2 land on t = 2 and t = 1: [[-0.05, 0, 1.05], [0, 2.1, 0]]."""
    logp = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, 5.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, -9.0]])
    r, kl = token_rewards(torch.tensor([1.0, 2.0]), logp, ref, MASK, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, -0.5], [0.0, -1.0, 0.0]]))
    torch.testing.assert_close(r, torch.tensor([[-0.05, 0.0, 1.05], [0.0, 2.1, 0.0]]))


def test_k3_penalty_and_an_empty_row_gets_no_score():
    """d = ref - logp = [-0.5, 0, 0.5] -> k3 = e^d - d - 1 = [0.106531, 0, 0.148721]; an all-padding row: 0."""
    logp = torch.tensor([[-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [3.0, 3.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    kl = kl_penalty(logp, ref, mask, "k3")
    torch.testing.assert_close(kl[0], torch.tensor([math.exp(-0.5) - 0.5, 0.0, math.exp(0.5) - 1.5]))
    r, _ = token_rewards(torch.tensor([1.0, 7.0]), logp, ref, mask, kl_coef=0.0, estimator="k3")
    torch.testing.assert_close(r, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ConfigError, match="kl_estimator"):
        kl_penalty(logp, ref, mask, "k2")


def test_gae_by_hand():
    """gamma 1, lam 0.5. Row 1: r = [0, 0, 1], V = [0.5, 0.25, 0.5], V_3 = 0:
    delta = [0 + 0.25 - 0.5, 0 + 0.5 - 0.25, 1 + 0 - 0.5] = [-0.25, 0.25, 0.5];
    A_2 = 0.5, A_1 = 0.25 + 0.5 * 0.5 = 0.5, A_0 = -0.25 + 0.5 * 0.5 = 0; R = A + V = [0.5, 0.75, 1].
    Row 2 (n = 2; the padded r = 7, V = 9 must not count): r = [0, 2], V = [1, 1]:
    delta_1 = 2 - 1 = 1 = A_1, A_0 = (0 + 1 - 1) + 0.5 * 1 = 0.5; R = [1.5, 2, 0]."""
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 7.0]])
    values = torch.tensor([[0.5, 0.25, 0.5], [1.0, 1.0, 9.0]])
    adv, ret = gae(rewards, values, MASK, gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.5, 0.5], [0.5, 1.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.5, 0.75, 1.0], [1.5, 2.0, 0.0]]))


def test_gae_discount_by_hand():
    """gamma 0.5, lam 1 (Monte Carlo): V = 0, r = [1, 0, 4] -> A_t = sum_l 0.5^l r_{t+l} = [2, 2, 4]."""
    adv, ret = gae(torch.tensor([[1.0, 0.0, 4.0]]), torch.zeros(1, 3), torch.ones(1, 3), gamma=0.5, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([[2.0, 2.0, 4.0]]))
    torch.testing.assert_close(ret, adv)


def test_gae_equals_the_closed_form_sum_on_random_padded_rows():
    """A_t = sum_{l=0}^{n-1-t} (gamma lam)^l delta_{t+l}, delta_t = r_t + gamma V_{t+1} [t+1 < n] - V_t."""
    g = torch.Generator().manual_seed(0)
    B, T, gamma, lam = 5, 7, 0.9, 0.8
    rewards, values = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    lengths = [7, 3, 1, 0, 5]
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).float()
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for i, n in enumerate(lengths):
        v = [values[i, t].item() if t < n else 0.0 for t in range(T + 1)]
        delta = [rewards[i, t].item() + gamma * v[t + 1] - v[t] for t in range(n)]
        want = [sum((gamma * lam) ** k * delta[t + k] for k in range(n - t)) for t in range(n)] + [0.0] * (T - n)
        torch.testing.assert_close(adv[i], torch.tensor(want), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ret[i], (adv[i] + values[i]) * mask[i])


def test_masked_whiten_by_hand():
    """Real values 1, 2, 3, 4: mean 2.5, unbiased var (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3,
    so (x - 2.5) / sqrt(5/3) = [-1.161895, -0.387298, 0.387298, 1.161895]; padding 0; one token -> 0."""
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    s = math.sqrt(5 / 3 + 1e-8)
    torch.testing.assert_close(masked_whiten(x, mask), torch.tensor([[-1.5, -0.5, 0.5], [1.5, 0.0, 0.0]]) / s)
    assert masked_whiten(torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 0.0]])).abs().sum() == 0


def test_value_loss_by_hand():
    """e_v = 0.2. Token 0: V = 1, V_old = 0.5, R = 0 -> clip 0.7; (1 - 0)^2 = 1 > 0.49: unclipped, grad
    0.5 * 2 * (1 - 0) / 2 = 0.5. Token 1: V = 1, V_old = 0.5, R = 2 -> (0.7 - 2)^2 = 1.69 > (1 - 2)^2 = 1:
    clipped, flat -> grad 0. Loss 0.5 * (1 + 1.69) / 2 = 0.6725; clipfrac 1/2. The padded token: nothing."""
    values = torch.tensor([[1.0, 1.0, float("nan")]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 3.0]])
    ret = torch.tensor([[0.0, 2.0, -4.0]])
    loss, stats = value_loss(values, old, ret, torch.tensor([[1.0, 1.0, 0.0]]), cliprange_value=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(0.6725)
    torch.testing.assert_close(values.grad, torch.tensor([[0.5, 0.0, 0.0]]))
    assert stats["value_clipfrac"].item() == pytest.approx(0.5)
    assert stats["value_error"].item() == pytest.approx(1.0)


def test_per_token_advantages_in_the_clipped_surrogate():
    """Ratio 1, token-mean (bnpo) aggregation: loss = -(1 - 2 + 3 + 4 + 5) / 5 = -2.2 and
    d loss / d logp_t = -A_t / 5; the padded token's advantage (100) counts nowhere."""
    logp = torch.zeros(2, 3, requires_grad=True)
    adv = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, 100.0]])
    loss, _ = policy_loss(logp, logp.detach(), adv, MASK, loss_type="bnpo")
    loss.backward()
    assert loss.item() == pytest.approx(-2.2)
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.2, 0.4, -0.6], [-0.8, -1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        policy_loss(logp, logp.detach(), adv[:, :2], MASK)


def _trl_ppo():
    """TRL's PPOTrainer class where the installed TRL has one with its pieces as methods (TRL <= 0.11:
    ``compute_rewards``, ``compute_advantages``, ``loss``), else a skip saying why."""
    trl = pytest.importorskip("trl", reason="TRL is not installed (pip install 'fairrl[bench]')")

    try:
        from trl.trainer.ppo_trainer import PPOTrainer

        PPOTrainer.compute_advantages  # noqa: B018 - the 0.x layout this test drives
    except Exception:  # noqa: BLE001 - any import failure means there is no peer to run
        pytest.skip(f"TRL {trl.__version__} has no PPOTrainer with compute_rewards / compute_advantages / loss "
                    "(TRL >= 0.12 inlines them in PPOTrainer.train, and 1.x ships no PPO); conventions were "
                    "read from its source instead (fairrl.advantages.gae)")  # fmt: skip
    return PPOTrainer


def test_against_trl_on_identical_random_inputs():
    """KL rewards, GAE + returns + whitening, and the clipped value and policy losses equal TRL's own
    methods (TRL <= 0.11, whose conventions - score on the last real token, V = 0 past it - are fairrl's)."""
    from types import SimpleNamespace

    trainer = _trl_ppo()
    g = torch.Generator().manual_seed(1)
    B, T, V = 5, 6, 11
    mask = (torch.arange(T)[None] < torch.tensor([6, 2, 4, 5, 1])[:, None]).long()
    logp, ref, old_logp = (torch.randn(B, T, generator=g, dtype=torch.float64) - 2 for _ in range(3))
    values, vpred = (torch.randn(B, T, generator=g, dtype=torch.float64) for _ in range(2))
    scores = torch.randn(B, generator=g, dtype=torch.float64)
    cfg = SimpleNamespace(kl_penalty="kl", gamma=0.9, lam=0.8, whiten_rewards=False, cliprange=0.2,
                          cliprange_value=0.2, vf_coef=0.1, ratio_threshold=1e9)  # fmt: skip
    me = SimpleNamespace(config=cfg, kl_ctl=SimpleNamespace(value=0.05))
    me._kl_penalty = lambda a, b: trainer._kl_penalty(me, a, b)
    theirs_r, _, _ = trainer.compute_rewards(me, scores, logp, ref, mask)
    ours_r, _ = token_rewards(scores, logp, ref, mask, kl_coef=0.05)
    m = mask.bool()
    torch.testing.assert_close(ours_r[m], theirs_r[m])
    _, theirs_adv, theirs_ret = trainer.compute_advantages(me, values, theirs_r, mask)
    adv, ret = gae(ours_r, values, mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(ret, theirs_ret * mask)
    torch.testing.assert_close(masked_whiten(adv, mask)[m], theirs_adv[m])
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    pg, vf, _ = trainer.loss(me, old_logp, values * mask, logits, vpred, logp, mask, theirs_adv, theirs_ret)
    ours_pg, _ = policy_loss(logp, old_logp, masked_whiten(adv, mask), mask, loss_type="bnpo", epsilon=0.2)
    ours_vf, _ = value_loss(vpred, values * mask, ret, mask, cliprange_value=0.2)
    torch.testing.assert_close(ours_pg, pg)
    torch.testing.assert_close(0.1 * ours_vf, vf)


# -- the critic ------------------------------------------------------------------------------------


def _rollout_inputs(G: int = 2):
    prompt_ids = torch.tensor([[0, 5, 9], [8, 10, 11]])
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    completion_ids = torch.tensor([[12, 13, 2], [14, 2, 0], [15, 16, 17], [9, 2, 0]])
    completion_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 0]])
    return prompt_ids, prompt_mask, completion_ids, completion_mask, G


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_values_line_up_with_the_logprobs(critic):
    """One forward (shared head on a Llama) gives the same log-probs as completion_logprobs, and the values
    equal the head applied to the trunk's states; a zero-initialised head gives V = 0."""
    _, model = tiny_policy()
    ac = ActorCritic(model, critic)
    args = _rollout_inputs()
    logp, _, values = ac.logprobs_and_values(*args)
    want, _ = completion_logprobs(model, *args)
    torch.testing.assert_close(logp, want)
    assert values.shape == want.shape and values.abs().sum() == 0
    torch.nn.init.normal_(ac.value_head.score.weight)
    _, _, values = ac.logprobs_and_values(*args)
    torch.testing.assert_close(values, ac.values(*args))
    assert (values[args[3] == 0] == 0).all() and (values[args[3] == 1] != 0).all()
    names = {n.split(".")[0] for n, _ in ac.named_parameters()}
    assert names == ({"policy", "value_head"} | ({"critic"} if critic == "separate" else set()))


def test_detached_trunk_trains_only_the_head():
    _, model = tiny_policy()
    ac = ActorCritic(model, "shared")
    ac.values(*_rollout_inputs(), detach_trunk=True).sum().backward()
    assert ac.value_head.score.weight.grad is not None
    assert all(p.grad is None for p in ac.policy.parameters())


# -- config ----------------------------------------------------------------------------------------


def test_one_completion_per_prompt_only_for_ppo():
    cfg = load_config(None, ["method=ppo", "algorithm.num_generations=1"])
    assert cfg.algorithm.num_generations == 1 and cfg.ppo.gamma == 1.0 and cfg.ppo.lam == 0.95
    assert ppo_optimizer_steps(cfg) == cfg.max_steps * 4
    with pytest.raises(ConfigError, match="greater than or equal to 2"):
        load_config(None, ["algorithm.num_generations=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.beta=0.04", "ppo.kl_coef"),
        ("algorithm.num_iterations=2", "ppo.ppo_epochs"),
        ("algorithm.dynamic_sampling=true", "dynamic_sampling"),
        ("ppo.num_mini_batches=5", "prompts_per_step"),
    ],
)
def test_settings_ppo_cannot_honour_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        check_ppo(load_config(None, ["method=ppo", override]))


def test_grpo_only_settings_get_a_note():
    notes = check_ppo(load_config(None, ["method=ppo", "algorithm.loss_type=dapo"]))
    assert notes and "algorithm.loss_type" in notes[0]
    assert check_ppo(load_config(None, ["method=ppo"])) == []


def test_masked_whiten_over_shards_equals_whole_batch():
    """Whitening two shards with their totals reduced (as two ranks do) equals whitening the whole batch."""
    from fairrl.advantages.gae import masked_whiten

    g = torch.Generator().manual_seed(0)
    x, mask = torch.randn(6, 5, generator=g), (torch.rand(6, 5, generator=g) > 0.3).float()
    parts = [(x[:2], mask[:2]), (x[2:], mask[2:])]
    calls: list[list[torch.Tensor]] = [[] for _ in parts]

    def shard_reduce(k):  # each reduce call of shard k gets the matching partial of the other shard
        def reduce(t):
            calls[k].append(t)
            return t + other_partials[1 - k][len(calls[k]) - 1]
        return reduce

    # the partial sums each shard contributes, in call order: count, sum, then sum of squares around the mean
    m = mask.bool()
    n = m.sum().float()
    mean = torch.where(m, x, 0.0).sum() / n
    other_partials = [
        [m[:2].sum().float().reshape(1), torch.where(m[:2], x[:2], 0.0).sum().reshape(1),
         (torch.where(m[:2], x[:2] - mean, 0.0) ** 2).sum().reshape(1)],
        [m[2:].sum().float().reshape(1), torch.where(m[2:], x[2:], 0.0).sum().reshape(1),
         (torch.where(m[2:], x[2:] - mean, 0.0) ** 2).sum().reshape(1)],
    ]  # fmt: skip
    got = torch.cat([masked_whiten(xs, ms, reduce=shard_reduce(k)) for k, (xs, ms) in enumerate(parts)])
    torch.testing.assert_close(got, masked_whiten(x, mask), atol=1e-6, rtol=1e-5)

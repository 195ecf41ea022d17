"""DRPO's loss (arXiv 2510.04474) against hand-computed values, and its gradient against the authors' form."""

from __future__ import annotations

import math

import pytest
import torch

from fairrl.losses.drpo import drpo_loss


def _group():
    # three replies to one prompt: scores s = (-1, -2, -1); lengths (2, 1, 2)
    logp = torch.tensor([[-1.0, -1.0], [-2.0, 0.0], [-0.5, -1.5]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    rewards = torch.tensor([1.0, 1.0, 0.0])
    return logp, mask, rewards


def test_one_group_by_hand():
    """Correct replies 0 and 1, wrong reply 2. L_max 2, lambda 0.5: w0 = exp((1 - 2/2)/0.5) = 1,
    w1 = exp((1 - 1/2)/0.5) = e. tau 10: tau * log mean exp(s_2 / tau) = s_2 = -1. Margins s_i + 1:
    (0, -1). J = (1*0 + e*(-1)) / (1 + e) = -0.731059; loss = -J = 0.731059 (pi_old = pi: no KL term)."""
    logp, mask, rewards = _group()
    loss, stats = drpo_loss(logp, logp.detach(), mask, rewards, 3, 2, tau=10.0, lam=0.5)
    assert float(loss) == pytest.approx(math.e / (1 + math.e), abs=1e-6)
    assert float(stats["drpo/valid_groups"]) == 1.0 and float(stats["kl_old"]) == 0.0


def test_groups_without_both_kinds_count_in_q_and_give_nothing():
    """A second group, all correct, is skipped but counted: the loss halves; its rows get zero gradient."""
    logp, mask, rewards = _group()
    logp2 = torch.cat([logp.detach(), torch.tensor([[-0.1, -0.2], [-0.3, -0.4], [-0.5, -0.6]])]).requires_grad_()
    loss, stats = drpo_loss(logp2, logp2.detach(), torch.cat([mask, torch.ones(3, 2, dtype=torch.long)]),
                            torch.cat([rewards, torch.ones(3)]), 3, 2, tau=10.0, lam=0.5)  # fmt: skip
    assert float(loss) == pytest.approx(math.e / (1 + math.e) / 2, abs=1e-6)
    loss.backward()
    assert torch.all(logp2.grad[3:] == 0) and torch.isfinite(logp2.grad).all()
    assert float(stats["drpo/valid_groups"]) == 0.5


def test_gradient_equals_the_authors_surrogate():
    """The authors evaluate the negatives' term as S / S.detach() (S = sum_j exp(s_j / tau - max)); its
    gradient is that of log S, so both forms give the same gradient (values differ by a constant)."""
    torch.manual_seed(0)
    G, T, L = 4, 5, 5
    logp = (-torch.rand(2 * G, T) * 3).requires_grad_()
    mask = (torch.rand(2 * G, T) > 0.3).long()
    mask[:, 0] = 1
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    ours, _ = drpo_loss(logp, logp.detach(), mask, rewards, G, L, tau=2.0, lam=0.3)
    ours.backward()
    g_ours = logp.grad.clone()

    x = logp.detach().clone().requires_grad_()
    m = mask.bool()
    s = (x * m).sum(-1) / m.sum(-1)
    total = 0.0
    for q in range(2):
        idx = range(q * G, (q + 1) * G)
        pos = [i for i in idx if rewards[i] == 1]
        neg = [i for i in idx if rewards[i] == 0]
        top = max(float(s[j]) / 2.0 for j in neg)
        S = sum(torch.exp(s[j] / 2.0 - top) for j in neg)
        w = {i: math.exp((1 - float(m[i].sum()) / L) / 0.3) for i in pos}
        total = total + sum(w[i] * (s[i] - 2.0 * S / S.detach()) for i in pos) / sum(w.values())
    (-total / 2).backward()
    assert torch.allclose(g_ours, x.grad, atol=1e-6)


def test_trust_region_term_by_hand():
    """pi / pi_old = e^0.1 on every token (log ratio 0.1): KL = e^0.1 - 0.1 - 1 = 0.0051709; with beta 1000
    and delta 1e-4 the term adds max(1000 * (0.0051709 - 0.0001), 0) * 0.0051709 = 0.026222."""
    logp, mask, rewards = _group()
    base, _ = drpo_loss(logp, logp.detach(), mask, rewards, 3, 2, tau=10.0, lam=0.5)
    loss, stats = drpo_loss(logp, logp.detach() - 0.1, mask, rewards, 3, 2, tau=10.0, lam=0.5)
    kl = math.exp(0.1) - 0.1 - 1
    assert float(stats["kl_old"]) == pytest.approx(kl, abs=1e-6)
    assert float(loss - base) == pytest.approx(1000 * (kl - 1e-4) * kl, abs=1e-6)


def test_rows_must_be_whole_groups():
    logp, mask, rewards = _group()
    with pytest.raises(ValueError, match="whole groups"):
        drpo_loss(logp, logp, mask, rewards, 2, 2)


def test_grpo_with_drpo_learns_a_trivial_reward(tmp_path):
    """loss_type=drpo on the tiny model: a reply is "correct" when at least a third of its words are 'a'
    (tests.tiny:count_a); the mean reward rises over 30 steps, and the run logs DRPO's statistics."""
    import json

    from fairrl.config import load_config
    from fairrl.recipes.grpo import run_training
    from tests.test_train_e2e import _data
    from tests.tiny import tiny_policy

    cfg = load_config(None, [
        "model.lora=null", "data.sources=[{kind: bbq}]", "rewards.functions=[{name: 'tests.tiny:count_a'}]",
        "algorithm.num_generations=8", "algorithm.prompts_per_step=4", "algorithm.max_completion_length=6",
        "learning_rate=0.02", "algorithm.loss_type=drpo", "algorithm.drpo_threshold=0.34", "algorithm.drpo_tau=1",
        "tensorboard=false", "eval.bbq_items_per_condition=0", "save_steps=100", "max_steps=30",
    ])  # fmt: skip
    tok, model = tiny_policy(0)
    run = run_training(cfg, out=str(tmp_path / "r"), console=lambda s: None, evaluate=False, progress=False,
                       components=(tok, model), data=_data())  # fmt: skip
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in rows]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.2, rewards
    assert "drpo/valid_groups" in rows[0] and "kl_old" in rows[0]


@pytest.mark.parametrize(("sets", "match"), [
    (["algorithm.micro_batch_size=4"], "multiple of num_generations"),
    (["method=sft"], "objective of method grpo"),
])  # fmt: skip
def test_drpo_config_checks(sets, match):
    from fairrl.config import load_config
    from fairrl.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_config(None, ["algorithm.loss_type=drpo", "algorithm.num_generations=8", *sets])


def test_drpo_micro_batches_equal_one_batch(tmp_path):
    """Gradient accumulation over micro-batches of one group equals the whole batch at once (same metrics
    over 3 steps, so the same updates)."""
    import json

    from fairrl.config import load_config
    from fairrl.recipes.grpo import run_training
    from tests.test_train_e2e import _data
    from tests.tiny import tiny_policy

    def run(name, *extra):
        cfg = load_config(None, [
            "model.lora=null", "data.sources=[{kind: bbq}]", "rewards.functions=[{name: 'tests.tiny:count_a'}]",
            "algorithm.num_generations=4", "algorithm.prompts_per_step=4", "algorithm.max_completion_length=5",
            "learning_rate=0.02", "algorithm.loss_type=drpo", "algorithm.drpo_threshold=0.2", "tensorboard=false",
            "eval.bbq_items_per_condition=0", "save_steps=100", "max_steps=3", *extra,
        ])  # fmt: skip
        tok, model = tiny_policy(0)
        out = run_training(cfg, out=str(tmp_path / name), console=lambda s: None, evaluate=False, progress=False,
                           components=(tok, model), data=_data())  # fmt: skip
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]

    whole, parts = run("whole"), run("parts", "algorithm.micro_batch_size=4")
    for a, b in zip(whole, parts, strict=True):
        assert a["reward"] == b["reward"] and a["loss"] == pytest.approx(b["loss"], abs=1e-6)

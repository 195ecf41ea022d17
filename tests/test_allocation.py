"""XRPO's rollout allocator: the t interval and priorities by hand, the phase plan, and groups of different
sizes trained exactly (the padded batch's gradient equals the real rows' own), in the loop and on resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fairrl.advantages import ESTIMATORS
from fairrl.config import load_config
from fairrl.errors import ConfigError
from fairrl.losses import policy_loss
from fairrl.models.logprobs import completion_logprobs
from fairrl.rollout.allocation import half_width, next_phase, priority, t_quantile
from fairrl.trainer.allocation import assemble
from fairrl.trainer.grpo_step import GRPOStep
from tests.test_dynamic_sampling import _stream
from tests.test_microbatch import _Recorder
from tests.tiny import tiny_policy


@pytest.mark.parametrize(("p", "df", "want"), [(0.975, 1, 12.706), (0.975, 3, 3.182), (0.975, 5, 2.571),
                                               (0.975, 30, 2.042), (0.95, 5, 2.015)])  # fmt: skip
def test_t_quantile_matches_the_table(p, df, want):
    assert t_quantile(p, df) == pytest.approx(want, abs=1e-3)


def test_priority_by_hand():
    """[0, 1, 0, 1]: sd = sqrt(4 x 0.25 / 3) = 0.57735; h(4) = 3.1824 x 0.57735 / 2 = 0.91869;
    h(6) = 2.5706 x 0.57735 / sqrt(6) = 0.60590; gain 0.31279; bonus sqrt(log 2 / 4) = 0.41628 -> 0.72907.
    [1, 1, 1, 1]: sd 0, no gain, the bonus alone. One rollout: infinite (nothing known)."""
    assert half_width(0.57735, 4) == pytest.approx(0.91869, abs=1e-4)
    assert priority([0.0, 1.0, 0.0, 1.0], extra=2, step=1) == pytest.approx(0.72907, abs=1e-4)
    assert priority([1.0] * 4, extra=2, step=1) == pytest.approx(math.sqrt(math.log(2) / 4))
    assert priority([1.0, float("nan")], extra=2, step=1) == math.inf


def test_next_phase_picks_the_uncertain_half_within_budget_and_cap():
    """Priorities: [0,1,0,1] 0.729, [1,0,0,0] 0.687 (sd 0.5: h(4) 0.7956, h(6) 0.5247), constant ones 0.416."""
    rewards = [[0.0, 1.0, 0.0, 1.0], [1.0] * 4, [0.0] * 4, [1.0, 0.0, 0.0, 0.0]]
    assert next_phase(rewards, budget_left=16, phase=2, max_rollouts=16, step=1) == [0, 3]
    assert next_phase(rewards, budget_left=3, phase=2, max_rollouts=16, step=1) == [0]  # room for one phase
    assert next_phase(rewards, budget_left=1, phase=2, max_rollouts=16, step=1) == []
    assert next_phase(rewards, budget_left=16, phase=2, max_rollouts=5, step=1) == []  # every prompt at its cap


def _cfg(loss_type="grpo", micro=None, **over):
    sets = ["model.lora=null", "data.sources=[{kind: bbq}]",
            "rewards.functions=[{name: 'tests.tiny:count_a'}]", "algorithm.num_generations=4",
            "algorithm.prompts_per_step=2", "algorithm.max_completion_length=6", f"algorithm.loss_type={loss_type}",
            "max_grad_norm=null", f"algorithm.micro_batch_size={'null' if micro is None else micro}", "algorithm.beta=0"]  # fmt: skip
    return load_config(None, sets + [f"{k}={v}" for k, v in over.items()])


def _uneven_batch(step):
    """Prompt 0 with 2 completions, prompt 1 with 2 + 3 (two phases): sizes [2, 5], layout G = 5."""
    examples = _stream().take(2)
    gen = torch.Generator().manual_seed(0)
    first = step.rollout(examples, gen, group_size=2)
    more = step.rollout([examples[1]], gen, group_size=3)
    return assemble(examples, first.rollout, [[(first, 0)], [(first, 1), (more, 0)]], step.pad_id)


def test_assembled_batch_keeps_each_phase_row():
    tok, model = tiny_policy()
    step = GRPOStep(_cfg(), model, tok, torch.device("cpu"))
    b = _uneven_batch(step)
    assert b.sizes == [2, 5] and b.rollout.group_size == 5 and b.rewards.shape == (2, 5)
    assert b.valid().tolist() == [True, True, False, False, False] + [True] * 5
    assert torch.isnan(b.rewards[0, 2:]).all() and not torch.isnan(b.rewards[1]).any()
    assert int(b.rollout.completion_mask[2:5].sum()) == 0 and b.texts[2:5] == ["", "", ""]


@pytest.mark.parametrize(("loss_type", "micro"), [("grpo", None), ("dapo", None), ("dr_grpo", None), ("grpo", 4),
                                                  ("dapo", 8)])  # fmt: skip
def test_uneven_groups_train_exactly_as_their_real_rows(loss_type, micro):
    """The padded batch's gradient (GRPOStep.update) equals the gradient of the same loss computed on the
    real rows alone (each with its own prompt copy, no padding rows): empty rows are inert."""
    tok, model = tiny_policy()
    for p in model.parameters():
        p.requires_grad_(True)
    step = GRPOStep(_cfg(loss_type, micro), model, tok, torch.device("cpu"))
    b = _uneven_batch(step)
    rec = _Recorder(model)
    step.update(b, rec, rec)
    got = rec.grads

    model.zero_grad(set_to_none=True)
    r, valid = b.rollout, b.valid()
    adv = ESTIMATORS["grpo"](b.rewards, scale_rewards="group").reshape(-1)[valid]  # [N] real rows
    rows = valid.nonzero().flatten()
    prompts = r.prompt_ids[rows // r.group_size]
    masks = r.prompt_mask[rows // r.group_size]
    logp, _ = completion_logprobs(model, prompts, masks, r.completion_ids[rows], r.completion_mask[rows], 1,
                                  temperature=1.0, share_prompt=False)  # fmt: skip
    loss, _ = policy_loss(logp, logp.detach(), adv, r.completion_mask[rows].bool(), loss_type=loss_type,
                          max_completion_length=6)  # fmt: skip
    loss.backward()
    want = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-4)


def test_config_refuses_what_needs_full_groups():
    for over, msg in (({"algorithm.loss_type": "drpo"}, "drpo or dynamic_sampling"),
                      ({"algorithm.advantage_estimator": "ngrpo"}, "grpo, dr_grpo or rloo"),
                      ({"algorithm.xrpo_initial_rollouts": 6}, "exceeds num_generations")):  # fmt: skip
        with pytest.raises(ConfigError, match=msg):
            _cfg(**{"algorithm.rollout_allocator": "xrpo", **over})


def test_allocator_in_the_loop_spends_the_budget_and_resumes_exactly(tmp_path):
    """P = 4, G = 8: 4 x 4 first, then phases of 2 for 2 prompts until 32 completions; two steps + two resumed
    equal four uninterrupted."""
    from tests.test_train_e2e import _cfg as e2e_cfg
    from tests.test_train_e2e import _rewards, _run

    # the toy reward's spread is ~0.05, so a small exploration weight lets uncertainty decide (as 0/1 rewards do at 1)
    over = {"algorithm.rollout_allocator": "xrpo", "algorithm.loss_type": "grpo", "algorithm.xrpo_exploration": 0.01}
    full = _run(e2e_cfg(tmp_path, max_steps=4, **over), tmp_path / "full")
    part = _run(e2e_cfg(tmp_path, max_steps=2, **over), tmp_path / "part")
    _run(e2e_cfg(tmp_path, max_steps=4, **over), tmp_path / "part", resume=str(part))
    assert _rewards(part) == pytest.approx(_rewards(full), abs=1e-6)
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert all(r["num_tokens"] > 0 and math.isfinite(r["loss"]) and r["rollouts/total"] == 32 for r in rows)
    assert all(r["rollouts/min_per_prompt"] >= 4 for r in rows)
    assert any(r["rollouts/max_per_prompt"] > r["rollouts/min_per_prompt"] for r in rows)  # uneven groups

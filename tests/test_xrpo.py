"""XRPO's novelty-guided advantage sharpening (fairrl.advantages.shaping.novelty_sharpening) by hand."""

from __future__ import annotations

import math

import torch

from fairrl.advantages import novelty_sharpening


def test_novelty_sharpening_by_hand():
    """s = [-1, -2, -3] (mean -2): eta = [e, 1, 1/e]; lam 2.5, kappa 0.5.
    reply 0 (A 0.5): 1 - e < 0, no bonus -> 0.5.  reply 1 (A 1): 1 - 1 = 0 -> 1.
    reply 2 (A 2): 2.5 (1 - 1/e) = 1.5803 capped at 0.5 x 2 = 1 -> 3.
    Second group, same s, A = [-1, -1, 4]: the negatives stay; 1.5803 < 0.5 x 4 = 2 -> 4 + 1.5803."""
    s = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]])
    adv = torch.tensor([[0.5, 1.0, 2.0], [-1.0, -1.0, 4.0]])
    got = novelty_sharpening(adv, s, lam=2.5, kappa=0.5)
    bonus = 2.5 * (1 - math.exp(-1))
    torch.testing.assert_close(got, torch.tensor([[0.5, 1.0, 3.0], [-1.0, -1.0, 4.0 + bonus]]))


def test_zero_advantages_and_equal_likelihoods_are_unchanged():
    adv = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]])
    s = torch.tensor([[-5.0, -1.0, -3.0], [-2.0, -2.0, -2.0]])
    torch.testing.assert_close(novelty_sharpening(adv, s), adv)


def _reasoning(n: int) -> list:
    from fairrl.data.records import Example

    return [Example(prompt_id=f"r{i}", prompt=[{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": f"What is {i} + {i}?"}],
                    group="arith", source="reasoning", columns={"answer": str(2 * i)}) for i in range(n)]  # fmt: skip


def test_icl_seeding_seeds_a_failed_prompt_until_it_succeeds():
    """Every completion of r1 fails -> the next time r1 is drawn its context holds another reasoning item
    and that item's reference reply ("Answer: <answer>") before r1's question; a success frees it."""
    from fairrl.data.icl_seeding import IclSeeding
    from fairrl.data.samplers import UniformSampler

    ex = _reasoning(4)
    s = IclSeeding(UniformSampler(ex, seed=0), ex, seed=0, success=0.5)
    first = s.take(4)
    s.observe(first, torch.tensor([[1.0, 0.0]] * 4) * torch.tensor([[1.0], [0.0], [1.0], [1.0]]))
    assert s.stuck == {1} and s.stats()["seeding/stuck"] == 1
    second = s.take(4)  # the next epoch: every prompt again, r1 seeded
    seeded = next(e for e in second if e.prompt_id == "r1")
    assert s.stats()["seeding/seeded"] == 1 and [m["role"] for m in seeded.prompt] == [
        "system", "user", "assistant", "user"]  # fmt: skip
    j = int(seeded.prompt[1]["content"].split()[2])
    assert j != 1 and seeded.prompt[2]["content"] == f"Answer: {2 * j}"
    assert seeded.prompt[3] == ex[1].prompt[1] and seeded.prompt_text == ex[1].prompt_text
    assert all(e.prompt == ex[int(e.prompt_id[1:])].prompt for e in second if e.prompt_id != "r1")
    s.observe(second, torch.ones(4, 2))
    assert s.stuck == set()
    restored = IclSeeding(UniformSampler(ex, seed=0, state=s.state()), ex, seed=0, success=0.5, state=s.state())
    assert restored.state() == s.state() == {"position": 8, "stuck": []}


def test_seeded_prompts_train_inside_the_loop(tmp_path):
    """No completion ever reaches sampler_success, so every prompt is stuck after its first group and the
    second epoch (steps 3-4) is rolled out seeded; the run resumes with the stuck set restored."""
    import json

    from fairrl.data.run_data import RunData
    from fairrl.recipes.grpo import run_training
    from tests.test_train_e2e import _cfg
    from tests.tiny import tiny_policy

    over = {"algorithm.icl_seeding": "true", "algorithm.sampler_success": 100.0}
    tok, model = tiny_policy()
    run = run_training(_cfg(tmp_path, max_steps=4, **over), out=str(tmp_path / "run"), console=lambda s: None,
                       evaluate=False, progress=False, components=(tok, model), data=RunData(train=_reasoning(8), evals={}))  # fmt: skip
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["seeding/seeded"] for r in rows] == [0, 0, 4, 4]
    state = json.loads((run / "checkpoints" / "step-000004" / "state.json").read_text())["sampler"]
    assert state["stuck"] == list(range(8)) and state["position"] == 16


def test_the_prompt_encoder_does_not_reuse_the_unseeded_tokens():
    import dataclasses

    from fairrl.data.icl_seeding import seeded_prompt
    from fairrl.trainer.grpo_step import PromptEncoder
    from tests.tiny import tiny_policy

    tok, _ = tiny_policy()
    ex = _reasoning(2)
    encode = PromptEncoder(tok, 512)
    plain = encode(ex[0])
    seeded = encode(dataclasses.replace(ex[0], prompt=seeded_prompt(ex[0], ex[1], "Answer: 2")))
    assert len(seeded) > len(plain) and encode(ex[0]) == plain

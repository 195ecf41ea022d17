"""Fast paths equal plain paths: prefix-shared generation and training forward."""

from __future__ import annotations

import torch

from fairrl.models.logprobs import completion_logprobs
from fairrl.rollout.generate import left_pad, sample_groups
from tests.conftest import make_tiny_llama


def _batch():
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    ids, mask = left_pad(prompts, pad_id=0)
    return ids, mask


def test_shared_prompt_logprobs_and_grads_equal_plain_path():
    model = make_tiny_llama()
    ids, mask = _batch()
    rollout = sample_groups(
        model, ids, mask, group_size=3, max_new_tokens=6, eos_token_ids=[2], pad_token_id=0,
        generator=torch.Generator().manual_seed(0),
    )
    args = (ids, mask, rollout.completion_ids, rollout.completion_mask, 3)
    model.zero_grad()
    shared, _ = completion_logprobs(model, *args, share_prompt=True)
    shared.sum().backward()
    g_shared = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    plain, _ = completion_logprobs(model, *args, share_prompt=False)
    plain.sum().backward()
    g_plain = [p.grad.clone() for p in model.parameters()]
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_shared, g_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_sampling_logprobs_match_training_forward():
    """pi_old from the sampler equals a fresh forward of the same policy (temperature included)."""
    model = make_tiny_llama()
    ids, mask = _batch()
    rollout = sample_groups(
        model, ids, mask, group_size=4, max_new_tokens=8, eos_token_ids=[2], pad_token_id=0,
        temperature=0.7, generator=torch.Generator().manual_seed(1),
    )
    with torch.no_grad():
        logp, _ = completion_logprobs(
            model, ids, mask, rollout.completion_ids, rollout.completion_mask, 4, temperature=0.7
        )
    torch.testing.assert_close(rollout.logprobs, logp, atol=1e-5, rtol=1e-5)


def test_shared_and_plain_generation_sample_the_same_tokens():
    model = make_tiny_llama()
    ids, mask = _batch()
    kw = dict(group_size=3, max_new_tokens=6, eos_token_ids=[2], pad_token_id=0)
    a = sample_groups(model, ids, mask, share_prompt=True, generator=torch.Generator().manual_seed(3), **kw)
    b = sample_groups(model, ids, mask, share_prompt=False, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a.completion_ids, b.completion_ids)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=1e-5)


def test_finished_rows_are_padded_and_masked():
    model = make_tiny_llama()
    ids, mask = _batch()
    r = sample_groups(
        model, ids, mask, group_size=2, max_new_tokens=5, eos_token_ids=list(range(64)), pad_token_id=0,
        generator=torch.Generator().manual_seed(0),
    )
    # every token is an eos here: each completion is exactly one token long
    assert r.completion_ids.shape[1] == 1
    assert r.completion_mask.sum().item() == 4
    assert not r.truncated.any()


def test_row_wise_log_softmax_equals_full_log_softmax_with_gradients():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g, requires_grad=True)
    targets = torch.randint(0, 11, (3, 5), generator=g)
    weights = torch.randn(3, 5, generator=g)
    from fairrl.models.logprobs import token_logprobs

    for temperature in (1.0, 0.7):
        rows = token_logprobs(logits, targets, temperature)
        (g_rows,) = torch.autograd.grad((rows * weights).sum(), logits)
        full = torch.log_softmax(logits / temperature, -1).gather(-1, targets[..., None]).squeeze(-1)
        (g_full,) = torch.autograd.grad((full * weights).sum(), logits)
        torch.testing.assert_close(rows, full, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(g_rows, g_full, atol=1e-6, rtol=1e-6)

"""Generation controls of the rollout sampler: top-k, min-p, repetition penalty (and top-p, temperature).

By hand on small logits vectors, against transformers' own logits processors, and end to end against
``model.generate`` on a tiny random Llama.
"""

from __future__ import annotations

import math

import pytest
import torch

from fairrl.models.logprobs import completion_logprobs
from fairrl.rollout.generate import _next_tokens, left_pad, sample_categorical, sample_groups
from fairrl.rollout.sampling import (
    SamplingControls,
    context_mask,
    filter_scores,
    mark_seen,
    min_p_filter,
    penalise_repeats,
    top_k_filter,
    top_p_filter,
)
from tests.conftest import make_tiny_llama

INF = float("inf")


def _log(probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is ``probs``."""
    return torch.tensor([[math.log(p) for p in probs]])


def _kept(scores: torch.Tensor) -> list[int]:
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


# -- by hand -----------------------------------------------------------------------------------------
def test_repetition_penalty_by_hand():
    """z = [2, -1, 0.5, -0.5, 0], context {0, 1, 3, 4}.

    penalty 2:   2 / 2 = 1,  -1 * 2 = -2,  0.5 (not in context),  -0.5 * 2 = -1,  0 / 2 = 0
    penalty 0.5: 2 / 0.5 = 4, -1 * 0.5 = -0.5, 0.5, -0.5 * 0.5 = -0.25, 0  (a reward for repeating)
    """
    z = torch.tensor([[2.0, -1.0, 0.5, -0.5, 0.0]])
    seen = torch.tensor([[True, True, False, True, True]])
    assert penalise_repeats(z, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, -1.0, 0.0]]
    assert penalise_repeats(z, seen, 0.5).tolist() == [[4.0, -0.5, 0.5, -0.25, 0.0]]
    assert penalise_repeats(z, seen, 1.0) is z


def test_top_k_by_hand():
    """[1, 3, 2, 0], k = 2: the 2nd highest is 2, so 1 and 0 go. [1, 2, 2, 0], k = 1: the 1st highest
    is 2 and both 2s stay (ties with the k-th are kept, as in transformers). k = 0 and k >= V: off."""
    s = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert top_k_filter(s, 2).tolist() == [[-INF, 3.0, 2.0, -INF]]
    assert top_k_filter(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), 1).tolist() == [[-INF, 2.0, 2.0, -INF]]
    assert top_k_filter(s, 0) is s and top_k_filter(s, 9) is s


@pytest.mark.parametrize(
    "top_p, kept",
    [
        (0.75, [1, 3]),  # ascending .05, .15, .3, .5 -> running mass .05, .2, .5, 1; drop <= .25
        (0.85, [0, 1, 3]),  # drop mass <= .15: only .05 (.2 > .15 stays); kept mass .95 >= .85
        (0.1, [1]),  # drop <= .9: all but the most likely token, which always stays
        (1.0, [0, 1, 2, 3]),  # off
    ],
)
def test_top_p_by_hand(top_p, kept):
    """p = [.15, .5, .05, .3]: the smallest set of most likely tokens with mass >= top_p."""
    s = _log([0.15, 0.5, 0.05, 0.3])
    out = top_p_filter(s, top_p)
    assert _kept(out) == kept
    assert torch.equal(out[torch.isfinite(out)], s[torch.isfinite(out)])  # kept logits untouched


def test_top_p_stops_as_soon_as_the_mass_reaches_top_p():
    """Four equal logits: p = .25 each (exact in floats), running mass .25, .5, .75, 1. top_p = .5: two
    tokens already reach .5, so exactly two stay (mass <= 1 - .5 is dropped, equality included)."""
    assert len(_kept(top_p_filter(torch.zeros(1, 4), 0.5))) == 2


@pytest.mark.parametrize(
    "min_p, kept",
    [
        (0.25, [0, 1, 3]),  # threshold .25 * .5 = .125: only .05 is below
        (0.7, [1]),  # threshold .35: only .5 reaches it
        (1.0, [1]),  # threshold .5: the most likely token alone
        (0.0, [0, 1, 2, 3]),  # off
    ],
)
def test_min_p_by_hand(min_p, kept):
    """p = [.15, .5, .05, .3], max .5: keep p_v >= min_p * .5."""
    assert _kept(min_p_filter(_log([0.15, 0.5, 0.05, 0.3]), min_p)) == kept


def _pipeline(logits, seen, c: SamplingControls) -> torch.Tensor:
    return filter_scores(penalise_repeats(logits, seen, c.repetition_penalty) / c.temperature, c)


def test_penalty_comes_before_temperature_and_top_k():
    """z = [3, 2, -1, 0], context {0}, penalty 2, T = 0.5: z' = [1.5, 2, -1, 0] -> s = [3, 4, -2, 0];
    top-1 keeps token 1 (without the penalty first it would be token 0)."""
    seen = torch.tensor([[True, False, False, False]])
    c = SamplingControls(temperature=0.5, top_k=1, repetition_penalty=2.0)
    out = _pipeline(torch.tensor([[3.0, 2.0, -1.0, 0.0]]), seen, c)
    assert out.tolist() == [[-INF, 4.0, -INF, -INF]]


def test_top_k_comes_before_top_p():
    """p = [.4, .3, .2, .1], top_k 2, top_p .5: top-2 renormalises to [4/7, 3/7]; ascending running mass
    3/7 = .43 <= .5 drops token 1 -> {0}. (Top-p first would keep {0, 1}: running mass .1, .3, .6, 1.)"""
    c = SamplingControls(top_k=2, top_p=0.5)
    assert _kept(filter_scores(_log([0.4, 0.3, 0.2, 0.1]), c)) == [0]


def test_top_p_comes_before_min_p():
    """p = [.4, .3, .2, .1], top_p .75, min_p .3: top-p drops running mass <= .25, i.e. .1 only (.1 + .2
    = .3 > .25); min-p (threshold .12) then drops nothing -> {0, 1, 2}. (Min-p first: drop .1, renormalise
    to [.44, .33, .22]; top-p then drops .22 <= .25 -> {0, 1}.)"""
    c = SamplingControls(top_p=0.75, min_p=0.3)
    assert _kept(filter_scores(_log([0.4, 0.3, 0.2, 0.1]), c)) == [0, 1, 2]


def test_min_p_sees_the_temperature_scaled_distribution():
    """p = [.5, .3, .15, .05], T = .5: probabilities go as p^2, ratios to the max [1, .36, .09, .01];
    min_p .2 keeps {0, 1}. (Unscaled, the ratios [1, .6, .3, .1] would keep {0, 1, 2}.)"""
    c = SamplingControls(temperature=0.5, min_p=0.2)
    assert _kept(_pipeline(_log([0.5, 0.3, 0.15, 0.05]), torch.zeros(1, 4, dtype=torch.bool), c)) == [0, 1]


def test_context_mask_leaves_out_padding_and_marks_new_tokens():
    """Row 0 is left-padded with id 0; row 1 holds 0 as a real token. Ids >= V cannot be sampled: left out."""
    ids = torch.tensor([[0, 0, 3, 1], [0, 2, 2, 9]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    seen = context_mask(ids, mask, vocab_size=5)
    assert seen.tolist() == [[False, True, False, True, False], [True, False, True, False, False]]
    mark_seen(seen, torch.tensor([4, 0]), alive=torch.tensor([True, False]))  # row 1 finished: pad
    assert seen.tolist() == [[False, True, False, True, True], [True, False, True, False, False]]


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"min_p": -0.1}, "min_p"),
        ({"min_p": 1.5}, "min_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": -1.2}, "repetition_penalty"),
    ],
)
def test_bad_controls_are_refused(kw, field):
    model = make_tiny_llama()
    ids, mask = left_pad([[5, 6, 7]], pad_id=0)
    with pytest.raises(ValueError, match=field):
        sample_groups(
            model, ids, mask, group_size=2, max_new_tokens=2, eos_token_ids=[2], pad_token_id=0, **kw
        )


# -- against transformers' logits processors ---------------------------------------------------------
@pytest.mark.parametrize(
    "penalty, temperature, top_k, top_p, min_p",
    [
        (1.3, 0.7, 10, 0.8, 0.05),
        (0.8, 1.5, 0, 0.9, 0.0),
        (1.2, 1.0, 5, 1.0, 0.1),
        (1.0, 0.6, 0, 1.0, 0.2),
        (2.0, 1.0, 3, 0.5, 0.0),
        (1.5, 0.9, 40, 0.95, 0.02),
    ],
)
def test_pipeline_equals_transformers_processors(penalty, temperature, top_k, top_p, min_p):
    """Same random logits and left-padded contexts, the processors in generate's order: equal bit for bit.
    transformers gets each row without its padding (so the penalty sees only real tokens, on every
    version; 5.x could take the pad counts as ``prompt_ignore_length``)."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    g = torch.Generator().manual_seed(0)
    B, L, V = 8, 20, 100
    logits = 3 * torch.randn(B, V, generator=g)
    ids = torch.randint(0, V, (B, L), generator=g)
    pads = torch.tensor([0, 3, 7, 0, 12, 1, 5, 0])
    mask = (torch.arange(L)[None, :] >= pads[:, None]).long()
    ids = ids.masked_fill(mask == 0, 7)  # pad id 7, which also occurs as a real token in some rows

    hf = LogitsProcessorList()
    if penalty != 1.0:
        hf.append(RepetitionPenaltyLogitsProcessor(penalty))
    if temperature != 1.0:
        hf.append(TemperatureLogitsWarper(temperature))
    if top_k:
        hf.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        hf.append(TopPLogitsWarper(top_p))
    hf.append(MinPLogitsWarper(min_p))
    want = torch.cat([hf(ids[i : i + 1, int(pads[i]) :], logits[i : i + 1].clone()) for i in range(B)])

    c = SamplingControls(temperature, top_k, top_p, min_p, penalty)
    got = _pipeline(logits, context_mask(ids, mask, V), c)
    assert torch.equal(got, want)
    assert not torch.isfinite(got).all() or (top_k == 0 and top_p == 1.0 and min_p == 0.0)


def test_decode_history_equals_transformers_penalty_on_the_grown_sequence():
    """The seen mask updated with each step's tokens equals the penalty on prompt + generated ids."""
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    g = torch.Generator().manual_seed(1)
    B, V = 4, 30
    ids = torch.randint(0, V, (B, 6), generator=g)
    seen = context_mask(ids, torch.ones_like(ids), V)
    for _ in range(5):
        logits = torch.randn(B, V, generator=g)
        want = RepetitionPenaltyLogitsProcessor(1.7)(ids, logits.clone())
        assert torch.equal(penalise_repeats(logits, seen, 1.7), want)
        tok = torch.randint(0, V, (B,), generator=g)
        mark_seen(seen, tok, torch.ones(B, dtype=torch.bool))
        ids = torch.cat([ids, tok[:, None]], dim=1)


# -- end to end ----------------------------------------------------------------------------------------
def _prompts(pad_id: int = 0):
    return left_pad([[5, 6, 7, 8, 9], [10, 11, 12]], pad_id=pad_id)


@pytest.mark.parametrize("fast", [True, False])
def test_greedy_repetition_penalty_matches_hugging_face_generate(fast):
    from transformers import GenerationConfig

    model = make_tiny_llama(seed=3)
    ids, mask = _prompts()
    kw = dict(group_size=1, max_new_tokens=12, eos_token_ids=[2], pad_token_id=0, temperature=0, fast=fast)
    ours = sample_groups(model, ids, mask, repetition_penalty=3.0, **kw)
    plain = sample_groups(model, ids, mask, **kw)
    cfg = GenerationConfig(
        do_sample=False, max_new_tokens=12, repetition_penalty=3.0, eos_token_id=2, pad_token_id=0
    )
    hf = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)[:, ids.shape[1] :]
    for row in range(2):
        n = int(ours.lengths[row])
        assert ours.completion_ids[row, :n].tolist() == hf[row, :n].tolist()
    assert not torch.equal(ours.completion_ids, plain.completion_ids)  # the penalty changed the decode


def test_a_strong_penalty_never_repeats_a_context_token_and_ignores_padding():
    """Greedy with penalty 1e4: no token of the prompt or of earlier steps comes again. Then the pad id is
    set to the padded row's first token: as padding it is not context, so that token stays first."""
    model = make_tiny_llama(seed=3)
    ids, mask = _prompts()
    kw = dict(group_size=1, max_new_tokens=10, eos_token_ids=[2], temperature=0, repetition_penalty=1e4)
    r = sample_groups(model, ids, mask, pad_token_id=0, **kw)
    for row in range(2):
        prompt = ids[row][mask[row].bool()].tolist()
        out = r.completion_ids[row, : int(r.lengths[row])].tolist()
        assert len(set(prompt + out)) == len(set(prompt)) + len(out)
    first = int(r.completion_ids[1, 0])
    ids, mask = _prompts(pad_id=first)
    assert (ids[1, :2] == first).all()
    again = sample_groups(model, ids, mask, pad_token_id=first, **kw)
    assert int(again.completion_ids[1, 0]) == first


@pytest.mark.parametrize("penalty", [1.0, 1.4])
@pytest.mark.parametrize("share_prompt", [True, False])
def test_top_k_one_sampling_equals_greedy(penalty, share_prompt):
    """At T = 1 the returned log-probs are the same log_softmax(z) too."""
    model = make_tiny_llama(seed=1)
    ids, mask = _prompts()
    kw = dict(group_size=3, max_new_tokens=10, eos_token_ids=[2], pad_token_id=0, share_prompt=share_prompt,
              repetition_penalty=penalty)  # fmt: skip
    greedy = sample_groups(model, ids, mask, temperature=0, **kw)
    top1 = sample_groups(
        model, ids, mask, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(0), **kw
    )
    assert torch.equal(top1.completion_ids, greedy.completion_ids)
    assert torch.equal(top1.logprobs, greedy.logprobs)


def test_logprobs_are_the_unfiltered_unpenalised_distribution():
    """All controls on; the returned log-probs still equal the training forward at the same temperature."""
    model = make_tiny_llama()
    ids, mask = _prompts()
    r = sample_groups(
        model, ids, mask, group_size=3, max_new_tokens=8, eos_token_ids=[2], pad_token_id=0, temperature=0.8,
        top_k=8, top_p=0.9, min_p=0.05, repetition_penalty=1.3, generator=torch.Generator().manual_seed(4),
    )  # fmt: skip
    with torch.no_grad():
        logp, _ = completion_logprobs(
            model, ids, mask, r.completion_ids, r.completion_mask, 3, temperature=0.8
        )
    torch.testing.assert_close(r.logprobs, logp, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("share_prompt", [True, False])
def test_fast_paths_equal_plain_path_with_every_control(share_prompt):
    model = make_tiny_llama()
    ids, mask = _prompts()
    kw = dict(group_size=4, max_new_tokens=10, eos_token_ids=[2], pad_token_id=0, share_prompt=share_prompt,
              temperature=0.9, top_k=10, top_p=0.95, min_p=0.02, repetition_penalty=1.3)  # fmt: skip
    fast = sample_groups(model, ids, mask, fast=True, generator=torch.Generator().manual_seed(3), **kw)
    plain = sample_groups(model, ids, mask, fast=False, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(fast.completion_ids, plain.completion_ids)
    torch.testing.assert_close(fast.logprobs, plain.logprobs, atol=1e-5, rtol=1e-5)


# -- defaults: unchanged -------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_controls_switched_off_change_nothing(temperature):
    model = make_tiny_llama()
    ids, mask = _prompts()
    kw = dict(group_size=4, max_new_tokens=10, eos_token_ids=[2], pad_token_id=0, temperature=temperature)
    base = sample_groups(model, ids, mask, generator=torch.Generator().manual_seed(6), **kw)
    for off in ({"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}, {"top_k": 64}):
        r = sample_groups(model, ids, mask, generator=torch.Generator().manual_seed(6), **off, **kw)
        for f in ("completion_ids", "completion_mask", "logprobs", "truncated"):
            assert torch.equal(getattr(r, f), getattr(base, f)), (off, f)


def test_default_step_samples_the_temperature_scaled_log_softmax():
    """With every control off a step draws from softmax(log_softmax(z / T)), the sampler's formula before
    the controls existed, with the same generator draws."""
    z = 4 * torch.randn(6, 50, generator=torch.Generator().manual_seed(2))
    tok, logp = _next_tokens(
        z, SamplingControls(temperature=0.7), None, None, torch.Generator().manual_seed(9)
    )
    want_logp = torch.log_softmax(z / 0.7, dim=-1)
    assert torch.equal(logp, want_logp)
    assert torch.equal(tok, sample_categorical(want_logp.softmax(-1), torch.Generator().manual_seed(9)))

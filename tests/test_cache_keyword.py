"""The KV-cache keyword is read off the model's forward, so no call of ours uses a deprecated name."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import pytest
import torch

from fairrl.eval.likelihood import option_logprobs
from fairrl.models.cache import cache_keyword, cache_kwargs, returned_cache
from fairrl.models.logprobs import completion_logprobs
from fairrl.rollout.generate import sample_groups
from tests.conftest import make_tiny_llama
from tests.tiny import tiny_policy


class _Old(torch.nn.Module):
    def forward(self, input_ids, past_key_values=None, use_cache=None):
        return input_ids


class _New(torch.nn.Module):
    def forward(self, input_ids, cache=None, use_cache=None, **kwargs):
        return input_ids


class _Both(torch.nn.Module):  # a transitional signature that still lists the old name: keep using it
    def forward(self, input_ids, past_key_values=None, cache=None):
        return input_ids


@dataclass
class _OldOut:
    logits: object = None
    past_key_values: object = None


@dataclass
class _NewOut:
    logits: object = None
    cache: object = None


def test_the_keyword_follows_the_forward_signature():
    assert cache_keyword(_Old()) == "past_key_values" and cache_kwargs(_Old(), 7) == {"past_key_values": 7}
    assert cache_keyword(_New()) == "cache" and cache_kwargs(_New(), 7) == {"cache": 7}
    assert cache_keyword(_Both()) == "past_key_values"
    assert returned_cache(_OldOut(past_key_values=3)) == 3 and returned_cache(_NewOut(cache=4)) == 4


def test_installed_transformers_gets_its_own_name():
    import inspect

    model = make_tiny_llama()
    params = inspect.signature(type(model).forward).parameters
    assert cache_keyword(model) in params


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def cache_deprecations(calls) -> list[str]:
    """The cache-keyword deprecations that ``calls()`` raises, as FutureWarnings (transformers' keyword
    decorator) or as log lines of the ``transformers`` logger (its output-field alias; that logger does not
    propagate, so it is listened to directly, and its once-only cache is reset)."""
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()
    handler, logger = _Collect(), logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            calls()
    finally:
        logger.removeHandler(handler)
    found = [str(w.message) for w in caught] + handler.messages
    return [m for m in found if "past_key_values" in m or "cache_params" in m]


def test_the_check_sees_a_deprecated_call():
    tok, model = tiny_policy()
    if cache_keyword(model) == "past_key_values":
        pytest.skip("the installed transformers still takes past_key_values: nothing is deprecated")
    assert cache_deprecations(lambda: model(input_ids=torch.tensor([[3, 4]]), past_key_values=None))


def test_sampling_scoring_and_evaluation_use_no_deprecated_cache_name():
    tok, model = tiny_policy()
    ids = torch.tensor([[3, 4, 5, 6], [0, 7, 8, 9]])
    mask = (ids != 0).long()

    def calls():
        r = sample_groups(model, ids, mask, group_size=2, max_new_tokens=3, eos_token_ids=[2], pad_token_id=0,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
        completion_logprobs(model, ids, mask, r.completion_ids, r.completion_mask, group_size=2)
        prompts = [[{"role": "user", "content": "a b c"}], [{"role": "user", "content": "a b d"}]]
        option_logprobs(model, tok, prompts, [["x y", "z"], ["yes", "no"]], share_groups=[0, 0])

    assert cache_deprecations(calls) == []

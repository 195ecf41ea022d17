"""Batched continuation log-likelihoods: equal to one plain forward per item, tokenisation boundary, batching."""

from __future__ import annotations

import pytest
import torch

from fairrl.eval.textscore import _batches, encode_pairs, start_token_id, text_logprobs
from tests.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def model():
    return make_tiny_llama(vocab_size=49_152, hidden=32, layers=2)


@torch.no_grad()
def reference(model, tokenizer, contexts, continuations):
    """One unpadded forward per item over (start + context + continuation), float64 log-softmax."""
    out = []
    for prefix, cont in encode_pairs(tokenizer, contexts, continuations):
        logits = model(input_ids=torch.tensor([prefix + cont])).logits[0]  # [L, V]
        logp = logits[len(prefix) - 1 : -1].double().log_softmax(-1)  # [n, V]
        out.append((float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum()), len(cont)))
    return out


def test_batched_equals_one_forward_per_item(model, packaged_tokenizer):
    contexts = [None, "The cat sat on the mat.", "The cat sat on the mat.", "", "Many people live in Ethiopia.",
                "The cat sat on the mat.", "A short one ", None]  # fmt: skip
    continuations = [
        "A long sentence, much longer than every other continuation here, to force plenty of left padding.",
        "It purred.", "Dogs bark.", "x", "The people are very thin and good at distance running.",
        "Mats are flat.", "b", "Hi",
    ]  # fmt: skip
    model.train()  # scoring must switch dropout off and restore the mode afterwards
    got = text_logprobs(model, packaged_tokenizer, contexts, continuations, batch_size=3)
    assert model.training
    model.eval()
    want = reference(model, packaged_tokenizer, contexts, continuations)
    assert [n for _, n in got] == [n for _, n in want]
    for (g, _), (w, _) in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=1e-5)
    one_batch = text_logprobs(model, packaged_tokenizer, contexts, continuations, batch_size=64)
    assert [s for s, _ in one_batch] == pytest.approx([s for s, _ in got], abs=1e-5)


def test_boundary_on_the_real_tokenizer(packaged_tokenizer):
    tok = packaged_tokenizer
    start = start_token_id(tok)
    assert start == (tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
    encode = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    (p1, c1), (p2, c2), (p3, c3) = encode_pairs(tok, ["The cat", None, "The cat "], ["sat.", "sat.", "sat."])
    assert p1 == [start, *encode("The cat")] and c1 == encode(" sat.")  # joined by one space
    assert p2 == [start] and c2 == encode("sat.")  # no context: the start token only
    assert (p3, c3) == (p1, c1)  # trailing whitespace moves into the continuation


class MergingTokenizer:
    """Characters as ids, except that "e " merges into one token (id 1); no bos, eos = 99."""

    bos_token_id, eos_token_id, pad_token_id = None, 99, None

    @staticmethod
    def _encode(text):
        ids, i = [], 0
        while i < len(text):
            if text[i : i + 2] == "e ":
                ids.append(1)
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return ids

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [self._encode(t) for t in texts]}


def test_boundary_falls_back_when_the_context_is_not_a_prefix():
    tok = MergingTokenizer()
    [(prefix, cont)] = encode_pairs(tok, ["the"], ["cat"])  # "the cat" merges "e " across the boundary
    assert prefix == [99, ord("t"), ord("h"), ord("e")]
    assert cont == [ord(c) for c in " cat"]


def test_errors():
    tok = MergingTokenizer()
    with pytest.raises(ValueError, match="2 contexts but 1"):
        text_logprobs(None, tok, [None, None], ["a"])
    with pytest.raises(ValueError, match="no tokens"):
        text_logprobs(None, tok, [None], [""])


def test_batches_keep_shared_contexts_together_and_respect_the_size():
    keys = ["c1", 1, "c1", "c2", 4, "c2", "c1", 7]
    lengths = [9, 3, 9, 5, 8, 5, 9, 1]
    batches = _batches(keys, lengths, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(len(b) <= 3 for b in batches)
    # shortest first; the three candidates of context c1 share a batch, c2's two do not split
    assert batches == [[7, 1], [3, 5, 4], [0, 2, 6]]

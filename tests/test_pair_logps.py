"""Preference-pair encoding and sequence log-probs: checked against hand-built token lists and
unpadded per-row forwards; the LoRA reference and a few DPO steps end to end."""

from __future__ import annotations

import pytest
import torch

from fairrl.data.preferences import PreferencePair
from fairrl.losses.preference import dpo_loss, dpo_margins
from fairrl.models.loading import LoraSettings, apply_lora
from fairrl.models.pair_logps import (
    PairBatch,
    encode_pairs,
    reference_logps,
    sequence_logps,
    split_chosen_rejected,
)
from tests.conftest import make_tiny_llama
from tests.tiny import make_tiny_tokenizer


def _pair(prompt: str, chosen: str, rejected: str, i: int = 0) -> PreferencePair:
    return PreferencePair(
        id=f"t/g/{i}", prompt=prompt, chosen=chosen, rejected=rejected, group="g", source="t"
    )


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _chat_prompt(tok, prompt: str) -> list[int]:
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return _ids(tok, text)


def _row(batch: PairBatch, i: int) -> tuple[list[int], list[int]]:
    """(real tokens, scored tokens) of row i."""
    real = batch.input_ids[i][batch.attention_mask[i].bool()].tolist()
    scored = batch.input_ids[i][batch.response_mask[i].bool()].tolist()
    return real, scored


# --- encode_pairs ---------------------------------------------------------------------------------


def test_chat_pairs_score_exactly_the_response_and_eos(packaged_tokenizer):
    tok = packaged_tokenizer
    pairs = [
        _pair("Who should lead the team?", "Whoever is most qualified.", "The man, obviously.", 0),
        _pair("Describe a nurse.", "A trained professional who cares for patients.", "She is kind.", 1),
    ]
    batch = encode_pairs(tok, pairs, max_length=512, max_prompt_length=256)
    assert batch.input_ids.shape[0] == 4 and batch.num_pairs == 2
    eos = tok.eos_token_id
    for i, side in [(0, "chosen"), (1, "chosen"), (2, "rejected"), (3, "rejected")]:
        pair = pairs[i % 2]
        response = getattr(pair, side)
        prompt = _chat_prompt(tok, pair.prompt)
        real, scored = _row(batch, i)
        assert scored == _ids(tok, response) + [eos]
        assert real == prompt + scored
        assert tok.decode(scored) == response + "<|im_end|>"
        # the scored tokens are one contiguous block right after the prompt
        resp = batch.response_mask[i]
        assert resp[: len(prompt)].sum() == 0 and resp[len(prompt) : len(real)].sum() == len(scored)
    # padding: pad id may equal eos, only the masks mark it
    lengths = batch.attention_mask.sum(-1)
    for i in range(4):
        n = int(lengths[i])
        assert batch.attention_mask[i, n:].sum() == 0 and batch.response_mask[i, n:].sum() == 0
        assert (batch.input_ids[i, n:] == tok.pad_token_id).all()
    assert batch.response_mask.dtype == torch.float32


def test_empty_prompt_scores_every_sentence_token_after_bos(packaged_tokenizer):
    tok = packaged_tokenizer
    pairs = [_pair("", "Women can be engineers.", "Women can't be engineers at all.")]
    batch = encode_pairs(tok, pairs, max_length=64, max_prompt_length=32)
    for i, sentence in enumerate([pairs[0].chosen, pairs[0].rejected]):
        real, scored = _row(batch, i)
        assert real == [tok.bos_token_id] + _ids(tok, sentence)
        assert scored == _ids(tok, sentence)  # no eos for plain sentences
        assert batch.response_mask[i, 0] == 0


def test_truncation_keeps_prompt_tail_and_response_head(packaged_tokenizer):
    tok = packaged_tokenizer
    prompt_text = " ".join(f"word{i}" for i in range(40))
    response_text = " ".join(f"reply{i}" for i in range(40))
    prompt, response = _chat_prompt(tok, prompt_text), _ids(tok, response_text) + [tok.eos_token_id]
    assert len(prompt) > 60 and len(response) > 40
    pairs = [_pair(prompt_text, response_text, "short")]

    batch = encode_pairs(tok, pairs, max_length=50, max_prompt_length=30)
    real, scored = _row(batch, 0)
    assert len(real) == 50
    assert real[:30] == prompt[-30:]
    assert scored == response[:20]
    real, scored = _row(batch, 1)  # short rejected reply fits whole
    assert real == prompt[-30:] + _ids(tok, "short") + [tok.eos_token_id]

    # a prompt that alone would fill max_length is cut further so one response token remains
    batch = encode_pairs(tok, pairs, max_length=12, max_prompt_length=100)
    for i in range(2):
        real, scored = _row(batch, i)
        assert len(real) == 12 and real[:11] == prompt[-11:] and len(scored) == 1
    assert batch.input_ids.shape[1] == 12


def test_plain_tokenizer_and_bosless_sentences():
    tok = make_tiny_tokenizer()
    tok.chat_template = None
    batch = encode_pairs(tok, [_pair("a b", "yes", "no c")], max_length=32, max_prompt_length=32)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert _row(batch, 0) == ([bos] + _ids(tok, "a b") + _ids(tok, "yes") + [eos], _ids(tok, "yes") + [eos])
    assert _row(batch, 1)[1] == _ids(tok, "no c") + [eos]

    tok.bos_token = None  # the first sentence token becomes the unscored context
    assert tok.bos_token_id is None
    batch = encode_pairs(tok, [_pair("", "a b c", "d e")], max_length=32, max_prompt_length=32)
    assert _row(batch, 0) == (_ids(tok, "a b c"), _ids(tok, "b c"))
    assert _row(batch, 1) == (_ids(tok, "d e"), _ids(tok, "e"))
    with pytest.raises(ValueError, match="no token that can be scored"):
        encode_pairs(tok, [_pair("", "a", "d e")], max_length=32, max_prompt_length=32)


def test_encode_pairs_rejects_empty_and_bad_lengths():
    tok = make_tiny_tokenizer()
    with pytest.raises(ValueError, match="at least one"):
        encode_pairs(tok, [], max_length=32, max_prompt_length=16)
    with pytest.raises(ValueError, match="max_length"):
        encode_pairs(tok, [_pair("a", "b", "c")], max_length=1, max_prompt_length=16)


def test_split_chosen_rejected():
    c, r = split_chosen_rejected(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert c.tolist() == [1.0, 2.0] and r.tolist() == [3.0, 4.0]
    with pytest.raises(ValueError):
        split_chosen_rejected(torch.ones(3))


# --- sequence_logps -------------------------------------------------------------------------------


def _tiny_pairs() -> list[PreferencePair]:
    return [
        _pair("a b c d e f", "yes", "no no x y z", 0),
        _pair("x", "1 2 3 a b", "3", 1),
        _pair("", "a b c", "h g f e d c b", 2),
    ]


def _unpadded_logps(model, tok, pairs, average=False) -> torch.Tensor:
    """Independent reference: each row alone, built from the tokenizer, no padding, no position ids."""
    out = []
    for side in ("chosen", "rejected"):
        for p in pairs:
            text = getattr(p, side)
            if p.prompt:
                prompt, response = _chat_prompt(tok, p.prompt), _ids(tok, text) + [tok.eos_token_id]
            else:
                prompt, response = [tok.bos_token_id], _ids(tok, text)
            ids = torch.tensor([prompt + response])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # [n, V]
            terms = [logp[t - 1, ids[0, t]] for t in range(len(prompt), ids.shape[1])]
            total = torch.stack(terms).sum()
            out.append(total / len(terms) if average else total)
    return torch.stack(out)


def test_sequence_logps_equal_unpadded_per_row_forward():
    tok = make_tiny_tokenizer()
    model = make_tiny_llama(vocab_size=len(tok), seed=3)
    pairs = _tiny_pairs()
    batch = encode_pairs(tok, pairs, max_length=64, max_prompt_length=64)
    assert len(set(batch.attention_mask.sum(-1).tolist())) > 3  # rows of different lengths: real padding
    with torch.no_grad():
        got = sequence_logps(model, batch)
        got_avg = sequence_logps(model, batch, average=True)
    torch.testing.assert_close(got, _unpadded_logps(model, tok, pairs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        got_avg, _unpadded_logps(model, tok, pairs, average=True), atol=1e-5, rtol=1e-5
    )
    counts = batch.response_mask.sum(-1)
    torch.testing.assert_close(got_avg, got / counts)


def test_sequence_logps_with_real_tokenizer_and_gradient(packaged_tokenizer):
    tok = packaged_tokenizer
    model = make_tiny_llama(vocab_size=len(tok), seed=1)
    pairs = [
        _pair("Is he a doctor?", "Maybe.", "No, she is the nurse.", 0),
        _pair("", "He cooks.", "She cooks.", 1),
    ]
    batch = encode_pairs(tok, pairs, max_length=128, max_prompt_length=96)
    got = sequence_logps(model, batch)
    torch.testing.assert_close(got.detach(), _unpadded_logps(model, tok, pairs), atol=1e-5, rtol=1e-5)
    got.sum().backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0


# --- reference_logps ------------------------------------------------------------------------------


def _lora_policy(tok, seed=0):
    model = make_tiny_llama(vocab_size=len(tok), seed=seed)
    return apply_lora(model, LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]))


def test_lora_reference_is_the_base_model_and_stays_frozen():
    tok = make_tiny_tokenizer()
    batch = encode_pairs(tok, _tiny_pairs(), max_length=64, max_prompt_length=64)
    with torch.no_grad():
        base = sequence_logps(make_tiny_llama(vocab_size=len(tok), seed=0), batch)
    policy = _lora_policy(tok)
    policy.train()
    torch.testing.assert_close(reference_logps(policy, batch), base, atol=1e-6, rtol=1e-6)

    lora = [p for n, p in policy.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n, p in policy.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    opt = torch.optim.SGD(lora, lr=0.5)
    sequence_logps(policy, batch).sum().backward()
    opt.step()

    ref = reference_logps(policy, batch)
    assert not ref.requires_grad and ref.grad_fn is None
    assert policy.training  # mode restored
    torch.testing.assert_close(ref, base, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        after = sequence_logps(policy, batch)
    assert (after - base).abs().max() > 1e-3


def test_explicit_reference_and_missing_reference():
    tok = make_tiny_tokenizer()
    batch = encode_pairs(tok, _tiny_pairs(), max_length=64, max_prompt_length=64)
    policy = make_tiny_llama(vocab_size=len(tok), seed=0).train()
    frozen = make_tiny_llama(vocab_size=len(tok), seed=5).train()
    ref = reference_logps(policy, batch, reference=frozen)
    assert frozen.training and ref.grad_fn is None
    torch.testing.assert_close(ref, _unpadded_logps(frozen, tok, _tiny_pairs()), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert (ref - sequence_logps(policy, batch)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="PEFT"):
        reference_logps(policy, batch)


# --- DPO end to end -------------------------------------------------------------------------------


def test_dpo_steps_on_lora_raise_the_margin():
    tok = make_tiny_tokenizer()
    pairs = [_pair("a b", "yes yes", "no", 0), _pair("c d e", "1 2", "x y z", 1)]
    batch = encode_pairs(tok, pairs, max_length=32, max_prompt_length=16)
    torch.manual_seed(0)
    policy = _lora_policy(tok)
    policy.train()
    ref_c, ref_r = split_chosen_rejected(reference_logps(policy, batch))
    pol_c, pol_r = split_chosen_rejected(sequence_logps(policy, batch))
    assert torch.equal(dpo_margins(pol_c, pol_r, ref_c, ref_r), torch.zeros(2))  # LoRA B starts at zero

    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(8):
        opt.zero_grad()
        pol_c, pol_r = split_chosen_rejected(sequence_logps(policy, batch))
        dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=0.5).mean().backward()
        opt.step()
    with torch.no_grad():
        pol_c, pol_r = split_chosen_rejected(sequence_logps(policy, batch))
    margins = dpo_margins(pol_c, pol_r, ref_c, ref_r, beta=0.5)
    assert (margins > 0).all(), margins

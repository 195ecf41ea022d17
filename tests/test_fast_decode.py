"""Fast decode paths equal the plain Hugging Face path: in-place KV cache and skinny CPU linears."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fairrl.models.cache import cache_kwargs, returned_cache
from fairrl.rollout.compact_decode import compact_decoder
from fairrl.rollout.generate import left_pad, sample_categorical, sample_groups
from fairrl.rollout.kv_cache import GrowingLayer, growing_cache
from fairrl.rollout.skinny_linear import skinny_linear, skinny_linears
from tests.conftest import make_tiny_llama


def test_skinny_linear_equals_f_linear_with_and_without_bias():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 24, generator=g)
    w = torch.randn(40, 24, generator=g)
    b = torch.randn(40, generator=g)
    torch.testing.assert_close(skinny_linear(x, w), F.linear(x, w), atol=1e-5, rtol=1e-5)
    out = skinny_linear(x, w, b)
    torch.testing.assert_close(out, F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    assert out.shape == (8, 1, 40) and out.is_contiguous()


def test_skinny_linears_only_touch_short_gradient_free_inputs_and_are_restored():
    model = make_tiny_llama()
    lin = model.lm_head
    x_long = torch.randn(64, 32, requires_grad=True)
    with skinny_linears(model, max_rows=8):
        assert "forward" in lin.__dict__
        with torch.no_grad():
            torch.testing.assert_close(lin(torch.randn(2, 32)).shape, torch.Size([2, 64]))
        y = lin(x_long)  # long input with gradients: the ordinary path, differentiable
        y.sum().backward()
    assert "forward" not in lin.__dict__
    assert x_long.grad is not None


def test_growing_cache_matches_concatenating_cache_through_batch_repeat():
    model = make_tiny_llama()
    cache = growing_cache(model, capacity=12)
    assert cache is not None and all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a = model(input_ids=ids, use_cache=True)
        b = model(input_ids=ids, use_cache=True, **cache_kwargs(model, cache))
        returned_cache(a).batch_repeat_interleave(3)
        returned_cache(b).batch_repeat_interleave(3)
        tok = torch.tensor([[9], [10], [11]])
        for _ in range(10):  # runs past the capacity of 12: the buffer grows once
            a = model(input_ids=tok, use_cache=True, **cache_kwargs(model, returned_cache(a)))
            b = model(input_ids=tok, use_cache=True, **cache_kwargs(model, returned_cache(b)))
            torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
            tok = a.logits[:, -1].argmax(-1, keepdim=True)
    assert returned_cache(b).get_seq_length() == 14


def _tiny_qwen2():
    """Qwen2: biases on the q/k/v projections (the skinny path adds them)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


@pytest.mark.parametrize("share_prompt", [True, False])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("build", [make_tiny_llama, _tiny_qwen2], ids=["llama", "qwen2"])
def test_fast_sampling_equals_plain_sampling(share_prompt, temperature, build):
    model = build()
    ids, mask = left_pad([[5, 6, 7, 8, 9], [10, 11, 12]], pad_id=0)
    kw = dict(group_size=4, max_new_tokens=8, eos_token_ids=[2], pad_token_id=0, share_prompt=share_prompt,
              temperature=temperature)  # fmt: skip
    fast = sample_groups(model, ids, mask, fast=True, generator=torch.Generator().manual_seed(3), **kw)
    plain = sample_groups(model, ids, mask, fast=False, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(fast.completion_ids, plain.completion_ids)
    assert torch.equal(fast.completion_mask, plain.completion_mask)
    torch.testing.assert_close(fast.logprobs, plain.logprobs, atol=1e-5, rtol=1e-5)


def test_sample_categorical_follows_the_distribution():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3, 0.0]]).repeat(40_000, 1)
    draws = sample_categorical(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    torch.testing.assert_close(freq, probs[0], atol=0.01, rtol=0)  # 3 sd of a 40k-draw frequency ~ 0.007
    assert freq[1] == 0 and freq[4] == 0  # zero-probability tokens are never drawn


def test_sample_categorical_by_hand_and_at_the_edges():
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75, 0.0]])
    # F = [0, .25, .25, 1, 1]: u = 0 -> 1 (first positive), u = .25 -> 3 (skips the flat zero), u = .1 -> 1
    for u, want in ((0.0, 1), (0.1, 1), (0.25, 3), (0.9, 3), (1.0, 3)):  # u = 1 (rounding): last positive
        assert sample_categorical(probs, u=torch.tensor([u])).item() == want


def test_fused_adamw_equals_the_default_implementation():
    from fairrl.trainer.optim import adamw

    torch.manual_seed(0)
    a = torch.nn.Linear(6, 4)
    b = torch.nn.Linear(6, 4)
    b.load_state_dict(a.state_dict())
    opt_a = adamw(a.parameters(), lr=0.1, weight_decay=0.01)
    opt_b = torch.optim.AdamW(b.parameters(), lr=0.1, weight_decay=0.01, foreach=False)
    assert opt_a.defaults["fused"]
    for _ in range(3):
        x = torch.randn(5, 6)
        for m, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            m(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_checking_for_finished_rows_less_often_changes_nothing():
    """On CUDA the loop asks whether all rows finished every few steps only; the rollout is the same."""
    model = make_tiny_llama()
    ids, mask = left_pad([[5, 6, 7, 8, 9], [10, 11, 12]], pad_id=0)
    kw = dict(group_size=4, max_new_tokens=24, eos_token_ids=list(range(2, 40)), pad_token_id=0)  # stops early
    every = sample_groups(model, ids, mask, sync_every=1, generator=torch.Generator().manual_seed(5), **kw)
    sparse = sample_groups(model, ids, mask, sync_every=8, generator=torch.Generator().manual_seed(5), **kw)
    assert every.completion_ids.shape[1] < 24  # all rows finished before the limit
    assert torch.equal(every.completion_ids, sparse.completion_ids)
    assert torch.equal(every.completion_mask, sparse.completion_mask)
    assert torch.equal(every.truncated, sparse.truncated)
    torch.testing.assert_close(every.logprobs, sparse.logprobs)


def _decode_logits(model, step_fn, steps: int = 5):
    """Prefill two left-padded prompts, repeat x2, then feed fixed tokens through ``step_fn``."""
    ids, mask = left_pad([[5, 6, 7, 8, 9], [10, 11, 12]], pad_id=0)
    cache = growing_cache(model, ids.shape[1] + steps + 1)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
              use_cache=True, **cache_kwargs(model, cache))  # fmt: skip
        cache.batch_repeat_interleave(2)
        mask = mask.repeat_interleave(2, dim=0)
        pos = mask.sum(-1)
        out = []
        for t in range(steps):
            tok = torch.tensor([3 + t, 4, 5 + t, 6])
            alive = torch.tensor([1, 1, 1, 0 if t > 2 else 1])  # row 3 "finished" after step 2
            mask = torch.cat([mask, alive[:, None]], dim=-1)
            out.append(step_fn(cache, tok, mask, pos))
            pos = pos + 1
    return torch.stack(out)


def _hf_step(model):
    def step(cache, tok, mask, pos):
        return model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None], use_cache=True,
                     **cache_kwargs(model, cache)).logits[:, -1]  # fmt: skip

    return step


def _compact_step(model, skinny):
    state = {}

    def step(cache, tok, mask, pos):
        if "dec" not in state:
            state["dec"] = compact_decoder(model, cache, skinny=skinny)
            assert state["dec"] is not None
        return state["dec"].step(tok, mask, pos)

    return step


@pytest.mark.parametrize("skinny", [True, False], ids=["skinny", "f-linear"])
@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("build", [make_tiny_llama, _tiny_qwen2], ids=["llama", "qwen2"])
def test_compact_decode_step_equals_the_model_forward(build, lora, skinny):
    model = build()
    if lora:
        from fairrl.models.loading import LoraSettings, apply_lora

        model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0, target_modules="all-linear"))
        for name, p in model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero; make the adapter change the outputs
                torch.nn.init.normal_(p, std=0.5)
        model.eval()
    ref = _decode_logits(model, _hf_step(model))
    got = _decode_logits(model, _compact_step(model, skinny))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_compact_decoder_declines_what_it_does_not_cover():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4)).eval()
    assert compact_decoder(gpt2, growing_cache(gpt2, 16), skinny=True) is None
    llama = make_tiny_llama()
    assert compact_decoder(llama, None, skinny=True) is None  # no per-layer cache
    llama.config.hidden_act = "gelu"
    assert compact_decoder(llama, growing_cache(llama, 16), skinny=True) is None


def test_sampling_uses_the_compact_step_for_llama(monkeypatch):
    import fairrl.rollout.compact_decode as cd

    calls = []
    original = cd.CompactDecoder.step
    monkeypatch.setattr(cd.CompactDecoder, "step", lambda self, *a: calls.append(1) or original(self, *a))
    ids, mask = left_pad([[5, 6, 7]], pad_id=0)
    sample_groups(make_tiny_llama(), ids, mask, group_size=2, max_new_tokens=4, min_new_tokens=4,
                  eos_token_ids=[2], pad_token_id=0)  # fmt: skip
    assert len(calls) == 3  # every decode step after the prefill

"""Packed prompt + group completions: layout by hand, and the same log-probs and gradients as the other paths."""

from __future__ import annotations

import pytest
import torch

from fairrl.models import logprobs as lp
from fairrl.models.packing import attention_mask_for, pack_groups, packing_pays
from fairrl.rollout.generate import left_pad
from tests.conftest import make_tiny_llama


def test_pack_groups_by_hand():
    # one prompt [pad, 7, 8] (2 real tokens), G = 2 completions of Lc = 3: [4, 5, 2] and [6, 2, pad]
    prompt_ids, prompt_mask = torch.tensor([[0, 7, 8]]), torch.tensor([[0, 1, 1]])
    comp = torch.tensor([[4, 5, 2], [6, 2, 0]])
    comp_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    p = pack_groups(prompt_ids, prompt_mask, comp, comp_mask, 2)
    # inputs: all but each completion's last real token, no padding: [prompt | 4 5 | 6]
    assert p.ids.tolist() == [[0, 7, 8, 4, 5, 6]]
    assert p.positions.tolist() == [[0, 0, 1, 2, 3, 2]]
    T, F = True, False
    expected = [
        # keys: pad 7  8  4  5  6
        [T, F, F, F, F, F],  # pad query: only itself
        [F, T, F, F, F, F],  # 7
        [F, T, T, F, F, F],  # 8
        [F, T, T, T, F, F],  # 4 (completion 0)
        [F, T, T, T, T, F],  # 5
        [F, T, T, F, F, T],  # 6 (completion 1): prompt and itself, not completion 0
    ]
    assert p.keep[0, 0].tolist() == expected
    # token 0 of each completion is predicted at the prompt's last position (2), token t at its input
    # t - 1; completion 1's padding points at position 2 too (masked out later)
    assert p.columns.tolist() == [[2, 3, 4], [2, 5, 2]]


def test_rows_of_different_lengths_are_padded_at_the_end():
    prompt_ids, prompt_mask = torch.tensor([[7, 8], [9, 10]]), torch.ones(2, 2, dtype=torch.long)
    comp = torch.tensor([[4, 5, 2], [6, 2, 0]])  # G = 1: prompt 0 has 2 inputs, prompt 1 has 1
    p = pack_groups(prompt_ids, prompt_mask, comp, (comp != 0).long(), 1)
    assert p.ids.tolist() == [[7, 8, 4, 5], [9, 10, 6, 0]]
    assert not p.keep[1, 0, :3, 3].any()  # nobody sees the row padding (its own output is unused)
    assert p.columns.tolist() == [[1, 2, 3], [1, 2, 1]]


def test_packing_pays_for_short_completions_only():
    assert packing_pays(128, torch.full((1, 8), 31), 576)  # the CPU benchmark: ~7% extra attention work
    assert not packing_pays(128, torch.full((1, 8), 1023), 1536)  # 1.5B, 1,024-token completions: ~78%
    assert packing_pays(10, torch.zeros(1, 4), 32)  # one-token completions: nothing extra


def test_eager_attention_gets_an_additive_mask():
    model = make_tiny_llama()
    keep = torch.tensor([[[[True, False], [True, True]]]])
    model.config._attn_implementation = "eager"
    m = attention_mask_for(model, keep, torch.float32)
    assert m[0, 0, 0, 0] == 0 and m[0, 0, 0, 1] == torch.finfo(torch.float32).min
    model.config._attn_implementation = "sdpa"
    assert attention_mask_for(model, keep, torch.float32) is keep
    model.config._attn_implementation = "flash_attention_2"
    assert attention_mask_for(model, keep, torch.float32) is None


def _tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def _tiny_gpt2():
    """No fused output head for this architecture: log-probs come from logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(2)
    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=1,
                        eos_token_id=2)  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def _batch():
    ids, mask = left_pad([[5, 6, 7, 8, 9], [10, 11, 12]], pad_id=0)
    comp = torch.tensor([[3, 4, 5, 2], [6, 2, 0, 0], [7, 8, 9, 10], [11, 12, 2, 0], [13, 2, 0, 0], [14, 15, 16, 2]])
    return ids, mask, comp, (comp != 0).long()  # P = 2 prompts x G = 3, some finished early


def _run(model, layout, monkeypatch, **kw):
    """Log-probs and parameter gradients with the chosen layout forced."""
    monkeypatch.setattr(lp, "packing_pays", lambda *a: layout == "packed")
    ids, mask, comp, cmask = _batch()
    model.zero_grad()
    logp, ent = lp.completion_logprobs(model, ids, mask, comp, cmask, 3, share_prompt=layout != "plain",
                                       with_entropy=True, **kw)  # fmt: skip
    (logp * torch.linspace(0.5, 1.5, logp.numel()).view_as(logp)).sum().backward()
    return logp.detach(), ent, [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("build", [make_tiny_llama, _tiny_qwen2, _tiny_gpt2], ids=["llama", "qwen2", "gpt2"])
def test_packed_cached_and_plain_layouts_agree(build, attn, monkeypatch):
    model = build()
    model.config._attn_implementation = attn
    ref = _run(model, "plain", monkeypatch, temperature=0.8)
    for layout in ("packed", "cached"):
        logp, ent, grads = _run(model, layout, monkeypatch, temperature=0.8)
        torch.testing.assert_close(logp, ref[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ent, ref[1], atol=1e-5, rtol=1e-5)
        assert len(grads) == len(ref[2])
        for a, b in zip(grads, ref[2], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert (ref[0][_batch()[3] == 0] == 0).all()  # padding gets log-prob 0


def test_fused_head_is_used_for_llama_and_not_for_gpt2():
    assert lp.output_head(make_tiny_llama()) is not None
    assert lp.output_head(_tiny_gpt2()) is None


def test_packed_layout_under_gradient_checkpointing(monkeypatch):
    from fairrl.models.loading import enable_gradient_checkpointing

    model = make_tiny_llama().train()
    ref = _run(model, "plain", monkeypatch)
    enable_gradient_checkpointing(model)
    logp, _, grads = _run(model, "packed", monkeypatch)
    torch.testing.assert_close(logp, ref[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref[2], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_completion_logits_match_the_model_in_every_layout(monkeypatch):
    model = _tiny_gpt2()
    ids, mask, comp, cmask = _batch()
    outs = []
    for layout in ("packed", "cached", "plain"):
        monkeypatch.setattr(lp, "packing_pays", lambda *a, layout=layout: layout == "packed")
        with torch.no_grad():
            outs.append(lp.completion_outputs(model, ids, mask, comp, cmask, 3, share_prompt=layout != "plain"))
    real = cmask.bool()
    for other in outs[1:]:
        torch.testing.assert_close(outs[0][real], other[real], atol=1e-5, rtol=1e-5)

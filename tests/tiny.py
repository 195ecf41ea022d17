"""A tiny word-level chat tokenizer and model for fast end-to-end tests."""

from __future__ import annotations

from tests.conftest import make_tiny_llama

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h", "yes", "no", "x", "y", "z", "1", "2", "3"]
SPECIAL = ["<pad>", "<s>", "<|im_end|>", "<|im_start|>", "<unk>"]
ROLES = ["system", "user", "assistant"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def make_tiny_tokenizer():
    """Whitespace word-level tokenizer: ids 0..4 special (pad 0, eos 2), then roles and words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + ROLES + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>", bos_token="<s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def tiny_policy(seed: int = 0):
    tok = make_tiny_tokenizer()
    model = make_tiny_llama(vocab_size=len(tok), seed=seed, hidden=32, layers=2)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return tok, model


def saved_tiny_policy(folder):
    """A tiny policy and its tokenizer saved as a model folder (safetensors); returns the folder."""
    tok, model = tiny_policy()
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def count_a(prompts, completions, **columns):
    """Trivially learnable TRL-style reward: the share of words in the completion that are 'a'."""
    out = []
    for c in completions:
        text = c[0]["content"] if isinstance(c, list) else c
        words = text.split()
        out.append(sum(w == "a" for w in words) / max(len(words), 1))
    return out

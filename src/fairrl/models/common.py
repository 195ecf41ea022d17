"""Small helpers on model objects, tokenizers and their inputs, shared by the models, rollout, trainer and eval stages."""

from __future__ import annotations

import torch


def unwrap_peft(model):
    """The transformers model inside a PEFT wrapper (LoRA layers stay injected in it), or ``model`` itself."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens (left padding gets position 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


_SENTINEL = "fairrl-end-of-turn-probe"


def end_of_turn_id(tokenizer) -> int:
    """Id of the token the chat template puts right after an assistant reply, else the eos token.

    Read off the template (``<|im_end|>`` for ChatML, ``<|eot_id|>`` for Llama 3, ``<end_of_turn>``
    for Gemma) because some tokenizers' ``eos_token`` is the end of the *document*, not of the turn.
    """
    try:
        chat = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}]
        text = tokenizer.apply_chat_template(chat, tokenize=False)
        ids = tokenizer(text.split(_SENTINEL, 1)[1], add_special_tokens=False)["input_ids"]
        special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
        if ids and ids[0] in special:
            return int(ids[0])
    except Exception:  # templates that reject this probe conversation: fall back to eos
        pass
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither a chat template end-of-turn token nor an eos token")
    return int(tokenizer.eos_token_id)

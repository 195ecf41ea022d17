"""Small helpers on model objects shared by the pipeline stages."""

from __future__ import annotations


def unwrap_peft(model):
    """The transformers model inside a PEFT wrapper (LoRA layers stay injected in it), or ``model`` itself."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model

"""Small helpers on model objects and their inputs, shared by the models, rollout and eval stages."""

from __future__ import annotations

import torch


def unwrap_peft(model):
    """The transformers model inside a PEFT wrapper (LoRA layers stay injected in it), or ``model`` itself."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens (left padding gets position 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)

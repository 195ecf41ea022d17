"""The trainable policy: device choice, loading with LoRA or for full fine-tuning, and writing it out."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fairrl.config.common import ModelConfig
from fairrl.errors import ConfigError
from fairrl.models.loading import (
    LoraSettings,
    _quiet_transformers,
    apply_lora,
    enable_gradient_checkpointing,
    load_model,
    load_tokenizer,
)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA name without CUDA is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device is {name!r} but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def build_policy(m: ModelConfig, device: torch.device):
    """Tokenizer and trainable policy (LoRA-wrapped unless ``m.lora`` is null)."""
    tokenizer = load_tokenizer(m.name_or_path, trust_remote_code=m.trust_remote_code, revision=m.revision)
    model = load_model(
        m.name_or_path, dtype=m.dtype, device=device, trust_remote_code=m.trust_remote_code, revision=m.revision
    )
    if m.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if m.lora is not None:
        lora = m.lora
        model = apply_lora(model, LoraSettings(lora.r, lora.alpha, lora.dropout, lora.target_modules))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return tokenizer, model


def write_policy(model, tokenizer, folder: Path, base_name: str) -> None:
    """Weights as safetensors into ``folder`` (adapter + its config naming the base model, or the full model)."""
    _quiet_transformers()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    adapter_cfg = folder / "adapter_config.json"
    if adapter_cfg.exists():  # name the base as the user did (a built-in name stays portable)
        data = json.loads(adapter_cfg.read_text())
        data["base_model_name_or_path"] = base_name
        adapter_cfg.write_text(json.dumps(data, indent=2))

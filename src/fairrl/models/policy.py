"""The trainable policy: device choice, loading with LoRA or for full fine-tuning, and writing it out."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fairrl.config.common import DEVICE_PATTERN, ModelConfig
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
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` when that device
    exists; anything else (or an absent device) is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(
            f"model.device {name!r} is not one of auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"
        )
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"model.device is {name!r} but no CUDA device is available; use auto or cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"model.device is {name!r} but only {torch.cuda.device_count()} CUDA device(s) "
                              f"exist (cuda:0 to cuda:{torch.cuda.device_count() - 1})")  # fmt: skip
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("model.device is 'mps' but no Apple MPS device is available; use auto or cpu")
    return torch.device(name)


def context_length(model) -> int | None:
    """The model's maximum sequence length (``max_position_embeddings`` or an alias), if it states one."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_completion_length(
    model, max_completion_length: int, key: str = "algorithm.max_completion_length"
) -> None:
    """A ConfigError when completions of ``max_completion_length`` tokens cannot fit the model's context."""
    limit = context_length(model)
    if limit is not None and max_completion_length > limit:
        raise ConfigError(
            f"{key}={max_completion_length} is longer than the model's context ({limit} positions, "
            f"max_position_embeddings); use at most {limit} (and leave room for the prompt)"
        )


def build_policy(m: ModelConfig, device: torch.device):
    """Tokenizer and trainable policy (LoRA-wrapped unless ``m.lora`` is null)."""
    tokenizer = load_tokenizer(m.name_or_path, trust_remote_code=m.trust_remote_code, revision=m.revision)
    model = load_model(
        m.name_or_path,
        dtype=m.dtype,
        device=device,
        trust_remote_code=m.trust_remote_code,
        revision=m.revision,
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

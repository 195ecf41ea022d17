"""Config sections every training method shares: the model, LoRA, and the run / optimiser vocabulary.

Names follow TRL (``TrainingArguments``) where the meaning is the same: ``learning_rate``,
``lr_scheduler_type``, ``warmup_ratio`` / ``warmup_steps``, ``weight_decay``, ``max_grad_norm``,
``logging_steps``, ``save_steps``, ``seed``, ``max_steps``. What a *step* is differs per method and is
documented on each method's schema (a GRPO step is one generated batch; a DPO / reward-model step one
mini-batch of pairs).
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from fairrl.config.base import ConfigDeprecationWarning, Strict

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
"""Device names a config may give: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
MAX_LEARNING_RATE = 1.0
"""Largest accepted AdamW learning rate (usual ones are 1e-6 to 1e-3; above 1 every update diverges)."""


def check_device(value: str) -> str:
    """``value`` if it is a device name fairrl can use (see :data:`DEVICE_PATTERN`), else a ValueError."""
    if not DEVICE_PATTERN.fullmatch(value):
        raise ValueError(f"device {value!r} is not one of auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps")
    return value


def check_run_name(value: str) -> str:
    """``value`` if it is a plain folder name, else a ValueError: the run folder is
    ``<output_dir>/<run_name>``, and a path there (``../x``, ``a/b``, ``/tmp/x``) would write elsewhere."""
    if value.strip() in ("", ".", "..") or any(c in value for c in "/\\\0") or value != value.strip():
        raise ValueError(
            "run_name must be a plain folder name (no '/', '\\', '..' or surrounding spaces); "
            "to write somewhere else set output_dir or pass --out DIR"
        )
    return value


RunName = Annotated[str, AfterValidator(check_run_name)]
"""A ``run_name`` field: a plain folder name under ``output_dir`` (:func:`check_run_name`)."""


def check_learning_rate(value: float) -> float:
    """A learning rate above :data:`MAX_LEARNING_RATE` is a ValueError (finite and > 0 the field checks)."""
    if value > MAX_LEARNING_RATE:
        raise ValueError(
            f"learning rate {value:g} is above {MAX_LEARNING_RATE:g}, where AdamW updates diverge to NaN "
            "weights; typical values are 1e-6 to 1e-4"
        )
    return value


TRACKERS = ("tensorboard", "wandb", "mlflow", "jsonl")
"""Values of ``report_to`` (besides ``all`` and ``none``); the modules that write them are in
:mod:`fairrl.trainer.trackers`."""
DEFAULT_REPORT_TO = ("tensorboard", "jsonl")
_TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "jsonl": "json"}


def tracker_installed(name: str) -> bool:
    """Whether the package a tracker needs is importable (checked without importing it)."""
    return importlib.util.find_spec(_TRACKER_MODULES[name]) is not None


def normalize_report_to(value: Any) -> list[str]:
    """``report_to`` as TRL reads it (a name, a list, ``all``, ``none`` / null) -> the list of trackers,
    with ``jsonl`` always included, since metrics.jsonl is always written."""
    items = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
        raise ValueError(f"report_to must be a name or a list of names, got {value!r}")
    names = [x.strip().lower() for x in items]
    if ("all" in names or "none" in names) and len(names) > 1:
        raise ValueError(f"report_to {value!r}: 'all' and 'none' stand alone")
    if names == ["all"]:
        names = [t for t in TRACKERS if tracker_installed(t)]
    elif names == ["none"]:
        names = []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"report_to: unknown {unknown}; choose from {', '.join(TRACKERS)}, all or none")
    out = list(dict.fromkeys(names))
    return out if "jsonl" in out else [*out, "jsonl"]


def report_to_for_tensorboard(flag: bool) -> list[str]:
    """What the deprecated ``tensorboard: flag`` means in report_to."""
    return list(DEFAULT_REPORT_TO) if flag else ["jsonl"]


class LoraConfig(Strict):
    r: int = Field(16, ge=1)
    """LoRA rank."""
    alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (PEFT ``lora_alpha``)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch."""
    target_modules: str | list[str] = "all-linear"
    """Modules to adapt (PEFT syntax): ``all-linear``, a list of module names (``[q_proj, v_proj]``) or a
    regular expression matched against full module names."""

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names or any(not n.strip() for n in names):
            raise ValueError("name at least one module (all-linear, or e.g. [q_proj, v_proj]), none empty")
        return value


class FSDPConfig(Strict):
    """FSDP2 sharding of the policy under ``torchrun`` (:mod:`fairrl.models.sharding`): each decoder layer's
    weights, gradients and optimiser state are split across the ranks with ``torch.distributed.fsdp.fully_shard``."""

    mixed_precision: Literal["off", "bf16", "fp16"] = "off"
    """Layers compute in this dtype (weights gathered in it); gradients are reduced and kept in float32."""
    reshard_after_forward: bool = True
    """Free a layer's gathered weights after its forward (less memory; gathered again for the backward)."""


class ModelConfig(Strict):
    name_or_path: str = "smollm2-135m-instruct"
    """Built-in name, local folder or Hugging Face hub id of a causal LM."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype (float32 on CPU)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``... or ``mps``."""
    trust_remote_code: bool = False
    """Run model code from the hub. Off unless you trust the repository."""
    revision: str | None = None
    """Hub revision (branch, tag or commit)."""
    lora: LoraConfig | None = Field(default_factory=LoraConfig)
    """LoRA adapters (null = full fine-tuning, with a frozen copy as KL reference when beta > 0)."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of keeping them (less memory, one
    more forward). The training forward then packs each prompt with its completions where that pays, else
    encodes the prompt with each completion (transformers drops the KV cache inside checkpointed layers)."""

    fsdp: FSDPConfig | None = None
    """Shard the policy's layers (and a frozen reference copy, PPO's separate critic) across the ranks with FSDP2
    (``fsdp: {}`` for the defaults; every ``fairrl train`` method, under ``torchrun`` with 2+ ranks; not yet
    with the red team's per-role adapters); null = every rank holds the whole model."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device(value)


class RunConfig(Strict):
    """The run folder, checkpoints, logging and the optimiser (AdamW + schedule + clipping)."""

    output_dir: str = "runs"
    """Parent folder of runs."""
    seed: int = Field(0, ge=0, le=2**32 - 1)
    """Seed for data split, order, sampling and initialisation (0 to 2**32 - 1)."""
    max_minutes: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Stop training after this many minutes (a checkpoint is written); null = no limit."""
    save_steps: int = Field(10, ge=1)
    """Checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints kept on disk."""
    logging_steps: int = Field(1, ge=1)
    """A metrics row (metrics.jsonl and every report_to tracker) every N steps, and at the last step."""
    report_to: list[str] = Field(default_factory=lambda: list(DEFAULT_REPORT_TO))
    """Where metrics go (TRL's name): any of tensorboard, wandb, mlflow, jsonl; ``all`` = every one whose
    package is installed, ``none`` = metrics.jsonl only. jsonl is always on (resume, reports and plots read
    metrics.jsonl). wandb and mlflow are extras (``pip install 'fairrl[wandb]'``); see
    :mod:`fairrl.trainer.trackers` for offline use. Replaces ``tensorboard: true/false`` (deprecated)."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (null = torch default)."""
    learning_rate: float = Field(1e-5, gt=0.0, allow_inf_nan=False)
    """AdamW learning rate (peak, after warm-up); at most 1."""
    lr_scheduler_type: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule after warm-up: constant, linear decay to 0, or cosine decay to 0."""
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of the optimiser steps with a linear warm-up (used when warmup_steps is 0)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up optimiser steps; overrides warmup_ratio when > 0 (as in transformers)."""
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    """AdamW weight decay."""
    max_grad_norm: float | None = Field(1.0, gt=0.0, allow_inf_nan=False)
    """Gradient clipping norm (null = off)."""

    @field_validator("learning_rate")
    @classmethod
    def _sane_learning_rate(cls, value: float) -> float:
        return check_learning_rate(value)

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_trackers(cls, value: Any) -> list[str]:
        return normalize_report_to(value)

    @model_validator(mode="before")
    @classmethod
    def _tensorboard_flag(cls, data: Any) -> Any:
        """The old ``tensorboard: bool`` becomes report_to (false = without tensorboard), with a warning."""
        if not isinstance(data, dict) or "tensorboard" not in data:
            return data
        data = dict(data)
        flag = data.pop("tensorboard")
        if "report_to" in data:
            raise ValueError("config sets both 'tensorboard' (old spelling) and 'report_to'; keep only 'report_to'")
        if not isinstance(flag, bool):
            raise ValueError(f"'tensorboard' (deprecated) must be true or false, got {flag!r}; use report_to")
        warnings.warn(
            "config key 'tensorboard' is deprecated and will be removed in the next release; use 'report_to' "
            f"(here: report_to: [{', '.join(report_to_for_tensorboard(flag))}])",
            ConfigDeprecationWarning, stacklevel=3,  # the caller of model_validate (config.base.validate)
        )  # fmt: skip
        data["report_to"] = report_to_for_tensorboard(flag)
        return data

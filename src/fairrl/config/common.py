"""Config sections every training method shares: the model, LoRA, and the run / optimiser vocabulary.

Names follow TRL (``TrainingArguments``) where the meaning is the same: ``learning_rate``,
``lr_scheduler_type``, ``warmup_ratio`` / ``warmup_steps``, ``weight_decay``, ``max_grad_norm``,
``logging_steps``, ``save_steps``, ``seed``, ``max_steps``. What a *step* is differs per method and is
documented on each method's schema (a GRPO step is one generated batch; a DPO / reward-model step one
mini-batch of pairs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fairrl.config.base import Strict


class LoraConfig(Strict):
    r: int = Field(16, ge=1)
    """LoRA rank."""
    alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (PEFT ``lora_alpha``)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch."""
    target_modules: str | list[str] = "all-linear"
    """Modules to adapt (PEFT syntax)."""


class ModelConfig(Strict):
    name_or_path: str = "smollm2-135m-instruct"
    """Built-in name, local folder or Hugging Face hub id of a causal LM."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype (float32 on CPU)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``..."""
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


class RunConfig(Strict):
    """The run folder, checkpoints, logging and the optimiser (AdamW + schedule + clipping)."""

    output_dir: str = "runs"
    """Parent folder of runs."""
    seed: int = 0
    """Seed for data split, order, sampling and initialisation."""
    max_minutes: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Stop training after this many minutes (a checkpoint is written); null = no limit."""
    save_steps: int = Field(10, ge=1)
    """Checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints kept on disk."""
    logging_steps: int = Field(1, ge=1)
    """A metrics row (metrics.jsonl, TensorBoard) every N steps, and at the last step."""
    tensorboard: bool = True
    """Write TensorBoard event files beside metrics.jsonl."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (null = torch default)."""
    learning_rate: float = Field(1e-5, gt=0.0, allow_inf_nan=False)
    """AdamW learning rate (peak, after warm-up)."""
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

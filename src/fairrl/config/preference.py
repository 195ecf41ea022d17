"""Typed configs of the preference-learning runs: reward-model training and DPO.

Names follow TRL's ``RewardConfig`` / ``DPOConfig`` where the meaning is the same
(``num_train_epochs``, ``per_device_train_batch_size``, ``max_length``, ``max_prompt_length``, ``beta``,
``label_smoothing``, ``center_rewards_coefficient``); the run and optimiser keys (``learning_rate``,
``lr_scheduler_type``, ``warmup_ratio``, ...) are the shared ones of :class:`fairrl.config.common.RunConfig`.
Both runs read the same :class:`PreferenceDataConfig` and :class:`FairnessConfig`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from fairrl.config.base import Strict
from fairrl.config.common import LoraConfig, ModelConfig, RunConfig, RunName, check_device


class PreferenceDataConfig(Strict):
    sources: list[str] = Field(default_factory=lambda: ["stereoset", "crows_pairs", "bbq"])
    """Built-in pair sets (stereoset, crows_pairs, bbq, bbq_abstain: BBQ's disambiguated items with the
    correct answer over "unknown") and/or local .jsonl/.json/.csv files or hub ids of chosen/rejected
    preference data (e.g. HH-RLHF, BiasDPO)."""
    groups: list[str] | None = None
    """Keep only these groups (canonical names such as gender, race, religion); null = all."""
    heldout_groups: list[str] = Field(
        default_factory=lambda: ["religion", "disability", "sexual_orientation"]
    )
    """Groups never trained on; their pairs form the held-out evaluation set."""
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Share of each trained group's templates kept for in-distribution evaluation."""
    max_pairs_per_group: int | None = Field(300, ge=1)
    """Cap on pairs per (source, group) before splitting (null = all); keeps CPU runs to minutes."""
    prompt_column: str = "prompt"
    """Prompt column of file / hub sources (absent column = no prompt)."""
    chosen_column: str = "chosen"
    """Preferred-response column of file / hub sources."""
    rejected_column: str = "rejected"
    """Dispreferred-response column of file / hub sources."""
    group_column: str | None = None
    """Group column of file / hub sources (null = every pair in one group named after the source)."""
    hub_split: str = "train"
    """Split read from hub sources."""
    balance: Literal["none", "group", "source", "group_source"] = "none"
    """Training batches: none = shuffled pairs; group / source / group_source = each batch draws the
    strata (groups, sources, or (group, source) cells) equally, cycling the small ones, so every stratum
    is present in every batch that has room (same number of steps; :mod:`fairrl.trainer.pair_batches`)."""

    @model_validator(mode="after")
    def _check(self) -> PreferenceDataConfig:
        if not self.sources:
            raise ValueError(
                "data.sources is empty: name stereoset, crows_pairs, bbq, bbq_abstain or a file / hub id"
            )
        return self


class FairnessConfig(Strict):
    kind: Literal[
        "none", "regularizer", "coefficient", "coefficient_paper",
        "group_regularizer", "group_coefficient", "group_balanced", "group_dro",
    ] = "none"  # fmt: skip
    """none = Bradley-Terry / DPO; regularizer = FR (L - alpha f); coefficient = FC (L f^-gamma, raises
    fairness); coefficient_paper = FC as written in the paper (L f^gamma, lowers fairness). Group-level,
    from the pairs' group labels: group_regularizer / group_coefficient = FR / FC on the groups' mean
    reward shares; group_balanced = every group of a batch weighs the same; group_dro = online group DRO
    (the worst groups gain weight; ``dro_step_size``)."""
    alpha: float = Field(0.1, ge=0.0)
    """FR weight."""
    gamma: float = Field(0.5, ge=0.0)
    """FC exponent."""
    tau: float = -1.0
    """Lan-Chiang fairness parameter (-1 = Jain's index; 1 is not allowed)."""
    dro_step_size: float = Field(0.01, ge=0.0, allow_inf_nan=False)
    """group_dro: step size eta of q_g <- q_g exp(eta * group loss) (Sagawa et al. 2020: 0.01)."""

    @model_validator(mode="after")
    def _check(self) -> FairnessConfig:
        if self.tau == 1.0:
            raise ValueError("fairness.tau = 1 makes f identically 0; use -1 (Jain), 0 (entropy) or 0.5")
        return self


class _PreferenceRun(RunConfig):
    """A step is one mini-batch of ``per_device_train_batch_size`` pairs (one optimiser step)."""

    num_train_epochs: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    """Passes over the training pairs."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimiser steps (overrides num_train_epochs)."""
    per_device_train_batch_size: int = Field(16, ge=1)
    """Pairs per optimiser step; the fairness objectives act on this mini-batch."""
    eval_batch_size: int = Field(64, ge=1)
    """Pairs per forward pass in evaluation."""
    lr_scheduler_type: Literal["constant", "linear", "cosine"] = "linear"
    """Learning-rate schedule after warm-up (TRL's default: linear decay to 0)."""
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of the optimiser steps with a linear warm-up (used when warmup_steps is 0)."""
    save_steps: int = Field(50, ge=1)
    """Checkpoint every N steps (and at the end)."""
    logging_steps: int = Field(5, ge=1)
    """A metrics row every N steps, and at the last step."""
    n_boot: int = Field(1000, ge=1)
    """Bootstrap resamples for the 95% intervals of the evaluation."""
    data: PreferenceDataConfig = Field(default_factory=PreferenceDataConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)


class RewardModelConfig(Strict):
    name_or_path: str = "minilm"
    """Backbone: ``minilm`` (packaged all-MiniLM-L6-v2), a built-in causal LM name, a folder or hub id."""
    pooling: Literal["auto", "mean", "last", "cls"] = "auto"
    """How token states become one vector: auto = mean for encoders, last token for decoders."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    trust_remote_code: bool = False
    """Run model code from the hub. Off unless you trust the repository."""
    revision: str | None = None
    """Hub revision."""
    lora: LoraConfig | None = None
    """LoRA adapters on the backbone (null = full fine-tuning; the head is always trained)."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device(value)


class RMTrainConfig(_PreferenceRun):
    config_kind: ClassVar[str] = "rm"

    run_name: RunName = "rm"
    """Name of the run folder under output_dir."""
    model: RewardModelConfig = Field(default_factory=RewardModelConfig)
    learning_rate: float = Field(3e-5, gt=0.0, allow_inf_nan=False)
    """AdamW learning rate."""
    max_length: int = Field(128, ge=8)
    """Tokens of prompt + response fed to the reward model (longer inputs are truncated)."""
    center_rewards_coefficient: float | None = Field(None, ge=0.0)
    """TRL's auxiliary loss c * mean((r_w + r_l)^2) that keeps rewards centred on 0 (null = off)."""


class DPOTrainConfig(_PreferenceRun):
    config_kind: ClassVar[str] = "dpo"

    run_name: RunName = "dpo"
    """Name of the run folder under output_dir."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """Policy (causal LM); with LoRA the reference is the same model with the adapter disabled."""
    learning_rate: float = Field(5e-6, gt=0.0, allow_inf_nan=False)
    """AdamW learning rate."""
    per_device_train_batch_size: int = Field(8, ge=1)
    """Pairs per optimiser step; the fairness objectives act on this mini-batch."""
    eval_batch_size: int = Field(16, ge=1)
    """Pairs per forward pass in evaluation."""
    beta: float = Field(0.1, gt=0.0)
    """DPO temperature on the implicit reward."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """Conservative DPO: probability that a preference label is flipped."""
    max_length: int = Field(192, ge=8)
    """Tokens of prompt + response (the prompt is truncated from the left first)."""
    max_prompt_length: int = Field(128, ge=1)
    """Tokens of prompt kept."""
    eval_pairs_per_group: int = Field(40, ge=0)
    """Evaluation pairs per group scored before and after training (0 = no evaluation)."""

    @model_validator(mode="after")
    def _check_sharding(self) -> DPOTrainConfig:
        if self.model.fsdp is not None:
            raise ValueError("model.fsdp: fairrl dpo train (the preference-pair run) is data-parallel only; "
                             "remove model.fsdp, or train DPO sharded with fairrl train (method: dpo)")  # fmt: skip
        return self

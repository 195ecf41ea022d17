"""Config sections of the non-GRPO methods of ``fairrl train``: ``sft:``, ``kd:`` and ``dpo:``.

``method: sft`` trains on targets read from the data (:mod:`fairrl.data.sft_targets`); ``method: kd``
distils a teacher (:mod:`fairrl.recipes.kd`). Both take one optimiser step per ``max_steps`` step, on
``batch_size`` examples, and share the run keys (learning rate, schedule, checkpoints, evaluation).
Names follow TRL where the meaning is the same: ``SFTConfig`` (``packing``, ``max_length``) and
``GKDConfig`` (``lmbda``, ``beta``, ``temperature``, ``max_new_tokens``, ``seq_kd``) and ``DPOConfig``
(``beta``, ``label_smoothing``, ``max_length``). ``method: dpo`` trains on pairs read from the same data
(:mod:`fairrl.data.dpo_pairs`). ``warm_start:`` runs sft steps before a grpo run
(:mod:`fairrl.trainer.warm_start`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fairrl.config.base import Strict


class SFTConfig(Strict):
    batch_size: int = Field(8, ge=1)
    """Examples per optimiser step (TRL's per_device_train_batch_size, without accumulation)."""
    max_length: int = Field(1024, ge=8)
    """Most tokens of one example (prompt + completion); longer ones lose prompt tokens from the left,
    then completion tokens from the right."""
    packing: bool = True
    """Pack short examples into shared rows (attention kept within each example, positions restarting);
    false = one padded row per example. Same loss either way (tested)."""
    rationale: bool = True
    """BBQ targets: the answer, then one line of rationale from the item's context; false = the answer alone."""


class KDConfig(Strict):
    teacher: str | None = None
    """Built-in name, model folder, hub id or fairrl run folder (its final/). null = context distillation:
    the starting model itself, prompted with teacher_system_prompt, teaches the model without it."""
    mode: Literal["token", "sequence"] = "token"
    """token: match the teacher's next-token distributions (GKD, loss below); sequence: fine-tune on the
    teacher's sampled replies (Kim & Rush 2016)."""
    loss: Literal["jsd", "forward_kl", "reverse_kl"] = "jsd"
    """Token mode divergence: generalised JSD with beta, KL(teacher||student) or KL(student||teacher)."""
    beta: float = Field(0.5, ge=0.0, le=1.0)
    """JSD interpolation (TRL GKD convention): M = beta P_teacher + (1 - beta) P_student; 0 is forward KL,
    1 reverse KL, as in TRL."""
    lmbda: float = Field(0.5, ge=0.0, le=1.0)
    """Token mode: share of steps trained on the student's own samples (on-policy); the others use the
    dataset's targets (or the teacher's samples, seq_kd)."""
    seq_kd: bool = False
    """Token mode: off-policy steps use teacher samples instead of the dataset's targets (TRL's seq_kd)."""
    temperature: float = Field(0.9, ge=0.0, allow_inf_nan=False)
    """Sampling temperature of student and teacher samples (0 = greedy); the loss uses temperature 1, as TRL."""
    max_new_tokens: int = Field(64, ge=1)
    """Most tokens of a sampled reply."""
    batch_size: int = Field(8, ge=1)
    """Prompts per optimiser step."""
    filter_by_reward: bool = False
    """Sequence mode: sample num_samples replies per prompt and train on the one the run's rewards score highest."""
    num_samples: int = Field(4, ge=1)
    """Sequence mode with filter_by_reward: teacher replies sampled per prompt."""
    teacher_system_prompt: str | None = None
    """Put before the teacher's system message. null = the built-in debiasing prompt with worked examples
    when teacher is null (context distillation), nothing for another teacher; "" = nothing."""


class DPOMethodConfig(Strict):
    beta: float = Field(0.1, gt=0.0, allow_inf_nan=False)
    """Strength of the implicit KL to the reference (DPO's beta; TRL's default 0.1)."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """Conservative DPO's label-flip probability (0 = plain DPO); TRL's sigmoid loss has no such option."""
    batch_size: int = Field(8, ge=1)
    """Pairs per optimiser step."""
    max_length: int = Field(1024, ge=8)
    """Most tokens of prompt + reply (truncated as in sft)."""
    rationale: bool = True
    """BBQ replies carry a rationale line (as sft's targets); false = the option text alone."""


class WarmStartConfig(Strict):
    steps: int = Field(0, ge=0)
    """SFT steps on the data's own targets before the GRPO steps (``sft:`` gives batch size, packing and
    rationale); 0 = none. The GRPO phase then starts from, and keeps its KL to, the fine-tuned model."""
    learning_rate: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    """Learning rate of the SFT phase, on the run's schedule over ``steps``; null = the run's learning_rate."""

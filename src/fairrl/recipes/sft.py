"""Supervised fine-tuning (``fairrl train --set method=sft``): the run's data with its own targets.

Each step takes ``sft.batch_size`` examples from the training mixture (in the seeded, resumable order of
GRPO's prompt stream, over the examples that have a target), and takes one AdamW step on the NLL of the
target tokens only (:func:`fairrl.losses.sft.sft_loss`), packed or padded (``sft.packing``). Targets come
from the data (:mod:`fairrl.data.sft_targets`): BBQ's gold option with a rationale line, the reasoning
tasks' answers, GSM8K's worked solutions, the ``completion`` (or ``messages``) of the user's rows; rows
without one are left out, with a note. The step is :class:`fairrl.trainer.sft_step.SFTMethod` (also the
warm start of a grpo run, :mod:`fairrl.trainer.warm_start`); the run skeleton, folder and evaluation are
those of :mod:`fairrl.trainer.loop`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairrl.config.grpo import TrainConfig
from fairrl.eval.heldout import evaluate_splits
from fairrl.trainer.loop import run_method
from fairrl.trainer.sft_step import SFTMethod

__all__ = ["SFTMethod", "run_sft"]


def run_sft(cfg: TrainConfig, **kwargs: Any) -> Path:
    """Train (or resume) an SFT run; keyword arguments as :func:`fairrl.trainer.loop.run_method`
    (``out``, ``resume``, ``console``, ``evaluate``, ``progress``, ``components``, ``data``, ``overwrite``)."""
    return run_method(cfg, SFTMethod(), evaluate_splits, **kwargs)

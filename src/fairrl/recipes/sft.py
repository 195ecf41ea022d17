"""Supervised fine-tuning (``fairrl train --set method=sft``): the run's data with its own targets.

Each step takes ``sft.batch_size`` examples from the training mixture (in the seeded, resumable order of
GRPO's prompt stream, over the examples that have a target), and takes one AdamW step on the NLL of the
target tokens only (:func:`fairrl.losses.sft.sft_loss`), packed or padded (``sft.packing``). Targets come
from the data (:mod:`fairrl.data.sft_targets`): BBQ's gold option with a rationale line, the reasoning
tasks' answers, GSM8K's worked solutions, the ``completion`` (or ``messages``) of the user's rows; rows
without one are left out, with a note. The run skeleton, folder and evaluation are those of
:mod:`fairrl.trainer.loop`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairrl.config.grpo import TrainConfig
from fairrl.data.run_data import RunData
from fairrl.data.sft_targets import with_targets
from fairrl.data.stream import PromptStream
from fairrl.errors import DataError
from fairrl.eval.heldout import evaluate_splits
from fairrl.eval.likelihood import end_of_turn_id
from fairrl.models.sequences import packing_supported
from fairrl.trainer.loop import RunContext, StreamMethod, run_method
from fairrl.trainer.sft_step import ReplyEncoder, sft_update


class SFTMethod(StreamMethod):
    """One step: ``sft.batch_size`` (prompt, target) examples -> completion-only NLL -> AdamW."""

    name = "sft"

    def check_data(self, cfg: TrainConfig, data: RunData) -> None:
        self.examples, targets = with_targets(data.train, cfg.sft.rationale)
        if not self.examples:
            raise DataError(
                "method sft: no training prompt has a target; BBQ, reasoning and GSM8K items carry one, rows of "
                "your own data need a 'completion' column (or TRL's 'messages' ending with the reply)"
            )
        self.targets = {e.prompt_id: t for e, t in zip(self.examples, targets, strict=True)}
        self.skipped = len(data.train) - len(self.examples)

    def prepare(self, run: RunContext) -> None:
        super().prepare(run)
        if self.skipped:
            run.console(
                f"note: {self.skipped:,} training prompts have no target (no completion) and are left out"
            )
        self.encoder = ReplyEncoder(run.tokenizer, end_of_turn_id(run.tokenizer))
        self.stream = PromptStream(self.examples, run.cfg.seed)
        self.packing = run.cfg.sft.packing and packing_supported(run.policy)
        if run.cfg.sft.packing and not self.packing:
            run.console("note: this model's attention takes no packing mask; sft.packing is off for this run")

    def step(self, step: int) -> dict[str, Any]:
        batch = self.stream.take(self.run.cfg.sft.batch_size)
        prompts = [self.encoder.prompt(e.prompt_id, e.prompt) for e in batch]
        replies = [self.encoder.reply(self.targets[e.prompt_id]) for e in batch]
        return sft_update(self.run, prompts, replies, self.encoder.pad_id, self.packing)



def run_sft(cfg: TrainConfig, **kwargs: Any) -> Path:
    """Train (or resume) an SFT run; keyword arguments as :func:`fairrl.trainer.loop.run_method`
    (``out``, ``resume``, ``console``, ``evaluate``, ``progress``, ``components``, ``data``, ``overwrite``)."""
    return run_method(cfg, SFTMethod(), evaluate_splits, **kwargs)

"""The pieces SFT and KD steps share: prompts and replies as token ids, a supervised update, sampling.

- :class:`ReplyEncoder`: a prompt is its chat rendering with the generation prompt (as in GRPO and the
  evaluation); a reply is its text's tokens followed by the chat template's end-of-turn token - the
  sequence the likelihood evaluation scores and greedy generation stops at.
  Deviation from TRL's ``SFTTrainer``: TRL renders prompt + completion with the chat template and trains
  on every token after the prompt, so whatever the template puts after the end-of-turn token (a newline
  in ChatML) is learned too; here the reply ends at the end-of-turn token.
- :func:`sft_update`: the completion-only NLL (:func:`fairrl.losses.sft.sft_loss`) over one batch,
  packed or padded (:mod:`fairrl.models.sequences`), and one optimiser step.
- :class:`SFTMethod`: the step of ``method: sft`` and of a grpo run's ``warm_start``.
- :func:`sample_replies`: replies sampled with the run's shared-prompt sampler, as token ids (the stop
  token included when one was emitted).
"""

from __future__ import annotations

from typing import Any

import torch

from fairrl.config.grpo import TrainConfig
from fairrl.data.records import Message
from fairrl.data.run_data import RunData
from fairrl.data.sft_targets import with_targets
from fairrl.data.stream import PromptStream
from fairrl.distributed import current
from fairrl.errors import DataError
from fairrl.losses.sft import sft_loss
from fairrl.models.common import end_of_turn_id
from fairrl.models.sequences import encode_sequences, packing_supported, sequence_logprobs
from fairrl.rollout.generate import left_pad, sample_groups
from fairrl.trainer.loop import RunContext, StreamMethod, update


class ReplyEncoder:
    """Token ids of prompts (cached by key) and of replies (module docstring)."""

    def __init__(self, tokenizer, end_id: int):
        self.tokenizer = tokenizer
        self.end_id = int(end_id)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._cache: dict[str, list[int]] = {}

    def prompt(self, key: str, messages: list[Message]) -> list[int]:
        ids = self._cache.get(key)
        if ids is None:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = self._cache[key] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def reply(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.end_id]


def sft_update(run: RunContext, prompts: list[list[int]], replies: list[list[int]], pad_id: int,
               packing: bool) -> dict[str, Any]:  # fmt: skip
    """Completion-only NLL of ``replies`` given ``prompts`` (``sft.max_length``, packed or padded) and one
    optimiser step; returns the step's metrics. Data-parallel: these are this rank's share of the batch,
    and the loss and metrics are those of the whole batch (:func:`~fairrl.trainer.loop.update`)."""
    batch = encode_sequences(prompts, replies, pad_id, run.cfg.sft.max_length, packing).to(run.device)
    run.policy.train()
    loss, _ = sft_loss(sequence_logprobs(run.policy, batch))
    counts = batch_counts(batch)
    metrics = update(run, loss, counts["targets"] / counts["all/targets"])
    run.policy.eval()
    return {**metrics, "num_tokens": counts["all/targets"], "mean_token_logprob": -metrics["loss"],
            "rows": counts["all/rows"], "padding": 1.0 - counts["all/real"] / counts["all/cells"],
            "tokens/trained": counts["all/real"],
            "completions/mean_length": counts["all/targets"] / counts["all/examples"]}  # fmt: skip


def batch_counts(batch) -> dict[str, float]:
    """This rank's and (``all/...``) every rank's counts of a sequence batch: target tokens, examples,
    rows, real tokens and token cells (one process: the two are equal)."""
    local = {"targets": float(sum(batch.lengths)), "examples": float(len(batch.lengths)),
             "rows": float(batch.ids.shape[0]), "real": float(batch.mask.sum()), "cells": float(batch.mask.numel())}  # fmt: skip
    return {**local, **{f"all/{k}": v for k, v in current().sum_floats(local).items()}}


@torch.no_grad()
def sample_replies(model, prompts: list[list[int]], n: int, *, max_new_tokens: int, temperature: float,
                   stop_ids: list[int], pad_id: int, generator: torch.Generator,
                   rows: tuple[int, int] | None = None) -> list[list[int]]:  # fmt: skip
    """``n`` sampled replies per prompt, prompt-major (``[p0 r0, p0 r1, ..., p1 r0, ...]``), as token ids;
    ``rows``: these prompts' first reply row and the batch's reply rows, for one rank's share of a batch."""
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    was_training = model.training
    model.eval()
    try:
        r = sample_groups(
            model,
            ids.to(device),
            mask.to(device),
            group_size=n,
            max_new_tokens=max_new_tokens,
            eos_token_ids=stop_ids,
            pad_token_id=pad_id,
            temperature=temperature,
            generator=generator,
            rows=rows,
        )
    finally:
        model.train(was_training)
    return [
        row[m.bool()].tolist() for row, m in zip(r.completion_ids.cpu(), r.completion_mask.cpu(), strict=True)
    ]


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
        batch = batch[current().shard(len(batch), "sft.batch_size")]  # data-parallel: this rank's share
        prompts = [self.encoder.prompt(e.prompt_id, e.prompt) for e in batch]
        replies = [self.encoder.reply(self.targets[e.prompt_id]) for e in batch]
        return sft_update(self.run, prompts, replies, self.encoder.pad_id, self.packing)

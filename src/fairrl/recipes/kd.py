"""Knowledge distillation (``fairrl train --set method=kd``): a teacher's behaviour into the policy.

The teacher (:mod:`fairrl.models.teacher`) is by default the starting model itself given a debiasing
system prompt with worked examples - context distillation: the student learns to answer as the prompted
model does, without the prompt. Each step takes ``kd.batch_size`` prompts from the training mixture; the
teacher sees them with its system prompt, the student as they are.

- ``kd.mode: token`` - GKD (Agarwal et al. 2024, arXiv 2306.13649; TRL ``GKDTrainer``): with probability
  ``lmbda`` the replies are the student's own samples (on-policy), else the dataset's targets
  (:mod:`fairrl.data.sft_targets`; the teacher's samples for prompts without one, or for all with
  ``seq_kd``); the loss is the mean over reply tokens of the divergence ``kd.loss`` between the teacher's
  and the student's next-token distributions (:mod:`fairrl.losses.distill`).
- ``kd.mode: sequence`` - sequence-level KD (Kim & Rush 2016, arXiv 1606.07947): the teacher samples a
  reply per prompt, and the student takes an SFT step on it. With ``filter_by_reward`` the teacher samples
  ``num_samples`` replies and the one the run's reward functions score highest is kept (the weighted sum
  over the functions that apply; a prompt none applies to keeps its first sample).

Deviations: TRL's GKD draws the on-policy coin from Python's global RNG; here it comes from (seed, step),
so a resumed run draws what it would have. Kim & Rush decode the teacher with beam search; here the
teacher samples at ``kd.temperature`` (0 = greedy, the closest to the beam's mode-seeking output).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from fairrl.advantages import combine_rewards
from fairrl.config.grpo import TrainConfig
from fairrl.data.records import Example, column_names, rows_to_columns, trl_sample
from fairrl.data.run_data import RunData
from fairrl.data.sft_targets import with_targets
from fairrl.data.stream import PromptStream
from fairrl.data.teacher_prompt import teacher_messages
from fairrl.distributed import current
from fairrl.eval.heldout import evaluate_splits
from fairrl.eval.likelihood import stop_token_ids
from fairrl.losses.distill import distill_loss
from fairrl.models.common import end_of_turn_id
from fairrl.models.policy import check_completion_length
from fairrl.models.sequences import encode_sequences, packing_supported, sequence_logits
from fairrl.models.sharding import full_params
from fairrl.models.teacher import load_teacher
from fairrl.rewards import TrainerState, check_weighted_sum, evaluate_rewards, get_reward
from fairrl.trainer.grpo_step import step_generator
from fairrl.trainer.loop import RunContext, StreamMethod, run_method, update
from fairrl.trainer.sft_step import ReplyEncoder, batch_counts, sample_replies, sft_update


class KDMethod(StreamMethod):
    """One step: ``kd.batch_size`` prompts -> replies (student, dataset or teacher) -> distillation -> AdamW."""

    name = "kd"

    def check_data(self, cfg: TrainConfig, data: RunData) -> None:
        self.examples = data.train
        kept, targets = with_targets(data.train, cfg.sft.rationale)
        self.targets = {e.prompt_id: t for e, t in zip(kept, targets, strict=True)}

    def prepare(self, run: RunContext) -> None:
        super().prepare(run)
        kd = run.cfg.kd
        check_completion_length(run.policy, kd.max_new_tokens, "kd.max_new_tokens")
        self.teacher = load_teacher(kd, run.cfg.model, run.policy, run.tokenizer, run.device)
        run.console(f"teacher: {self.teacher.name}; {kd.mode}-level distillation"
                    + (f" ({kd.loss}, lmbda {kd.lmbda})" if kd.mode == "token" else ""))  # fmt: skip
        self.encoder = ReplyEncoder(run.tokenizer, end_of_turn_id(run.tokenizer))
        self.stop_ids = stop_token_ids(run.policy, run.tokenizer)
        self.stream = PromptStream(self.examples, run.cfg.seed)
        self.part, self.batch_size = None, kd.batch_size  # data-parallel: this rank's share (set per step)
        self.packing = (
            run.cfg.sft.packing and packing_supported(run.policy) and packing_supported(self.teacher.model)
        )
        # the run's rewards choose among the teacher's replies
        if kd.mode == "sequence" and kd.filter_by_reward:
            specs, labels = run.cfg.rewards.functions, run.cfg.rewards.labels()
            self.reward_fns = {k: get_reward(s.name, s.options) for k, s in zip(labels, specs, strict=True)}
            self.reward_weights = [s.weight for s in specs]
            self.columns = column_names(self.examples)

    # -- replies ----------------------------------------------------------------------------
    def _prompts(self, batch: list[Example]) -> tuple[list[list[int]], list[list[int]]]:
        """(student prompts, teacher prompts) as token ids."""
        student = [self.encoder.prompt(e.prompt_id, e.prompt) for e in batch]
        teacher = [self.encoder.prompt("teacher\0" + e.prompt_id, teacher_messages(e.prompt, self.teacher.system_prompt))
                   for e in batch]  # fmt: skip
        return student, teacher

    def _sample(self, model, prompts: list[list[int]], n: int, generator: torch.Generator,
                whole_share: bool = True) -> list[list[int]]:  # fmt: skip
        """``n`` replies per prompt. Data-parallel, for this rank's whole share of the batch, the whole
        batch's random numbers are drawn and this rank's rows used (the replies one process would sample);
        a subset of the share (``whole_share=False``) draws its own."""
        kd, part = self.run.cfg.kd, self.part
        rows = None if part is None or not whole_share else (part.start * n, self.batch_size * n)
        return sample_replies(model, prompts, n, max_new_tokens=kd.max_new_tokens, temperature=kd.temperature,
                              stop_ids=self.stop_ids, pad_id=self.encoder.pad_id, generator=generator,
                              rows=rows)  # fmt: skip

    def _teacher_samples(
        self, prompts: list[list[int]], n: int, generator: torch.Generator, whole_share: bool = True
    ) -> list[list[int]]:
        with self.teacher.active() as model:
            return self._sample(model, prompts, n, generator, whole_share)

    def _best(
        self, batch: list[Example], replies: list[list[int]], n: int, step: int
    ) -> tuple[list[int], float]:
        """Per prompt, the index of its highest-reward reply among its ``n``, and the mean of those rewards."""
        texts = self.run.tokenizer.batch_decode(replies, skip_special_tokens=True)
        repeated = [e for e in batch for _ in range(n)]
        samples = [trl_sample(e, t) for e, t in zip(repeated, texts, strict=True)]
        columns = rows_to_columns([e.row() for e in repeated], self.columns)
        columns.pop("prompt")
        cfg = self.run.cfg
        per_fn = evaluate_rewards(  # [P*n, K]
            self.reward_fns, [p for p, _ in samples], [c for _, c in samples], columns, on_error=cfg.rewards.on_error,
            completion_ids=replies, trainer_state=TrainerState(global_step=step, max_steps=cfg.max_steps, epoch=self.epoch()),
            timeout=cfg.rewards.timeout,
        )  # fmt: skip
        check_weighted_sum(per_fn, self.reward_weights, list(self.reward_fns))
        # [P, n]: the weighted sum over the functions that apply, NaN where none does
        total = combine_rewards(per_fn.view(len(batch), n, -1), self.reward_weights)
        best = torch.nan_to_num(total, nan=-torch.inf).argmax(-1)  # [P]
        chosen = total.gather(-1, best[:, None]).squeeze(-1)  # [P]
        scored = chosen[~torch.isnan(chosen)]
        return best.tolist(), float(scored.mean()) if scored.numel() else float("nan")

    # -- steps -------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, Any]:
        batch = self.stream.take(self.run.cfg.kd.batch_size)
        ranks = current()
        self.batch_size, self.part = len(batch), (ranks.shard(len(batch), "kd.batch_size") if ranks.active else None)
        if self.part is not None:  # data-parallel: this rank's share of the batch
            batch = batch[self.part]
        student, teacher = self._prompts(batch)
        generator = step_generator(self.run.cfg.seed, step, self.run.device)
        if self.run.cfg.kd.mode == "sequence":
            return self._sequence_step(step, batch, student, teacher, generator)
        return self._token_step(step, batch, student, teacher, generator)

    def _sequence_step(self, step, batch, student, teacher, generator) -> dict[str, Any]:
        kd = self.run.cfg.kd
        n = kd.num_samples if kd.filter_by_reward else 1
        with full_params(self.run.policy):  # FSDP2: sampling on gathered layers (a no-op otherwise)
            replies = self._teacher_samples(teacher, n, generator)
        extra = {}
        if kd.filter_by_reward:
            best, extra["teacher_reward"] = self._best(batch, replies, n, step)
            replies = [replies[i * n + b] for i, b in enumerate(best)]
        return {**sft_update(self.run, student, replies, self.encoder.pad_id, self.packing), **extra}

    def _replies(self, batch, student, teacher, generator, on_policy: bool) -> list[list[int]]:
        """The token step's replies: the student's samples (on-policy), else the targets, with the teacher's
        samples for prompts without one (or for all with ``seq_kd``)."""
        if on_policy:
            return self._sample(self.run.policy, student, 1, generator)
        replies = [None if self.run.cfg.kd.seq_kd or e.prompt_id not in self.targets
                   else self.encoder.reply(self.targets[e.prompt_id]) for e in batch]  # fmt: skip
        missing = [i for i, r in enumerate(replies) if r is None]
        if missing:
            sampled = self._teacher_samples([teacher[i] for i in missing], 1, generator,
                                            whole_share=len(missing) == len(batch))  # fmt: skip
            for i, r in zip(missing, sampled, strict=True):
                replies[i] = r
        return replies

    def _token_step(self, step, batch, student, teacher, generator) -> dict[str, Any]:
        run, kd = self.run, self.run.cfg.kd
        on_policy = random.Random(run.cfg.seed * 1_000_003 + step).random() < kd.lmbda
        length, pad = run.cfg.sft.max_length, self.encoder.pad_id
        # FSDP2: replies and teacher logits on gathered layers, where a rank may sample alone (a no-op otherwise)
        with full_params(run.policy):
            replies = self._replies(batch, student, teacher, generator, on_policy)
            t_batch = encode_sequences(teacher, replies, pad, length, self.packing).to(run.device)
            with torch.no_grad(), self.teacher.active() as model:
                teacher_logits = sequence_logits(model, t_batch)  # [T, V]
        s_batch = encode_sequences(student, replies, pad, length, self.packing).to(run.device)
        run.policy.train()
        loss, stats = distill_loss(sequence_logits(run.policy, s_batch), teacher_logits, kd.loss, kd.beta)
        counts = batch_counts(s_batch)
        metrics = update(run, loss, counts["targets"] / counts["all/targets"])
        run.policy.eval()
        return {**metrics, "num_tokens": counts["all/targets"], "divergence_max": _largest(stats["divergence_max"]),
                "on_policy": float(on_policy), "tokens/trained": counts["all/real"],
                "completions/mean_length": counts["all/targets"] / counts["all/examples"]}  # fmt: skip



def _largest(value: float) -> float:
    """The largest of the ranks' ``value`` (one process: itself)."""
    ranks = current()
    if not ranks.active:
        return value
    return max(ranks.gather_objects(value))


def run_kd(cfg: TrainConfig, **kwargs: Any) -> Path:
    """Train (or resume) a distillation run; keyword arguments as :func:`fairrl.trainer.loop.run_method`."""
    return run_method(cfg, KDMethod(), evaluate_splits, **kwargs)

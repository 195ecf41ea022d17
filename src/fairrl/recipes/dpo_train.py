"""DPO on the run's own data (``fairrl train --set method=dpo``): the mixture GRPO, SFT and KD train on.

Each step takes ``dpo.batch_size`` examples that have a preference pair (:mod:`fairrl.data.dpo_pairs`:
the SFT target as chosen, the mistake it corrects as rejected), in the seeded, resumable order of the
prompt stream, and takes one AdamW step on the DPO loss (Rafailov et al., arXiv 2305.18290, eq. 7;
:func:`fairrl.losses.preference.dpo_loss`)::

    L = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])

Sequence log-probabilities are sums over the reply's tokens, which end with the chat template's
end-of-turn token (the sequence the likelihood evaluation scores). A pair's two replies share its prompt,
so each step is one forward of GRPO's grouped layout with group size 2
(:func:`fairrl.models.logprobs.completion_logprobs`): the prompt is encoded once for both replies, which
on the demo's BBQ pairs (prompts ~130 tokens, replies ~20) is ~40% fewer tokens than two full sequences. The reference is the policy with its adapters disabled (LoRA) or a frozen
copy (full fine-tuning), scored on the same batch without gradient. Logged with TRL's names:
``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``.

Deviation from TRL's DPOTrainer: the prompt is the chat rendering with the generation prompt and the reply
ends at the end-of-turn token (TRL trains the template's trailing newline too), as in ``method: sft``.
``fairrl dpo`` (:mod:`fairrl.recipes.dpo`) is DPO on preference *datasets* with the fairness objectives;
this recipe is the one ``fairrl compare`` puts next to the other strategies.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fairrl.config.grpo import TrainConfig
from fairrl.data.dpo_pairs import ReplyPair, with_pairs
from fairrl.data.run_data import RunData
from fairrl.data.stream import PromptStream
from fairrl.distributed import current
from fairrl.errors import DataError
from fairrl.eval.heldout import evaluate_splits
from fairrl.losses.preference import dpo_loss, dpo_margins
from fairrl.models.common import end_of_turn_id
from fairrl.models.logprobs import completion_logprobs
from fairrl.models.sharding import full_params, is_sharded
from fairrl.rollout.generate import left_pad, right_pad
from fairrl.trainer.loop import RunContext, StreamMethod, run_method, update
from fairrl.trainer.sft_step import ReplyEncoder


@dataclass
class PairBatch:
    """B prompts (left-padded) and their 2B replies, prompt-major: [chosen_1, rejected_1, chosen_2, ...]."""

    prompt_ids: torch.Tensor  # [B, Lp]
    prompt_mask: torch.Tensor  # [B, Lp]
    reply_ids: torch.Tensor  # [2B, Lr] right-padded
    reply_mask: torch.Tensor  # [2B, Lr]

    def to(self, device) -> PairBatch:
        return PairBatch(*(t.to(device) for t in (self.prompt_ids, self.prompt_mask, self.reply_ids, self.reply_mask)))

    @property
    def tokens(self) -> int:
        """Tokens of the 2B trained sequences, prompt counted per sequence (as TRL's ``num_tokens``)."""
        return int(2 * self.prompt_mask.sum() + self.reply_mask.sum())


def encode_pairs(prompts: list[list[int]], chosen: list[list[int]], rejected: list[list[int]], pad_id: int,
                 max_length: int) -> PairBatch:  # fmt: skip
    """Token ids of B (prompt, chosen, rejected): a prompt longer than ``max_length`` minus its longer reply
    loses tokens from the left (one always stays); a reply longer than ``max_length - 1`` is cut."""
    kept, replies = [], []
    for p, c, r in zip(prompts, chosen, rejected, strict=True):
        c, r = c[: max_length - 1], r[: max_length - 1]
        room = max(1, max_length - max(len(c), len(r)))
        kept.append(p[-room:])
        replies += [c, r]
    prompt_ids, prompt_mask = left_pad(kept, pad_id)
    reply_ids, reply_mask = right_pad(replies, pad_id)
    return PairBatch(prompt_ids, prompt_mask, reply_ids, reply_mask)


def pair_logps(model, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed reply log-probabilities (chosen ``[B]``, rejected ``[B]``), the prompt encoded once per pair
    (a sharded model's ranks choose the layout together, :func:`~fairrl.models.logprobs.completion_outputs`)."""
    agree = current().all if is_sharded(model) else None
    logp, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.reply_ids,
                                  batch.reply_mask, 2, agree=agree)  # fmt: skip
    sums = logp.sum(-1)  # [2B], 0 on padding
    return sums[0::2], sums[1::2]


class DPOMethod(StreamMethod):
    """One step: ``dpo.batch_size`` pairs -> policy and reference log-probs -> DPO loss -> AdamW."""

    name = "dpo"

    def check_data(self, cfg: TrainConfig, data: RunData) -> None:
        pairs = with_pairs(data.train, cfg.dpo.rationale)
        if not pairs:
            raise DataError(
                "method dpo: no training prompt has a preference pair; BBQ items and reasoning items with "
                "whole-number answers carry one, rows of your own data need 'chosen' and 'rejected' columns"
            )
        self.pairs = {p.example.prompt_id: p for p in pairs}
        self.examples = [p.example for p in pairs]
        self.skipped = len(data.train) - len(pairs)

    def prepare(self, run: RunContext) -> None:
        super().prepare(run)
        if self.skipped:
            run.console(f"note: {self.skipped:,} training prompts have no preference pair and are left out")
        self.encoder = ReplyEncoder(run.tokenizer, end_of_turn_id(run.tokenizer))
        self.stream = PromptStream(self.examples, run.cfg.seed)
        self.reference = None
        if not hasattr(run.policy, "disable_adapter"):  # full fine-tuning: a frozen copy of the start
            self.reference = copy.deepcopy(run.policy).eval().requires_grad_(False)

    def _encode(self, pairs: list[ReplyPair]) -> PairBatch:
        enc = self.encoder
        prompts = [enc.prompt(p.example.prompt_id, p.example.prompt) for p in pairs]
        chosen, rejected = [enc.reply(p.chosen) for p in pairs], [enc.reply(p.rejected) for p in pairs]
        return encode_pairs(prompts, chosen, rejected, enc.pad_id, self.run.cfg.dpo.max_length).to(self.run.device)

    @torch.no_grad()
    def _reference(self, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reference is not None:
            return pair_logps(self.reference, batch)
        policy = self.run.policy
        policy.eval()
        with policy.disable_adapter() if hasattr(policy, "disable_adapter") else nullcontext(), full_params(policy):
            return pair_logps(policy, batch)

    def step(self, step: int) -> dict[str, Any]:
        cfg = self.run.cfg.dpo
        drawn = self.stream.take(cfg.batch_size)
        ranks = current()
        part = ranks.shard(len(drawn), "dpo.batch_size")  # data-parallel: this rank's pairs (all in one process)
        pairs = [self.pairs[e.prompt_id] for e in drawn[part]]
        share = len(pairs) / len(drawn)
        batch = self._encode(pairs)
        ref_c, ref_r = self._reference(batch)
        self.run.policy.train()
        pol_c, pol_r = pair_logps(self.run.policy, batch)
        loss = dpo_loss(pol_c, pol_r, ref_c, ref_r, cfg.beta, cfg.label_smoothing).mean()
        metrics = update(self.run, loss, share)
        self.run.policy.eval()
        chosen, rejected = (cfg.beta * (pol_c - ref_c)).detach(), (cfg.beta * (pol_r - ref_r)).detach()
        margins = dpo_margins(pol_c, pol_r, ref_c, ref_r, cfg.beta).detach()
        means = {  # means over this rank's pairs, weighted by its share and summed over ranks
            "rewards/chosen": float(chosen.mean()),
            "rewards/rejected": float(rejected.mean()),
            "rewards/margins": float(margins.mean()),
            "rewards/accuracies": float((margins > 0).float().mean()),
            "logps/chosen": float(pol_c.detach().mean()),
            "logps/rejected": float(pol_r.detach().mean()),
        }
        if ranks.active:
            means = ranks.sum_floats({k: v * share for k, v in means.items()})
        counts = ranks.sum_floats({"reply": float(batch.reply_mask.sum()), "rows": float(batch.reply_mask.shape[0]),
                                   "tokens": float(batch.tokens)})  # fmt: skip
        return {**metrics, **means, "completions/mean_length": counts["reply"] / counts["rows"],
                "tokens/trained": counts["tokens"]}  # fmt: skip


def run_dpo_method(cfg: TrainConfig, **kwargs: Any) -> Path:
    """Train (or resume) DPO on the run's data; keyword arguments as :func:`fairrl.trainer.loop.run_method`."""
    return run_method(cfg, DPOMethod(), evaluate_splits, **kwargs)

"""DPO on the run's own data (``fairrl train --set method=dpo``): the mixture GRPO, SFT and KD train on.

Each step takes ``dpo.batch_size`` examples that have a preference pair (:mod:`fairrl.data.dpo_pairs`:
the SFT target as chosen, the mistake it corrects as rejected), in the seeded, resumable order of the
prompt stream, and takes one AdamW step on the DPO loss (Rafailov et al., arXiv 2305.18290, eq. 7;
:func:`fairrl.losses.preference.dpo_loss`)::

    L = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])

Sequence log-probabilities are sums over the reply's tokens, which end with the chat template's
end-of-turn token (the sequence the likelihood evaluation scores); chosen and rejected sequences go
through one packed forward. The reference is the policy with its adapters disabled (LoRA) or a frozen
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
from pathlib import Path
from typing import Any

import torch

from fairrl.config.grpo import TrainConfig
from fairrl.data.dpo_pairs import ReplyPair, with_pairs
from fairrl.data.run_data import RunData
from fairrl.data.stream import PromptStream
from fairrl.errors import DataError
from fairrl.eval.heldout import evaluate_splits
from fairrl.eval.likelihood import end_of_turn_id
from fairrl.losses.preference import dpo_loss, dpo_margins
from fairrl.models.sequences import encode_sequences, packing_supported, sequence_logprobs
from fairrl.trainer.loop import RunContext, StreamMethod, run_method, update
from fairrl.trainer.sft_step import ReplyEncoder


def pair_logps(model, batch, n_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed reply log-probabilities of a batch encoded as [chosen_1..B, rejected_1..B]: ([B], [B])."""
    sums = torch.stack([t.sum() for t in torch.split(sequence_logprobs(model, batch), batch.lengths)])
    return sums[:n_pairs], sums[n_pairs:]


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
        self.packing = run.cfg.dpo.packing and packing_supported(run.policy)
        self.reference = None
        if not hasattr(run.policy, "disable_adapter"):  # full fine-tuning: a frozen copy of the start
            self.reference = copy.deepcopy(run.policy).eval().requires_grad_(False)

    def _encode(self, pairs: list[ReplyPair]):
        prompts = [self.encoder.prompt(p.example.prompt_id, p.example.prompt) for p in pairs]
        replies = [self.encoder.reply(p.chosen) for p in pairs] + [self.encoder.reply(p.rejected) for p in pairs]
        cfg = self.run.cfg.dpo
        return encode_sequences(prompts * 2, replies, self.encoder.pad_id, cfg.max_length, self.packing).to(
            self.run.device
        )

    @torch.no_grad()
    def _reference(self, batch, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reference is not None:
            return pair_logps(self.reference, batch, n)
        policy = self.run.policy
        policy.eval()
        with policy.disable_adapter() if hasattr(policy, "disable_adapter") else nullcontext():
            return pair_logps(policy, batch, n)

    def step(self, step: int) -> dict[str, Any]:
        cfg = self.run.cfg.dpo
        pairs = [self.pairs[e.prompt_id] for e in self.stream.take(cfg.batch_size)]
        batch = self._encode(pairs)
        ref_c, ref_r = self._reference(batch, len(pairs))
        self.run.policy.train()
        pol_c, pol_r = pair_logps(self.run.policy, batch, len(pairs))
        loss = dpo_loss(pol_c, pol_r, ref_c, ref_r, cfg.beta, cfg.label_smoothing).mean()
        metrics = update(self.run, loss)
        self.run.policy.eval()
        chosen, rejected = (cfg.beta * (pol_c - ref_c)).detach(), (cfg.beta * (pol_r - ref_r)).detach()
        margins = dpo_margins(pol_c, pol_r, ref_c, ref_r, cfg.beta).detach()
        return {
            **metrics,
            "rewards/chosen": float(chosen.mean()),
            "rewards/rejected": float(rejected.mean()),
            "rewards/margins": float(margins.mean()),
            "rewards/accuracies": float((margins > 0).float().mean()),
            "logps/chosen": float(pol_c.detach().mean()),
            "logps/rejected": float(pol_r.detach().mean()),
            "completions/mean_length": sum(batch.lengths) / len(batch.lengths),
            "tokens/trained": float(batch.mask.sum()),
        }


def run_dpo_method(cfg: TrainConfig, **kwargs: Any) -> Path:
    """Train (or resume) DPO on the run's data; keyword arguments as :func:`fairrl.trainer.loop.run_method`."""
    return run_method(cfg, DPOMethod(), evaluate_splits, **kwargs)

"""DPO on preference pairs, with the reward-fairness objectives on its implicit margins (FR-DPO, FC-DPO).

The policy is a causal LM (LoRA by default). The reference is the same model with its adapters
disabled (LoRA) or a frozen copy (full fine-tuning). Reference log-probs never change, so each pair's
are computed once and cached (TRL's ``precompute_ref_log_probs``, done lazily).

Evaluation, per group on the eval and held-out splits (``eval_pairs_per_group`` pairs per group):

- ``eval`` / ``heldout``: DPO's implicit reward margins beta [log pi/pi_ref (y_w) - log pi/pi_ref (y_l)]
  after training (they are all 0 before it, when pi = pi_ref);
- ``logp_before`` / ``logp_after`` (held-out groups): the policy's own preference
  log pi(y_w | x) - log pi(y_l | x) before and after training, i.e. how much more likely the model
  finds the less biased response (before = the reference's).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from fairrl.config.preference import DPOTrainConfig
from fairrl.console import Console
from fairrl.data.preferences import PreferencePair, PreferenceSplits
from fairrl.distributed import current
from fairrl.eval.preference import evaluate_learner, preference_metrics
from fairrl.losses.preference import dpo_loss, dpo_margins
from fairrl.models.loading import count_parameters
from fairrl.models.pair_logps import encode_pairs, reference_logps, sequence_logps, split_chosen_rejected
from fairrl.models.policy import build_policy, resolve_device, write_policy
from fairrl.trainer.pairs import finish_run, prepare_run, train_pairs


class DPOLearner:
    """Per-pair DPO losses and implicit margins of a causal LM against its reference."""

    def __init__(self, model, tokenizer, cfg: DPOTrainConfig, reference=None):
        self.model, self.tokenizer, self.cfg, self.reference = model, tokenizer, cfg, reference
        if reference is not None:  # a frozen copy for full fine-tuning: never trained, never in dropout
            reference.eval().requires_grad_(False)
        self.device = next(model.parameters()).device
        self._ref: dict[str, tuple[float, float]] = {}  # pair id -> (log pi_ref(y_w|x), log pi_ref(y_l|x))

    def _encode(self, pairs: Sequence[PreferencePair]):
        return encode_pairs(self.tokenizer, pairs, self.cfg.max_length, self.cfg.max_prompt_length).to(
            self.device
        )

    def reference_logps(self, pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached reference log-probs (chosen ``[B]``, rejected ``[B]``); missing ones are computed now."""
        missing = list({p.id: p for p in pairs if p.id not in self._ref}.values())
        for s in range(0, len(missing), self.cfg.eval_batch_size):
            part = missing[s : s + self.cfg.eval_batch_size]
            chosen, rejected = split_chosen_rejected(
                reference_logps(self.model, self._encode(part), self.reference)
            )
            for p, c, r in zip(part, chosen.tolist(), rejected.tolist(), strict=True):
                self._ref[p.id] = (c, r)
        values = torch.tensor([self._ref[p.id] for p in pairs], device=self.device)  # [B, 2]
        return values[:, 0], values[:, 1]

    def margins(self, pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ref_c, ref_r = self.reference_logps(pairs)  # [B], [B]
        pol_c, pol_r = split_chosen_rejected(sequence_logps(self.model, self._encode(pairs)))  # [B], [B]
        c = self.cfg
        margins = dpo_margins(pol_c, pol_r, ref_c, ref_r, c.beta)  # [B]
        loss = dpo_loss(pol_c, pol_r, ref_c, ref_r, c.beta, c.label_smoothing)  # [B]
        return margins, loss, torch.zeros((), device=self.device)

    @torch.no_grad()
    def policy_preferences(self, pairs: Sequence[PreferencePair]) -> tuple[list[float], list[float]]:
        """(implicit margins, policy log-prob margins log pi(y_w|x) - log pi(y_l|x)) per pair."""
        implicit, raw = [], []
        was_training = self.model.training
        self.model.eval()
        for s in range(0, len(pairs), self.cfg.eval_batch_size):
            part = pairs[s : s + self.cfg.eval_batch_size]
            ref_c, ref_r = self.reference_logps(part)
            pol_c, pol_r = split_chosen_rejected(sequence_logps(self.model, self._encode(part)))
            implicit += dpo_margins(pol_c, pol_r, ref_c, ref_r, self.cfg.beta).tolist()
            raw += (pol_c - pol_r).tolist()
        self.model.train(was_training)
        return implicit, raw

    def eval_margins(self, pairs: Sequence[PreferencePair]) -> list[float]:
        return self.policy_preferences(pairs)[0]

    def reference_preferences(self, pairs: Sequence[PreferencePair]) -> list[float]:
        """log pi_ref(y_w|x) - log pi_ref(y_l|x) per pair: the starting model's own preference."""
        chosen, rejected = self.reference_logps(pairs)
        return (chosen - rejected).tolist()

    def save(self, folder: Path) -> None:
        write_policy(self.model, self.tokenizer, folder, self.cfg.model.name_or_path)


def per_group_sample(pairs: Sequence[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    """At most ``n`` pairs of each group (seeded sample, input order kept); n = 0 gives none."""
    by_group: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_group.setdefault(p.group, []).append(i)
    rng = random.Random(seed)
    keep = sorted(i for idx in by_group.values() for i in (rng.sample(idx, n) if len(idx) > n else idx))
    return [pairs[i] for i in keep]


def build_dpo_learner(cfg: DPOTrainConfig) -> DPOLearner:
    device = resolve_device(cfg.model.device)
    tokenizer, model = build_policy(cfg.model, device)
    reference = copy.deepcopy(model) if cfg.model.lora is None else None
    return DPOLearner(model, tokenizer, cfg, reference)


def run_dpo(cfg: DPOTrainConfig, out: str | None = None, resume: str | None = None, console: Console = print,
            progress: bool = True, learner: DPOLearner | None = None, overwrite: bool = False) -> Path:  # fmt: skip
    """Train (or resume) DPO / FR-DPO / FC-DPO, evaluate per group and write the report; returns the run folder."""
    from fairrl.report.preference import write_preference_report

    run = prepare_run(cfg, "dpo", out, resume, console, overwrite=overwrite)
    n = cfg.eval_pairs_per_group
    run.splits = PreferenceSplits(
        train=run.splits.train,
        eval=per_group_sample(run.splits.eval, n, cfg.seed),
        heldout=per_group_sample(run.splits.heldout, n, cfg.seed),
    )
    learner = learner or build_dpo_learner(cfg)
    trainable, total = count_parameters(learner.model)
    console(f"policy {cfg.model.name_or_path}: {trainable:,} trainable of {total:,} parameters; "
            f"objective {cfg.fairness.kind}, beta {cfg.beta}")  # fmt: skip
    groups = [p.group for p in run.splits.heldout]
    extra = {}
    main = current().main  # under torchrun every rank trains its share of each batch; rank 0 evaluates and writes
    if run.splits.heldout and main:
        before = learner.reference_preferences(run.splits.heldout)
        extra["logp_before"] = preference_metrics(before, groups, n_boot=cfg.n_boot, seed=cfg.seed)
    t0 = time.perf_counter()
    steps = train_pairs(run, learner, console, progress=progress)
    seconds = time.perf_counter() - t0
    if not main:
        return run.run_dir
    console(f"trained {steps} steps in {seconds:.0f}s; evaluating ...")
    if run.splits.heldout:
        after = learner.policy_preferences(run.splits.heldout)[1]
        extra["logp_after"] = preference_metrics(after, groups, n_boot=cfg.n_boot, seed=cfg.seed)
    extra.update(evaluate_learner(learner, run.splits, cfg.n_boot, cfg.seed, progress=progress))
    finish_run(run, learner, steps, seconds, extra)
    report = write_preference_report(run.run_dir)
    console(report.read_text())
    console(f"run folder: {run.run_dir}  (report: {report})")
    return run.run_dir

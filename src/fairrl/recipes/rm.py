"""Reward-model training: Bradley-Terry, with fairness regularisation (FR) or coefficient (FC).

``fairrl rm train CONFIG`` trains one model (:func:`run_rm`); ``fairrl rm compare CONFIG`` trains one
per fairness objective and seed and compares them on held-out groups (:func:`run_rm_compare`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from fairrl.config.preference import RMTrainConfig
from fairrl.console import Console
from fairrl.data.preferences import PreferencePair
from fairrl.distributed import current
from fairrl.eval.preference import evaluate_learner
from fairrl.losses.preference import bradley_terry_loss
from fairrl.models.loading import LoraSettings, apply_lora
from fairrl.models.policy import resolve_device
from fairrl.models.reward_model import (
    RewardModel,
    build_reward_model,
    encode_pair_texts,
    rewards_by_length,
    save_reward_model,
    score_texts,
)
from fairrl.trainer.pairs import finish_run, prepare_run, train_pairs


class RMLearner:
    """Bradley-Terry margins a_i = r(x, y_w) - r(x, y_l) of a :class:`RewardModel`, chosen and rejected
    in one forward; optional TRL centring loss c * mean((r_w + r_l)^2) (Eisenstein et al., arXiv
    2312.09244, sec. 3: it pins the reward's free additive constant)."""

    def __init__(self, model: RewardModel, tokenizer, cfg: RMTrainConfig):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.device = next(model.parameters()).device

    def _rewards(self, pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [p.prompt for p in pairs] * 2
        responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        enc = encode_pair_texts(self.tokenizer, prompts, responses, self.cfg.max_length, self.model.decoder)
        r = rewards_by_length(self.model, {k: v.to(self.device) for k, v in enc.items()}).float()  # [2B]
        return r[: len(pairs)], r[len(pairs) :]

    def margins(self, pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chosen, rejected = self._rewards(pairs)  # [B], [B]
        margins = chosen - rejected  # [B]
        aux = torch.zeros((), device=margins.device)
        if self.cfg.center_rewards_coefficient:
            aux = self.cfg.center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
        return margins, bradley_terry_loss(margins), aux

    def eval_margins(self, pairs: Sequence[PreferencePair]) -> list[float]:
        prompts = [p.prompt for p in pairs] * 2
        responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        r = score_texts(
            self.model, self.tokenizer, prompts, responses, self.cfg.max_length, self.cfg.eval_batch_size
        )
        n = len(pairs)
        return [r[i] - r[n + i] for i in range(n)]

    def save(self, folder: Path) -> None:
        meta = {"max_length": self.cfg.max_length, "backbone": self.cfg.model.name_or_path,
                "fairness": self.cfg.fairness.model_dump()}  # fmt: skip
        save_reward_model(self.model, self.tokenizer, folder, meta)


def build_rm_learner(cfg: RMTrainConfig) -> RMLearner:
    m = cfg.model
    device = resolve_device(m.device)
    model, tok = build_reward_model(m.name_or_path, m.pooling, dtype=m.dtype,
                                    trust_remote_code=m.trust_remote_code, revision=m.revision)  # fmt: skip
    if m.lora is not None:  # apply_lora: target_modules matching nothing is a ConfigError naming the modules
        lora = LoraSettings(m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.target_modules)
        model.backbone = apply_lora(model.backbone, lora, task_type=None)
    return RMLearner(model.to(device), tok, cfg)


def run_rm(cfg: RMTrainConfig, out: str | None = None, resume: str | None = None, console: Console = print,
           progress: bool = True, learner: RMLearner | None = None, overwrite: bool = False) -> Path:  # fmt: skip
    """Train (or resume) a reward model, evaluate it per group and write its report; returns the run folder.
    Under ``torchrun`` every rank trains on its share of each batch (:func:`~fairrl.trainer.pairs.train_step`)
    and rank 0 alone writes the folder and evaluates."""
    from fairrl.report.preference import write_preference_report

    run = prepare_run(cfg, "rm", out, resume, console, overwrite=overwrite)
    learner = learner or build_rm_learner(cfg)
    n_train = sum(p.numel() for p in learner.model.parameters() if p.requires_grad)
    console(f"reward model {cfg.model.name_or_path} ({learner.model.pooling} pooling): {n_train:,} trainable parameters; "
            f"objective {cfg.fairness.kind}")  # fmt: skip
    t0 = time.perf_counter()
    steps = train_pairs(run, learner, console, progress=progress)
    seconds = time.perf_counter() - t0
    if not current().main:  # under torchrun rank 0 evaluates and writes the results
        return run.run_dir
    console(f"trained {steps} steps in {seconds:.0f}s; evaluating ...")
    evaluation = evaluate_learner(learner, run.splits, cfg.n_boot, cfg.seed, progress=progress)
    finish_run(run, learner, steps, seconds, evaluation)
    report = write_preference_report(run.run_dir)
    console(report.read_text())
    console(f"run folder: {run.run_dir}  (report: {report})")
    return run.run_dir


def compare_kinds(kinds: str) -> list[str]:
    from fairrl.errors import ConfigError
    from fairrl.losses.fairness import FAIRNESS_OBJECTIVES

    valid = tuple(FAIRNESS_OBJECTIVES)
    out = [k.strip() for k in kinds.split(",") if k.strip()]
    bad = [k for k in out if k not in valid]
    if bad or not out:
        raise ConfigError(f"--kinds {kinds!r}: use a comma-separated subset of {', '.join(valid)}")
    return out


def run_rm_compare(cfg: RMTrainConfig, kinds: list[str], seeds: list[int], out: str, console: Console = print,
                   progress: bool = True) -> Path:  # fmt: skip
    """Train one reward model per (objective, seed) under ``out/<kind>-seed<k>/`` (finished runs are kept,
    interrupted ones resumed), then write the comparison report ``out/report.md``."""
    from fairrl.report.preference import write_comparison_report

    root = Path(out)
    for seed in seeds:
        for kind in kinds:
            run_dir = root / f"{kind}-seed{seed}"
            if (run_dir / "results.json").exists():
                console(f"{run_dir}: finished earlier, kept")
                continue
            sub = cfg.model_copy(deep=True)
            sub.fairness.kind = kind  # type: ignore[assignment]
            sub.seed = seed
            resume = str(run_dir) if (run_dir / "config.yaml").exists() else None  # interrupted: continue
            console(f"== {kind}, seed {seed} ==")
            run_rm(sub, out=str(run_dir), resume=resume, console=lambda s: None, progress=progress)
    report = write_comparison_report(root, kinds, seeds)
    console(report.read_text())
    console(f"comparison: {report}")
    return root

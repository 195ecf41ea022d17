"""One loop for pairwise preference learning (reward models and DPO): data -> batches -> fair loss -> update.

A :class:`PairLearner` turns a batch of :class:`~fairrl.data.preferences.PreferencePair` into margins
a_i and per-pair losses l_i; this loop reduces them with the configured fairness objective
(:func:`fairrl.losses.fairness.fair_preference_loss`), steps AdamW, logs, checkpoints, and finally
evaluates per group on the in-distribution and held-out splits.

Run folder (``runs/<run_name>/`` or ``--out``)::

    config.yaml       resolved config          data.json     pair counts per split and group (and source)
    metrics.jsonl     one row per logged step  tensorboard/  the same as events (report_to)
    checkpoints/      atomic step-NNNNNN/ + latest (``--resume`` continues from here)
    final/            the trained model (safetensors)
    results.json      per-group metrics on the eval and held-out splits
    report.md, *.png  markdown report and plots
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from fairrl.config.preference import PreferenceDataConfig, _PreferenceRun
from fairrl.console import Console, progress_bar
from fairrl.data.preferences import (
    PreferencePair,
    PreferenceSplits,
    build_preference_pairs,
    group_counts,
    group_source_counts,
    split_pairs,
)
from fairrl.distributed import Ranks, current
from fairrl.fsutil import atomic_directory, write_json_atomic
from fairrl.losses.fairness import FairnessSettings, fair_preference_loss
from fairrl.losses.group_fairness import PairGroups, dro_update
from fairrl.trainer.checkpoint import resume_checkpoint, save_checkpoint
from fairrl.trainer.guard import NonFiniteError, check_value, check_weights, step_guard
from fairrl.trainer.logging import MetricsLogger, NullLogger
from fairrl.trainer.optim import clip_gradients, make_optimizer
from fairrl.trainer.pair_batches import batch_at, epoch_order  # noqa: F401  (epoch_order: re-exported)
from fairrl.trainer.run import RunFolder, abandon_run, begin_run, plan_run
from fairrl.trainer.trackers import require_trackers


class PairLearner(Protocol):
    """What the loop needs from a reward model or a DPO policy."""

    model: torch.nn.Module

    def margins(self, pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(margins a ``[B]``, per-pair losses l ``[B]``, auxiliary loss ``[]``) with gradient."""
        ...

    def eval_margins(self, pairs: Sequence[PreferencePair]) -> list[float]:
        """Margins without gradient, for evaluation."""
        ...

    def save(self, folder: Path) -> None:
        """Write the trained model into ``folder``."""
        ...


def load_pairs(data: PreferenceDataConfig, seed: int) -> PreferenceSplits:
    """Build the configured pairs and split them by group and template."""
    pairs = build_preference_pairs(
        data.sources, groups=data.groups, max_pairs_per_group=data.max_pairs_per_group, seed=seed,
        prompt_column=data.prompt_column, chosen_column=data.chosen_column,
        rejected_column=data.rejected_column, group_column=data.group_column, hub_split=data.hub_split,
    )  # fmt: skip
    return split_pairs(pairs, data.heldout_groups, data.eval_fraction, seed)


def total_steps(cfg: _PreferenceRun, n_train: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.num_train_epochs * math.ceil(n_train / cfg.per_device_train_batch_size)))


class GroupState:
    """The training groups of a run (sorted names) and the group-DRO weights q carried across steps."""

    def __init__(self, train: Sequence[PreferencePair], settings: FairnessSettings):
        self.names = sorted({p.group for p in train})
        self.number = {name: k for k, name in enumerate(self.names)}
        self.settings = settings
        self.dro_weights = torch.full((len(self.names),), 1.0 / max(1, len(self.names)), dtype=torch.float64)

    def for_batch(self, pairs: Sequence[PreferencePair]) -> PairGroups:
        return PairGroups(torch.tensor([self.number[p.group] for p in pairs], dtype=torch.long), len(self.names))

    def advanced(self, groups: PairGroups, per_pair: torch.Tensor) -> PairGroups:
        """For group_dro: the batch with this step's q = q exp(eta L_g) normalised (module
        :mod:`fairrl.losses.group_fairness`); :meth:`commit` keeps it once the loss is finite."""
        if self.settings.kind != "group_dro":
            return groups
        q = dro_update(self.dro_weights, per_pair, groups, self.settings.dro_step_size)
        return PairGroups(groups.index, groups.n_groups, q)

    def commit(self, groups: PairGroups) -> None:
        if groups.dro_weights is not None:
            self.dro_weights = groups.dro_weights

    def state_dict(self) -> dict[str, Any]:
        return {"groups": self.names, "group_dro_weights": self.dro_weights.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("groups") == self.names and "group_dro_weights" in state:
            self.dro_weights = torch.tensor(state["group_dro_weights"], dtype=torch.float64)

    def metrics(self) -> dict[str, float]:
        if self.settings.kind != "group_dro":
            return {}
        return {f"group_dro/{name}": float(q) for name, q in zip(self.names, self.dro_weights.tolist(), strict=True)}


def train_step(learner: PairLearner, pairs: Sequence[PreferencePair], settings: FairnessSettings,
               optimizer, scheduler, max_grad_norm: float | None,
               groups: GroupState | None = None, ranks: Ranks | None = None) -> dict[str, float]:  # fmt: skip
    """One update on a batch; returns the loss and its parts (TRL-style names). Non-finite margins, loss,
    gradients or weights raise :class:`~fairrl.trainer.guard.NonFiniteError` (nothing is stepped on a
    non-finite loss or gradient). ``groups`` gives the pairs' groups to the loss (group objectives and
    the per-group stats) and advances the group-DRO weights.

    On several ranks (``ranks``, :mod:`fairrl.distributed`) each computes the margins of its contiguous
    share of the batch; the margins and per-pair losses are gathered, so every rank computes the same
    batch objective (f_tau, group terms and group-DRO weights are batch quantities) and back-propagates it
    into its own share only (:meth:`~fairrl.distributed.Ranks.gather_with_grad`); the auxiliary loss (a
    mean over pairs) is weighted by the rank's share of the batch; gradients are summed over ranks. The
    step therefore equals one process's on the same batch."""
    ranks = ranks or Ranks()
    mine = slice(None) if not ranks.active else ranks.split(len(pairs))
    own = pairs[mine]
    if own:
        margins, per_pair, aux = learner.margins(own)
    else:  # a batch shorter than the ranks (an epoch's last): this rank only takes part in the collectives
        margins = per_pair = torch.zeros(0, device=next(learner.model.parameters()).device)
        aux = torch.zeros(())
    share = len(own) / len(pairs)
    margins, per_pair = ranks.gather_with_grad(margins), ranks.gather_with_grad(per_pair)
    batch_groups = groups.for_batch(pairs) if groups is not None else None
    try:
        if batch_groups is not None:
            batch_groups = groups.advanced(batch_groups, per_pair)
        loss, stats = fair_preference_loss(per_pair, margins, settings, batch_groups)
    except ValueError as err:  # non-finite margins or losses (check_pairs)
        raise NonFiniteError(f"preference loss input ({err})") from None
    if batch_groups is not None:
        groups.commit(batch_groups)
    aux_total = ranks.sum_floats({"aux": share * float(aux.detach())})["aux"] if ranks.active else float(aux.detach())
    check_value("loss", loss.detach() + aux_total)
    optimizer.zero_grad(set_to_none=True)
    total = loss + (share * aux if ranks.active else aux)
    if total.requires_grad:
        total.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    ranks.sum_gradients(params)  # the batch's gradient on every rank
    grad_norm = clip_gradients(params, max_grad_norm)
    check_value("gradient norm", grad_norm)
    optimizer.step()
    check_weights(params)
    scheduler.step()
    return {
        "loss": loss.item() + aux_total, "aux_loss": aux_total, "grad_norm": grad_norm,
        "learning_rate": scheduler.get_last_lr()[0], **stats,
    }  # fmt: skip


@dataclass
class PreferenceRun:
    """A configured run: its folder, config and the data it trains and evaluates on."""

    cfg: _PreferenceRun
    folder: RunFolder
    splits: PreferenceSplits
    kind: str  # "rm" | "dpo"
    counts: dict[str, Any]
    """Pairs per split and group (``train`` / ``eval`` / ``heldout``), and per group and source (``sources``)."""

    @property
    def run_dir(self) -> Path:
        return self.folder.path


def prepare_run(cfg: _PreferenceRun, kind: str, out: str | None, resume: str | None, console: Console,
                overwrite: bool = False) -> PreferenceRun:  # fmt: skip
    """Check the run folder (:func:`~fairrl.trainer.run.plan_run`: a new run needs an empty folder unless
    ``overwrite``), build and describe the data. Nothing is written yet: :func:`train_pairs` writes the
    folder once the learner is built, so bad data or a model that does not load leaves nothing behind."""
    folder = plan_run(cfg, out, resume, overwrite, console)
    require_trackers(cfg.report_to)  # a missing wandb / mlflow fails before the data loads
    splits = load_pairs(cfg.data, cfg.seed)
    counts: dict[str, Any] = {name: group_counts(getattr(splits, name)) for name in ("train", "eval", "heldout")}
    console("pairs: " + ", ".join(f"{k} {sum(v.values())} ({len(v)} groups)" for k, v in counts.items()))
    counts["sources"] = {name: group_source_counts(getattr(splits, name)) for name in ("train", "eval", "heldout")}
    return PreferenceRun(cfg, folder, splits, kind, counts)


def train_pairs(run: PreferenceRun, learner: PairLearner, console: Console, progress: bool = True) -> int:
    """Write the run folder, then train ``learner`` on the run's pairs with checkpoints and resume (falling
    back past damaged checkpoints); returns the steps done. Inf / NaN stops the run before anything
    non-finite is saved (:mod:`fairrl.trainer.guard`)."""
    cfg, run_dir = run.cfg, run.run_dir
    f = cfg.fairness
    settings = FairnessSettings(kind=f.kind, alpha=f.alpha, gamma=f.gamma, tau=f.tau, dro_step_size=f.dro_step_size)
    groups = GroupState(run.splits.train, settings)
    steps = total_steps(cfg, len(run.splits.train))
    ranks = current()
    ranks.barrier()  # every rank has checked the folder before rank 0 writes into it
    if ranks.main:
        begin_run(run.folder, cfg, console)
    try:
        if ranks.main:
            write_json_atomic(run_dir / "data.json", run.counts)
        optimizer, scheduler = make_optimizer(cfg, learner.model, steps)
        state = (
            resume_checkpoint(run_dir, learner.model, optimizer, scheduler, console)
            if run.folder.resume
            else None
        )
    except BaseException:
        if ranks.main:
            abandon_run(run.folder)
        raise
    start = state["step"] if state else 0
    if state:
        groups.load_state_dict(state)
    logger = (MetricsLogger.for_run(cfg, run_dir, resume_step=start if state else None, console=console)
              if ranks.main else NullLogger())  # fmt: skip
    deadline = time.perf_counter() + 60 * cfg.max_minutes if cfg.max_minutes else None
    learner.model.train()
    step, window, t_window = start, 0, time.perf_counter()
    bar = progress_bar(steps, start, run.kind, enabled=progress and ranks.main)
    try:
        while step < steps:
            batch = batch_at(run.splits.train, step, cfg.per_device_train_batch_size, cfg.seed, cfg.data.balance)
            with step_guard(step + 1, run_dir, cfg.learning_rate):
                metrics = train_step(learner, batch, settings, optimizer, scheduler, cfg.max_grad_norm, groups, ranks)
                metrics.update(groups.metrics())
            step += 1
            window += len(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.2f}")
            if step % cfg.logging_steps == 0 or step == steps:
                metrics["pairs_per_second"] = window / max(time.perf_counter() - t_window, 1e-9)
                metrics["epoch"] = step * cfg.per_device_train_batch_size / len(run.splits.train)
                logger.log(step, metrics)
                window, t_window = 0, time.perf_counter()
            out_of_time = ranks.any(deadline is not None and time.perf_counter() > deadline)
            if ranks.main and (step % cfg.save_steps == 0 or step == steps or out_of_time):
                save_checkpoint(
                    run_dir, step, learner.model, optimizer, scheduler, groups.state_dict(), keep=cfg.keep_checkpoints
                )
            if out_of_time:
                console(f"\nstopping at step {step}: max_minutes={cfg.max_minutes} reached")
                break
    finally:
        bar.close()
        logger.close()
    learner.model.eval()
    return step


def finish_run(run: PreferenceRun, learner: PairLearner, steps: int, seconds: float,
               evaluation: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Save the final model and write ``results.json`` with ``evaluation`` (per-group metrics, computed by
    the recipe with :func:`fairrl.eval.preference.evaluate_learner`); returns the results."""
    with atomic_directory(run.run_dir / "final") as tmp:
        learner.save(tmp)
    results = {
        "schema_version": 1,
        "kind": run.kind,
        "fairness": run.cfg.fairness.model_dump(),
        "seed": run.cfg.seed,
        "steps": steps,
        "train_seconds": seconds,
        "n_train": len(run.splits.train),
        "data": run.counts,
        **evaluation,
    }
    write_json_atomic(run.run_dir / "results.json", results)
    return results

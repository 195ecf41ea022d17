"""The run skeleton every method of ``fairrl train`` other than GRPO uses (sft, kd, and ppo when it lands).

A recipe supplies a small :class:`TrainingMethod` and the evaluation function; this module does the rest,
in the order of the GRPO run (:mod:`fairrl.recipes.grpo`), so every method writes the same run folder
(``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``eval_before.json``, ``eval_after.json``,
``summary.json``, ``final/``; the CLI adds ``report.md``)::

    plan_run (folder checked, nothing written) -> data -> method.check_data -> rewards and trackers checked
    -> policy -> method.prepare -> begin_run (config.yaml) -> evaluate before -> AdamW + schedule over
    method.optimizer_steps -> resume (weights, optimiser, RNGs, method.restore) -> for each step:
    method.step -> metrics logged, progress bar, checkpoint with method.state, max_minutes deadline,
    inf / NaN guard -> final/ -> evaluate after -> summary.json

What fails before ``begin_run`` (bad data, a bad teacher in ``prepare``) leaves no folder behind; what
fails after it, before the first step, removes a folder this run created (:func:`~fairrl.trainer.run.abandon_run`).

A method (subclass :class:`TrainingMethod`, override what it needs):

- ``check_data(cfg, data)``: checks of the data alone, before the model loads (seconds, not minutes);
- ``prepare(run)``: build what the steps need once the policy is loaded (encoders, a teacher); ``run``
  is the :class:`RunContext` (config, folder, device, tokenizer, policy, data, console; the optimiser
  and scheduler are set on it before the first step);
- ``step(i) -> metrics``: training step ``i`` (0-based): forward, loss and the optimiser step, usually
  through :func:`update` (clipping and the inf / NaN checks); returns the step's metrics;
- ``state()`` / ``restore(state)``: what a checkpoint must hold for a resumed run to continue exactly
  (the data position; RNG states are saved by the checkpoint itself);
- ``optimizer_steps(cfg)``: the schedule's length (default ``max_steps``); ``epoch()``: passes over the
  training data so far (logged, and given to reward functions in evaluation).

The evaluation function is passed in (the eval stage sits above this one):
:func:`fairrl.eval.heldout.evaluate_splits` or one with its signature.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fairrl.config.grpo import TrainConfig
from fairrl.console import Console, progress_bar
from fairrl.data.run_data import RunData, build_run_data
from fairrl.distributed import current
from fairrl.fsutil import write_json_atomic
from fairrl.models.loading import count_parameters
from fairrl.models.policy import build_policy, resolve_device
from fairrl.models.sharding import is_sharded, shard_for_training, unsharded_copy
from fairrl.rewards import TrainerState
from fairrl.rewards.check import check_rewards
from fairrl.trainer.checkpoint import gather_sharded, resume_checkpoint, save_checkpoint
from fairrl.trainer.guard import check_value, check_weights, step_guard
from fairrl.trainer.logging import MetricsLogger, NullLogger
from fairrl.trainer.optim import clip_gradients, make_optimizer
from fairrl.trainer.run import RunFolder, abandon_run, begin_run, plan_run, save_final
from fairrl.trainer.start_cache import evaluate_start
from fairrl.trainer.trackers import require_trackers

Evaluator = Callable[..., dict[str, Any]]
"""fn(model, tokenizer, data, cfg, console, trainer_state=None, progress=True) -> {split: results}."""


@dataclass
class RunContext:
    """What a method's steps work with (set up by :func:`run_method`)."""

    cfg: TrainConfig
    folder: RunFolder
    device: torch.device
    tokenizer: Any
    policy: torch.nn.Module
    data: RunData
    console: Console
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None

    @property
    def run_dir(self) -> Path:
        return self.folder.path


class TrainingMethod:
    """A training method run by :func:`run_method` (module docstring); override what the method needs."""

    name = "train"
    """Progress-bar label."""
    run: RunContext

    def check_data(self, cfg: TrainConfig, data: RunData) -> None:
        """Data-only checks, before the model loads."""

    def prepare(self, run: RunContext) -> None:
        """Build what the steps need; the base keeps ``run`` as :attr:`run`."""
        self.run = run

    def optimizer_steps(self, cfg: TrainConfig) -> int:
        return cfg.max_steps

    def parameters(self) -> Any:
        """What AdamW optimises: None = the policy's trainable parameters; else tensors or parameter groups
        (:func:`~fairrl.trainer.optim.make_optimizer`). Checkpoints hold the policy's trainable weights only."""
        return None

    def step(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state saved with each checkpoint (keys other than ``step`` and ``rng``)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``state.json`` (what :meth:`state` returned, plus step and rng)."""

    def epoch(self) -> float:
        return 0.0


class StreamMethod(TrainingMethod):
    """A method that walks a :class:`~fairrl.data.stream.PromptStream` (``self.stream``) over
    ``self.examples``: its checkpoint state is the stream position, its epoch the share walked."""

    stream: Any
    examples: list[Any]

    def state(self) -> dict[str, Any]:
        return {"position": self.stream.position}

    def restore(self, state: dict[str, Any]) -> None:
        self.stream.position = int(state["position"])

    def epoch(self) -> float:
        return self.stream.position / len(self.examples)


def update(run: RunContext, loss: torch.Tensor, share: float = 1.0) -> dict[str, float]:
    """One optimiser step on ``loss``: backward, clip to ``max_grad_norm``, AdamW, schedule. A non-finite loss
    or gradient norm stops before the step, non-finite weights after it (:mod:`fairrl.trainer.guard`).

    Data-parallel (:mod:`fairrl.distributed`): ``loss`` is this rank's mean over its share of the batch and
    ``share`` its weight in the batch's mean (its tokens or rows over all ranks'; 1 in one process); the
    weighted losses and their gradients are summed over the ranks, so every rank steps on the global ones."""
    ranks = current()
    scaled = loss if share == 1.0 else loss * share
    total = ranks.sum_floats({"loss": float(scaled.detach())})["loss"] if ranks.active else scaled.detach()
    check_value("loss", total)
    run.optimizer.zero_grad(set_to_none=True)
    scaled.backward()
    return step_accumulated(run, float(total))


def step_accumulated(run: RunContext, loss: float) -> dict[str, float]:
    """The optimiser step on gradients already accumulated (backward passes over a step's micro-batches):
    ``loss`` is the step's total loss (checked finite before the step), gradients summed over the ranks,
    clipped, AdamW, schedule; returns the metrics of :func:`update`."""
    ranks = current()
    check_value("loss", loss)
    params = [p for group in run.optimizer.param_groups for p in group["params"]]
    ranks.sum_gradients(params)
    grad_norm = clip_gradients(params, run.cfg.max_grad_norm)
    check_value("gradient norm", grad_norm)
    run.optimizer.step()
    check_weights(params)
    run.scheduler.step()
    return {
        "loss": float(loss),
        "grad_norm": grad_norm,
        "learning_rate": run.scheduler.get_last_lr()[0],
    }


def _startup(cfg: TrainConfig, method: TrainingMethod, folder: RunFolder, console: Console,
             components: tuple[Any, Any] | None, data: RunData | None) -> RunContext:  # fmt: skip
    """Data, checks, policy and ``method.prepare``: everything that may fail before the folder is written."""
    device = resolve_device(cfg.model.device)
    data = data if data is not None else build_run_data(cfg.data, cfg.eval, cfg.seed)
    method.check_data(cfg, data)
    check_rewards(cfg.rewards.functions)  # evaluation of user prompts scores with them
    require_trackers(cfg.report_to)
    console(
        f"data: {len(data.train):,} training prompts; held out: "
        + ", ".join(f"{k} {len(v)}" for k, v in data.evals.items())
    )
    t0 = time.perf_counter()
    tokenizer, policy = components if components is not None else build_policy(cfg.model, device)
    trainable, total = count_parameters(policy)
    console(
        f"model {cfg.model.name_or_path} on {device}: {trainable:,} trainable of {total:,} parameters "
        f"({time.perf_counter() - t0:.0f}s to load); method {cfg.method}"
    )
    run = RunContext(cfg, folder, device, tokenizer, policy, data, console)
    method.prepare(run)
    return run


def run_method(
    cfg: TrainConfig,
    method: TrainingMethod,
    evaluator: Evaluator,
    out: str | None = None,
    resume: str | None = None,
    console: Console = print,
    evaluate: bool = True,
    progress: bool = True,
    components: tuple[Any, Any] | None = None,
    data: RunData | None = None,
    overwrite: bool = False,
) -> Path:
    """Train (or resume) ``method`` in a run folder (module docstring); returns the folder.

    ``components`` (tokenizer, model) and ``data`` replace what the config would load (tests and
    programmatic use); ``evaluate=False`` skips the held-out evaluation."""
    ranks = current()  # data-parallel: every rank trains its share of each batch, rank 0 writes
    folder = plan_run(cfg, out, resume, overwrite, console)
    ranks.barrier()  # every rank has checked the folder before rank 0 writes into it
    run = _startup(cfg, method, folder, console, components, data)
    run_dir, policy, tokenizer, data = folder.path, run.policy, run.tokenizer, run.data
    if ranks.main:
        begin_run(folder, cfg, console)
    before_path = run_dir / "eval_before.json"
    try:  # a startup failure from here on removes a folder this run created
        if evaluate and data.evals:  # every rank evaluates its share (rank 0's view of the folder decides whether)
            evaluate_start(evaluator, policy, tokenizer, data, cfg, console, before_path, ranks, progress)
        shard_for_training(cfg.model.fsdp, ranks, console, policy)  # FSDP2, after the evaluation
        run.optimizer, run.scheduler = make_optimizer(
            cfg, policy, method.optimizer_steps(cfg), method.parameters()
        )
        state = (
            resume_checkpoint(run_dir, policy, run.optimizer, run.scheduler, console)
            if folder.resume
            else None
        )
        if state:
            method.restore(state)
    except BaseException:
        if ranks.main:
            abandon_run(folder)
        raise
    step = state["step"] if state else 0
    logger = (MetricsLogger.for_run(cfg, run_dir, resume_step=step if state else None, console=console)
              if ranks.main else NullLogger())  # fmt: skip
    deadline = time.perf_counter() + 60 * cfg.max_minutes if cfg.max_minutes else None
    bar = progress_bar(cfg.max_steps, step, method.name, enabled=progress and ranks.main)
    try:
        while step < cfg.max_steps:
            t_step = time.perf_counter()
            # inf / NaN: stop, name the step, save nothing (fairrl.trainer.guard)
            with step_guard(step + 1, run_dir, cfg.learning_rate):
                metrics = method.step(step)
            step += 1
            metrics["epoch"] = method.epoch()
            metrics["step_time"] = time.perf_counter() - t_step
            out_of_time = ranks.any(deadline is not None and time.perf_counter() > deadline)
            if step % cfg.logging_steps == 0 or step == cfg.max_steps or out_of_time:
                logger.log(step, metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.3f}")
            if step % cfg.save_steps == 0 or step == cfg.max_steps or out_of_time:
                gathered = gather_sharded(policy, run.optimizer)  # FSDP2: whole tensors, gathered by every rank
                if ranks.main:
                    save_checkpoint(run_dir, step, policy, run.optimizer, run.scheduler, method.state(),
                                    keep=cfg.keep_checkpoints, gathered=gathered)  # fmt: skip
            if out_of_time:
                console(f"\nstopping at step {step}: max_minutes={cfg.max_minutes} reached")
                break
    finally:
        bar.close()
        logger.close()
    if is_sharded(policy):  # the final save and evaluation work on a whole copy
        policy = unsharded_copy(policy, cfg.model.lora)
    policy.eval()
    if ranks.main:
        save_final(policy, tokenizer, run_dir, cfg.model.name_or_path)
    if evaluate and data.evals:
        console("evaluating the trained model ...")
        state_now = TrainerState(global_step=step, max_steps=cfg.max_steps, epoch=method.epoch())
        after = evaluator(policy, tokenizer, data, cfg, console, trainer_state=state_now,
                          progress=progress and ranks.main)  # fmt: skip
        if not ranks.main:
            return run_dir
        write_json_atomic(run_dir / "eval_after.json", after)
        before = json.loads(before_path.read_text()) if before_path.exists() else {}
        write_json_atomic(run_dir / "summary.json", {"method": cfg.method, "steps": step, "before": before,
                                                     "after": after})  # fmt: skip
    return run_dir

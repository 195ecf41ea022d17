"""A GRPO-family run (``fairrl train``): config -> model -> evaluation before -> GRPO steps with checkpoints -> evaluation after -> report.

Run folder layout (``runs/<run_name>/`` or ``--out``)::

    config.yaml         resolved config (also printed at start)
    metrics.jsonl       one row per step (TRL metric names + per-group rewards)
    completions.jsonl   sampled completions with their rewards (log_completions)
    tensorboard/        the same as TensorBoard events (report_to; wandb/, mlruns/ and trackers.json likewise)
    checkpoints/        step-NNNNNN/ folders + ``latest`` pointer (atomic); ``--resume`` continues from here
    eval_before.json    held-out evaluation of the starting model (every split of :mod:`fairrl.eval.heldout`)
    warm_start/         with warm_start.steps > 0: the SFT run before the GRPO steps (:mod:`fairrl.trainer.warm_start`)
    eval_after.json     the same after training
    summary.json        before/after headline figures with 95% intervals
    final/              trained weights (LoRA adapter or full model, safetensors; the full model after a warm start)
    report.md, *.png    markdown report and plots
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fairrl.config.grpo import TrainConfig
from fairrl.console import Console, progress_bar
from fairrl.data.run_data import RunData, build_run_data
from fairrl.data.samplers import make_sampler
from fairrl.distributed import Ranks, current
from fairrl.eval.heldout import evaluate_splits
from fairrl.fsutil import write_json_atomic
from fairrl.models.loading import count_parameters, resolve_model_path
from fairrl.models.policy import build_policy, check_completion_length, resolve_device
from fairrl.models.sharding import full_params, is_sharded, shard_for_training, unsharded_copy
from fairrl.rewards.check import check_rewards
from fairrl.rollout.vllm_backend import create_vllm_rollout
from fairrl.rollout.vllm_server import create_server_rollout
from fairrl.trainer.checkpoint import gather_sharded, resume_checkpoint, save_checkpoint
from fairrl.trainer.completions import completion_rows, format_completions
from fairrl.trainer.grpo_step import GRPOStep, batch_metrics, make_reference, step_generator
from fairrl.trainer.guard import step_guard
from fairrl.trainer.logging import MetricsLogger, NullLogger
from fairrl.trainer.optim import make_optimizer
from fairrl.trainer.run import abandon_run, begin_run, continue_config, plan_run, save_final
from fairrl.trainer.start_cache import evaluate_start
from fairrl.trainer.trackers import require_trackers
from fairrl.trainer.warm_start import final_model, run_warm_start, start_from_warm


def run_training(
    cfg: TrainConfig,
    out: str | None = None,
    resume: str | None = None,
    console: Console = print,
    evaluate: bool = True,
    progress: bool = True,
    components: tuple[Any, Any] | None = None,
    data: RunData | None = None,
    overwrite: bool = False,
) -> Path:
    """Train (or resume) a GRPO-family run and write its folder; returns the run folder.

    ``components`` (tokenizer, model) and ``data`` replace what the config would load (tests and
    programmatic use). A new run needs a new or empty folder unless ``overwrite``
    (:func:`~fairrl.trainer.run.plan_run`); the folder is written only once data and model have loaded.

    Under ``torchrun`` (:mod:`fairrl.distributed`) every rank trains its shard of each step's
    prompts and its share of the evaluation items; rank 0 alone writes the folder, logs, checkpoints and
    results.
    """
    ranks = current()
    folder = plan_run(cfg, out, resume, overwrite, console)
    run_dir = folder.path
    check_parallel(cfg, ranks)
    ranks.barrier()  # every rank has checked the folder before rank 0 writes into it
    device = resolve_device(cfg.model.device)

    # data first: a mistyped path fails in a second, not after the model has loaded
    data = data if data is not None else build_run_data(cfg.data, cfg.eval, cfg.seed)
    check_rewards(cfg.rewards.functions)  # a bad reward name fails here too, before the model loads
    require_trackers(cfg.report_to)  # so does a report_to tracker whose package is missing
    console(f"data: {len(data.train):,} training prompts; held out: "
            + ", ".join(f"{k} {len(v)}" for k, v in data.evals.items()))
    t0 = time.perf_counter()
    tokenizer, policy = components if components is not None else build_policy(cfg.model, device)
    check_completion_length(policy, cfg.algorithm.max_completion_length)
    trainable, total = count_parameters(policy)
    console(f"model {cfg.model.name_or_path} on {device}: {trainable:,} trainable of {total:,} parameters "
            f"({time.perf_counter() - t0:.0f}s to load)")

    if ranks.main:
        begin_run(folder, cfg, console)
    before_path = run_dir / "eval_before.json"
    try:  # a startup failure from here on removes a folder this run created (abandon_run)
        if evaluate and data.evals:  # every rank evaluates its share (rank 0's view of the folder decides whether)
            evaluate_start(evaluate_splits, policy, tokenizer, data, cfg, console, before_path, ranks, progress)
    except BaseException:
        if ranks.main:
            abandon_run(folder)
        raise
    ranks.barrier()
    warm = None
    if cfg.warm_start.steps:  # minutes of training: an interruption keeps it for --resume
        warm = run_warm_start(cfg, run_dir, tokenizer, policy, data, console, progress=progress)
        policy = start_from_warm(cfg, policy)
    try:
        ref_model = make_reference(cfg, policy)
        shard_for_training(cfg.model.fsdp, ranks, console, policy, ref_model)  # FSDP2: 1/N of every layer per rank
        step_fn = GRPOStep(cfg, policy, tokenizer, device, ref_model=ref_model, ranks=ranks)
        if cfg.algorithm.use_vllm and cfg.algorithm.vllm_mode == "server":  # a vLLM server samples
            step_fn.engine = create_server_rollout(cfg, step_fn.pad_id, step_fn.eos_ids)
        elif cfg.algorithm.use_vllm:  # vLLM samples; it gets the weights after every update (and now, on resume)
            step_fn.engine = create_vllm_rollout(cfg, resolve_model_path(cfg.model.name_or_path), run_dir,
                                                 step_fn.pad_id, step_fn.eos_ids, ranks.world)  # fmt: skip
        optimizer, scheduler = make_optimizer(cfg, policy, cfg.optimizer_steps)
        state = resume_checkpoint(run_dir, policy, optimizer, scheduler, console) if folder.resume else None
    except BaseException:
        if warm is None and ranks.main:
            abandon_run(folder)
        raise
    if step_fn.engine is not None and (warm is not None or state):
        with full_params(policy):  # FSDP2: whole tensors for the engine (a no-op otherwise)
            if warm is not None:
                step_fn.engine.sync_base(policy)  # the warm-started weights (and the resumed adapter), not the hub's
            else:
                step_fn.engine.sync(policy)  # the resumed weights, not the checkpoint's base model
    start = state["step"] if state else 0
    stream = make_sampler(cfg.algorithm, data.train, cfg.seed, state.get("sampler", state) if state else None)
    logger = (MetricsLogger.for_run(cfg, run_dir, resume_step=start if state else None, console=console)
              if ranks.main else NullLogger())  # fmt: skip
    names = cfg.rewards.labels()
    deadline = time.perf_counter() + 60 * cfg.max_minutes if cfg.max_minutes else None
    step = start
    bar = progress_bar(cfg.max_steps, start, "grpo", enabled=progress and ranks.main)
    try:
        while step < cfg.max_steps:
            t_step = time.perf_counter()
            with full_params(policy if step_fn.engine is None else None):  # FSDP2: gathered for sampling
                batch, ds_info = step_fn.collect(stream, step_generator(cfg.seed, step, device), step=step)
            t_gen = time.perf_counter() - t_step
            metrics = batch_metrics(batch, names)
            metrics.update(ds_info)
            # inf / NaN: stop, name the step, save nothing (fairrl.trainer.guard)
            with step_guard(step + 1, run_dir, cfg.learning_rate):
                metrics.update(step_fn.update(batch, optimizer, scheduler))
            step += 1
            metrics["step_time"] = time.perf_counter() - t_step
            metrics["time/generate"] = t_gen
            out_of_time = ranks.any(deadline is not None and time.perf_counter() > deadline)
            if step % cfg.logging_steps == 0 or step == cfg.max_steps or out_of_time:
                logger.log(step, metrics)
            if cfg.log_completions and step % cfg.log_completions_steps == 0:
                rows = completion_rows(batch, names)
                logger.log_completions(step, rows)
                if cfg.num_completions_to_print != 0:
                    console(format_completions(step, rows, cfg.num_completions_to_print, batch.rollout.group_size))
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", zero_std=f"{metrics['frac_reward_zero_std']:.2f}")
            if step % cfg.save_steps == 0 or step == cfg.max_steps or out_of_time:
                gathered = gather_sharded(policy, optimizer)  # FSDP2: whole tensors, gathered by every rank
                if ranks.main:
                    save_checkpoint(run_dir, step, policy, optimizer, scheduler, {"position": stream.position, "sampler": stream.state()},
                                    keep=cfg.keep_checkpoints, gathered=gathered)
            if out_of_time:
                console(f"\nstopping at step {step}: max_minutes={cfg.max_minutes} reached")
                break
    finally:
        bar.close()
        logger.close()
    if is_sharded(policy):  # the final save and evaluation work on a whole copy (fairrl.models.sharding)
        policy = unsharded_copy(policy, cfg.model.lora)
    policy = final_model(cfg, policy)
    if ranks.main:
        save_final(policy, tokenizer, run_dir, cfg.model.name_or_path)
    if evaluate and data.evals:
        console("evaluating the trained model ...")
        after = evaluate_splits(policy, tokenizer, data, cfg, console, progress=progress and ranks.main,
                                trainer_state=step_fn.progress(step, stream))  # fmt: skip
        if not ranks.main:  # rank 0 writes the results
            return run_dir
        write_json_atomic(run_dir / "eval_after.json", after)
        before = json.loads(before_path.read_text()) if before_path.exists() else {}
        summary = {"steps": step, "before": before, "after": after}
        if warm is not None:
            summary["warm_start"] = warm
        write_json_atomic(run_dir / "summary.json", summary)
    return run_dir


def check_parallel(cfg: TrainConfig, ranks: Ranks) -> None:
    """What data-parallel GRPO does not do yet, refused before anything loads."""
    if not ranks.active:
        return
    ranks.shard(cfg.algorithm.prompts_per_step)  # the prompts of a step must split evenly


def resume_config(run_dir: str, overrides: list[str], config: str | None = None) -> TrainConfig:
    """The saved config of a run folder, with overrides (e.g. a larger max_steps); a ``config`` must equal
    it (:func:`~fairrl.trainer.run.continue_config`)."""
    return continue_config(run_dir, config, overrides, TrainConfig)

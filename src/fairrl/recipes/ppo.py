"""A PPO run with a learned critic (``method: ppo``): config -> model + critic -> evaluation before ->
PPO steps with checkpoints -> evaluation after.

The run folder is laid out as a GRPO run's (:mod:`fairrl.recipes.grpo`); its checkpoints also hold the
critic (value head, and the separate critic's weights: ``value_head.*`` / ``critic.*`` in
``trainable.safetensors``), so ``--resume`` continues policy and critic together. ``final/`` holds the
policy only, as for every method (the critic is a training aid; the last checkpoint keeps it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fairrl.config.grpo import TrainConfig
from fairrl.console import Console, progress_bar
from fairrl.data.run_data import RunData, build_run_data
from fairrl.data.stream import PromptStream
from fairrl.distributed import current
from fairrl.eval.heldout import evaluate_splits
from fairrl.fsutil import write_json_atomic
from fairrl.models.loading import count_parameters
from fairrl.models.policy import build_policy, check_completion_length, resolve_device
from fairrl.models.sharding import full_params, is_sharded, shard_for_training, unsharded_copy
from fairrl.models.value_head import ActorCritic
from fairrl.rewards.check import check_rewards
from fairrl.trainer.checkpoint import gather_sharded, resume_checkpoint, save_checkpoint
from fairrl.trainer.completions import completion_rows, format_completions
from fairrl.trainer.grpo_step import batch_metrics, step_generator
from fairrl.trainer.guard import step_guard
from fairrl.trainer.logging import MetricsLogger, NullLogger
from fairrl.trainer.ppo_step import PPOStep, check_ppo, make_ppo_optimizer, make_ppo_reference
from fairrl.trainer.run import abandon_run, begin_run, plan_run, save_final
from fairrl.trainer.start_cache import evaluate_start
from fairrl.trainer.trackers import require_trackers


def run_ppo(
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
    """Train (or resume) a PPO run and write its folder; returns the run folder (arguments as
    :func:`fairrl.recipes.grpo.run_training`). Under ``torchrun`` every rank rolls out and trains its share
    of each step's prompts (:class:`~fairrl.trainer.ppo_step.PPOStep`); rank 0 alone writes the folder."""
    notes = check_ppo(cfg)  # settings PPO cannot honour fail before anything loads
    ranks = current()
    folder = plan_run(cfg, out, resume, overwrite, console)
    run_dir = folder.path
    ranks.shard(cfg.algorithm.prompts_per_step)  # the prompts of a step must split evenly
    ranks.barrier()  # every rank has checked the folder before rank 0 writes into it
    device = resolve_device(cfg.model.device)
    for note in notes:
        console(note)

    data = data if data is not None else build_run_data(cfg.data, cfg.eval, cfg.seed)
    check_rewards(cfg.rewards.functions)
    require_trackers(cfg.report_to)
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

        ac = ActorCritic(policy, cfg.ppo.critic)  # the separate critic copies the model before any update
        n_critic = sum(p.numel() for p in ac.critic_parameters())
        console(f"critic ({cfg.ppo.critic}): {n_critic:,} trainable parameters of its own")
        ref_model = make_ppo_reference(cfg, policy)
        shard_for_training(cfg.model.fsdp, ranks, console, policy, ac.critic, ref_model)  # FSDP2, after copying
        step_fn = PPOStep(cfg, ac, tokenizer, device, ref_model=ref_model, ranks=ranks)
        optimizer, scheduler = make_ppo_optimizer(cfg, ac)
        state = resume_checkpoint(run_dir, ac, optimizer, scheduler, console) if folder.resume else None
    except BaseException:
        if ranks.main:
            abandon_run(folder)
        raise
    ranks.barrier()
    start, position = (state["step"], state["position"]) if state else (0, 0)
    stream = PromptStream(data.train, cfg.seed, position)
    logger = (MetricsLogger.for_run(cfg, run_dir, resume_step=start if state else None, console=console)
              if ranks.main else NullLogger())  # fmt: skip
    names = cfg.rewards.labels()
    deadline = time.perf_counter() + 60 * cfg.max_minutes if cfg.max_minutes else None
    step = start
    bar = progress_bar(cfg.max_steps, start, "ppo", enabled=progress and ranks.main)
    try:
        while step < cfg.max_steps:
            t_step = time.perf_counter()
            with full_params(policy):  # FSDP2: gathered once for the step's sampling (a no-op otherwise)
                batch, ds_info = step_fn.collect(stream, step_generator(cfg.seed, step, device), step=step)
            t_gen = time.perf_counter() - t_step
            metrics = batch_metrics(batch, names)
            metrics.pop("frac_reward_zero_std")  # no group baseline: equal rewards still teach the critic
            if batch.rollout.group_size == 1:
                metrics.pop("reward_std_group_mean")
            metrics.update(ds_info)
            with step_guard(step + 1, run_dir, cfg.learning_rate):
                metrics.update(step_fn.update(batch, optimizer, scheduler, step))
            step += 1
            metrics["step_time"] = time.perf_counter() - t_step
            metrics["time/generate"] = t_gen
            out_of_time = ranks.any(deadline is not None and time.perf_counter() > deadline)
            if step % cfg.logging_steps == 0 or step == cfg.max_steps or out_of_time:
                logger.log(step, metrics)
            if ranks.main and cfg.log_completions and step % cfg.log_completions_steps == 0:
                rows = completion_rows(batch, names)
                logger.log_completions(step, rows)
                if cfg.num_completions_to_print != 0:
                    G = batch.rollout.group_size
                    console(format_completions(step, rows, cfg.num_completions_to_print, G))
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", value_loss=f"{metrics['value_loss']:.3f}")
            if step % cfg.save_steps == 0 or step == cfg.max_steps or out_of_time:
                gathered = gather_sharded(ac, optimizer)  # FSDP2: whole tensors, gathered by every rank
                if ranks.main:
                    save_checkpoint(run_dir, step, ac, optimizer, scheduler, {"position": stream.position},
                                    keep=cfg.keep_checkpoints, gathered=gathered)  # fmt: skip
            if out_of_time:
                console(f"\nstopping at step {step}: max_minutes={cfg.max_minutes} reached")
                break
    finally:
        bar.close()
        logger.close()
    if is_sharded(policy):  # the final save and evaluation work on a whole copy
        policy = unsharded_copy(policy, cfg.model.lora)
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
        write_json_atomic(run_dir / "summary.json", {"steps": step, "before": before, "after": after})
    return run_dir

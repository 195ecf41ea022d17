"""A GRPO-family run (``fairrl train``): config -> model -> evaluation before -> GRPO steps with checkpoints -> evaluation after -> report.

Run folder layout (``runs/<run_name>/`` or ``--out``)::

    config.yaml         resolved config (also printed at start)
    metrics.jsonl       one row per step (TRL metric names + per-group rewards)
    tensorboard/        the same as TensorBoard events
    checkpoints/        step-NNNNNN/ folders + ``latest`` pointer (atomic); ``--resume`` continues from here
    eval_before.json    held-out evaluation of the starting model (every split of :mod:`fairrl.eval.heldout`)
    eval_after.json     the same after training
    summary.json        before/after headline figures with 95% intervals
    final/              trained weights (LoRA adapter or full model, safetensors)
    report.md, *.png    markdown report and plots
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fairrl.config.base import run_config
from fairrl.config.grpo import TrainConfig
from fairrl.console import Console, progress_bar
from fairrl.data.run_data import RunData, build_run_data
from fairrl.data.stream import PromptStream
from fairrl.errors import ConfigError
from fairrl.eval.heldout import evaluate_splits
from fairrl.fsutil import write_json_atomic
from fairrl.models.loading import count_parameters
from fairrl.models.policy import build_policy, resolve_device
from fairrl.trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from fairrl.trainer.grpo_step import GRPOStep, batch_metrics, make_reference, step_generator
from fairrl.trainer.logging import MetricsLogger
from fairrl.trainer.optim import make_optimizer
from fairrl.trainer.run import output_dir, save_final, start_run


def run_training(
    cfg: TrainConfig,
    out: str | None = None,
    resume: str | None = None,
    console: Console = print,
    evaluate: bool = True,
    progress: bool = True,
    components: tuple[Any, Any] | None = None,
    data: RunData | None = None,
) -> Path:
    """Train (or resume) a GRPO-family run and write its folder; returns the run folder.

    ``components`` (tokenizer, model) and ``data`` replace what the config would load (tests and
    programmatic use).
    """
    run_dir = Path(resume) if resume else output_dir(cfg, out)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        raise ConfigError(f"--resume {resume}: no checkpoint found under {run_dir / 'checkpoints'}")
    start_run(cfg, run_dir, console)
    device = resolve_device(cfg.model.device)

    # data first: a mistyped path fails in a second, not after the model has loaded
    data = data if data is not None else build_run_data(cfg.data, cfg.eval, cfg.seed)
    console(f"data: {len(data.train):,} training prompts; held out: "
            + ", ".join(f"{k} {len(v)}" for k, v in data.evals.items()))
    t0 = time.perf_counter()
    tokenizer, policy = components if components is not None else build_policy(cfg.model, device)
    trainable, total = count_parameters(policy)
    console(f"model {cfg.model.name_or_path} on {device}: {trainable:,} trainable of {total:,} parameters "
            f"({time.perf_counter() - t0:.0f}s to load)")

    before_path = run_dir / "eval_before.json"
    if evaluate and data.evals and not before_path.exists():
        console("evaluating the starting model ...")
        write_json_atomic(before_path, evaluate_splits(policy, tokenizer, data, cfg, console))

    step_fn = GRPOStep(cfg, policy, tokenizer, device, ref_model=make_reference(cfg, policy))
    optimizer, scheduler = make_optimizer(cfg, policy, cfg.optimizer_steps)
    start, position = 0, 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, policy, optimizer, scheduler)
        start, position = state["step"], state["position"]
        console(f"resumed from {ckpt} (step {start})")
    stream = PromptStream(data.train, cfg.seed, position)
    logger = MetricsLogger(run_dir, tensorboard=cfg.tensorboard, resume_step=start if ckpt else None)
    names = cfg.rewards.labels()
    deadline = time.perf_counter() + 60 * cfg.max_minutes if cfg.max_minutes else None
    step = start
    bar = progress_bar(cfg.max_steps, start, "grpo", enabled=progress)
    try:
        while step < cfg.max_steps:
            t_step = time.perf_counter()
            batch, ds_info = step_fn.collect(stream, step_generator(cfg.seed, step, device))
            t_gen = time.perf_counter() - t_step
            metrics = batch_metrics(batch, names)
            metrics.update(ds_info)
            metrics.update(step_fn.update(batch, optimizer, scheduler))
            step += 1
            metrics["step_time"] = time.perf_counter() - t_step
            metrics["time/generate"] = t_gen
            out_of_time = deadline is not None and time.perf_counter() > deadline
            if step % cfg.logging_steps == 0 or step == cfg.max_steps or out_of_time:
                logger.log(step, metrics)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", zero_std=f"{metrics['frac_reward_zero_std']:.2f}")
            if step % cfg.save_steps == 0 or step == cfg.max_steps or out_of_time:
                save_checkpoint(run_dir, step, policy, optimizer, scheduler, {"position": stream.position},
                                keep=cfg.keep_checkpoints)
            if out_of_time:
                console(f"\nstopping at step {step}: max_minutes={cfg.max_minutes} reached")
                break
    finally:
        bar.close()
        logger.close()
    save_final(policy, tokenizer, run_dir, cfg.model.name_or_path)
    if evaluate and data.evals:
        console("evaluating the trained model ...")
        after = evaluate_splits(policy, tokenizer, data, cfg, console)
        write_json_atomic(run_dir / "eval_after.json", after)
        before = json.loads(before_path.read_text()) if before_path.exists() else {}
        write_json_atomic(run_dir / "summary.json", {"steps": step, "before": before, "after": after})
    return run_dir


def resume_config(run_dir: str, overrides: list[str]) -> TrainConfig:
    """The saved config of a run folder, with overrides (e.g. a larger max_steps)."""
    return run_config(run_dir, overrides, TrainConfig)

"""A whole run: config -> model -> evaluation before -> GRPO steps with checkpoints -> evaluation after -> report.

Run folder layout (``runs/<run_name>/`` or ``--out``)::

    config.yaml         resolved config (also printed at start)
    metrics.jsonl       one row per step (TRL metric names + per-group rewards)
    tensorboard/        the same as TensorBoard events
    checkpoints/        step-NNNNNN/ folders + ``latest`` pointer (atomic); ``--resume`` continues from here
    eval_before.json    held-out evaluation of the starting model
    eval_after.json     the same after training
    summary.json        before/after headline figures with 95% intervals
    final/              trained weights (LoRA adapter or full model, safetensors)
    report.md, *.png    markdown report and plots
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from fairrl.config import TrainConfig, dump_config, load_config
from fairrl.errors import ConfigError
from fairrl.fsutil import atomic_directory, write_json_atomic, write_text_atomic
from fairrl.models.loading import (
    LoraSettings,
    _quiet_transformers,
    apply_lora,
    count_parameters,
    enable_gradient_checkpointing,
    load_model,
    load_tokenizer,
)
from fairrl.recipes.datasets import RunData, build_run_data
from fairrl.recipes.grpo import (
    GRPOStep,
    PromptStream,
    batch_metrics,
    make_reference,
    output_dir,
    step_generator,
)
from fairrl.trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from fairrl.trainer.logging import MetricsLogger
from fairrl.trainer.optim import adamw

Console = Callable[[str], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device is {name!r} but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def build_policy(cfg: TrainConfig, device: torch.device):
    """Tokenizer and trainable policy (LoRA-wrapped unless ``model.lora`` is null)."""
    m = cfg.model
    tokenizer = load_tokenizer(m.name_or_path, trust_remote_code=m.trust_remote_code, revision=m.revision)
    model = load_model(
        m.name_or_path, dtype=m.dtype, device=device, trust_remote_code=m.trust_remote_code, revision=m.revision
    )
    if m.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if m.lora is not None:
        lora = m.lora
        model = apply_lora(model, LoraSettings(lora.r, lora.alpha, lora.dropout, lora.target_modules))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return tokenizer, model


def make_optimizer(cfg: TrainConfig, model):
    alg = cfg.algorithm
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=alg.learning_rate, weight_decay=alg.weight_decay)
    warm = alg.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
    )
    return optimizer, scheduler


def evaluate_splits(model, tokenizer, data: RunData, cfg: TrainConfig, console: Console) -> dict[str, Any]:
    """Run every held-out evaluation set of the run; returns {split: results}."""
    from fairrl.eval.bbq import evaluate_bbq
    from fairrl.eval.reasoning import evaluate_reasoning

    e = cfg.eval
    results: dict[str, Any] = {}
    for split, examples in data.evals.items():
        t0 = time.perf_counter()
        if split.startswith("bbq"):
            results[split] = evaluate_bbq(
                model, tokenizer, examples, mode=e.mode, permutations=e.permutations, batch_size=e.batch_size
            )
            if e.generation_check and e.mode != "generation":
                results[split + "_generation"] = evaluate_bbq(
                    model, tokenizer, examples, mode="generation", batch_size=e.batch_size
                )
        else:
            results[split] = evaluate_reasoning(
                model, tokenizer, examples, max_new_tokens=max(32, cfg.algorithm.max_completion_length),
                batch_size=e.batch_size,
            )
        console(f"  evaluated {split}: {len(examples)} items in {time.perf_counter() - t0:.0f}s")
    return results


def write_policy(model, tokenizer, folder: Path, base_name: str) -> None:
    """Weights as safetensors into ``folder`` (adapter + its config naming the base model, or the full model)."""
    _quiet_transformers()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    adapter_cfg = folder / "adapter_config.json"
    if adapter_cfg.exists():  # name the base as the user did (a built-in name stays portable)
        data = json.loads(adapter_cfg.read_text())
        data["base_model_name_or_path"] = base_name
        adapter_cfg.write_text(json.dumps(data, indent=2))


def save_final(cfg: TrainConfig, model, tokenizer, run_dir: Path) -> Path:
    """Trained weights under ``run_dir/final`` (written atomically)."""
    final = run_dir / "final"
    with atomic_directory(final) as tmp:
        write_policy(model, tokenizer, tmp, cfg.model.name_or_path)
    return final


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


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
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(resume) if resume else output_dir(cfg, out)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        raise ConfigError(f"--resume {resume}: no checkpoint found under {run_dir / 'checkpoints'}")
    console("resolved config:\n" + dump_config(cfg))
    write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    _seed_everything(cfg.seed)
    device = resolve_device(cfg.model.device)

    t0 = time.perf_counter()
    tokenizer, policy = components if components is not None else build_policy(cfg, device)
    trainable, total = count_parameters(policy)
    console(f"model {cfg.model.name_or_path} on {device}: {trainable:,} trainable of {total:,} parameters "
            f"({time.perf_counter() - t0:.0f}s to load)")
    data = data if data is not None else build_run_data(cfg)
    console(f"data: {len(data.train):,} training prompts; held out: "
            + ", ".join(f"{k} {len(v)}" for k, v in data.evals.items()))

    before_path = run_dir / "eval_before.json"
    if evaluate and data.evals and not before_path.exists():
        console("evaluating the starting model ...")
        write_json_atomic(before_path, evaluate_splits(policy, tokenizer, data, cfg, console))

    step_fn = GRPOStep(cfg, policy, tokenizer, device, ref_model=make_reference(cfg, policy))
    optimizer, scheduler = make_optimizer(cfg, policy)
    start, position = 0, 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, policy, optimizer, scheduler)
        start, position = state["step"], state["position"]
        console(f"resumed from {ckpt} (step {start})")
    stream = PromptStream(data.train, cfg.seed, position)
    logger = MetricsLogger(run_dir, tensorboard=cfg.tensorboard, resume_step=start if ckpt else None)
    names = [s.name for s in cfg.rewards.functions]
    deadline = time.perf_counter() + 60 * cfg.max_minutes if cfg.max_minutes else None
    step = start
    bar = tqdm(total=cfg.max_steps, initial=start, desc="grpo", disable=not progress, dynamic_ncols=True)
    try:
        while step < cfg.max_steps:
            t_step = time.perf_counter()
            batch, ds_info = step_fn.collect(stream, step_generator(cfg.seed, step, device))
            t_gen = time.perf_counter() - t_step
            metrics = batch_metrics(batch, names, cfg.data.group_column)
            metrics.update(ds_info)
            metrics.update(step_fn.update(batch, optimizer, scheduler))
            step += 1
            metrics["step_time"] = time.perf_counter() - t_step
            metrics["time/generate"] = t_gen
            logger.log(step, metrics)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", zero_std=f"{metrics['frac_reward_zero_std']:.2f}")
            out_of_time = deadline is not None and time.perf_counter() > deadline
            if step % cfg.save_steps == 0 or step == cfg.max_steps or out_of_time:
                save_checkpoint(run_dir, step, policy, optimizer, scheduler, {"position": stream.position},
                                keep=cfg.keep_checkpoints)
            if out_of_time:
                console(f"\nstopping at step {step}: train.max_minutes={cfg.max_minutes} reached")
                break
    finally:
        bar.close()
        logger.close()
    save_final(cfg, policy, tokenizer, run_dir)
    if evaluate and data.evals:
        console("evaluating the trained model ...")
        after = evaluate_splits(policy, tokenizer, data, cfg, console)
        write_json_atomic(run_dir / "eval_after.json", after)
        before = json.loads(before_path.read_text()) if before_path.exists() else {}
        write_json_atomic(run_dir / "summary.json", {"steps": step, "before": before, "after": after})
    return run_dir


def resume_config(run_dir: str, overrides: list[str]) -> TrainConfig:
    """The saved config of a run folder, with overrides (e.g. a larger train.max_steps)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a fairrl run folder?")
    return load_config(path, overrides)

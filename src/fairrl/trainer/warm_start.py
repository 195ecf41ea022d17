"""Warm start: supervised steps before a grpo run (``warm_start.steps``), the "SFT, then RL" recipe.

R1's cold start (DeepSeek-AI 2025, sec. 2.3.1) fine-tunes on a few thousand worked examples before RL;
the demo does the same on the data's own targets (:mod:`fairrl.data.sft_targets`: BBQ's gold option with
a rationale line from the item's context, the reasoning answers). Measured on SmolLM2-135M: GRPO alone
leaves the model blind to whether the context answers the question (README, "Why BBQ accuracy does not
rise"); SFT on the targets makes it read the context, and GRPO then has answers worth reinforcing.

The phase is a whole SFT run of its own in ``<run>/warm_start/`` (:class:`~fairrl.trainer.sft_step.SFTMethod`
under :func:`~fairrl.trainer.loop.run_method`, without evaluation): its config, metrics, checkpoints and
``final/`` adapter, so an interrupted warm start resumes like any run, and a resumed grpo run replays it
from its last checkpoint (no step is repeated) before the grpo checkpoint is loaded.

After it, a LoRA policy is merged into its base weights and given a fresh adapter
(:func:`start_from_warm`): the grpo phase trains a new adapter and its KL term (adapter disabled) is
measured against the warm-started model, as TRL's GRPO is given the SFT model as its reference. A
fully fine-tuned policy simply continues (its frozen reference is copied after the warm start). Because
the base weights changed, the run's ``final/`` holds the full merged model, not an adapter
(:func:`final_model`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fairrl.config.base import run_config
from fairrl.config.grpo import TrainConfig
from fairrl.console import Console
from fairrl.errors import ConfigError
from fairrl.models.loading import LoraSettings, apply_lora
from fairrl.trainer.loop import run_method
from fairrl.trainer.sft_step import SFTMethod

FOLDER = "warm_start"


def warm_start_config(cfg: TrainConfig) -> TrainConfig:
    """The SFT run of ``cfg``'s warm start: its data, model, seed and run keys, ``warm_start.steps`` steps."""
    ws = cfg.warm_start
    return cfg.model_copy(update={
        "method": "sft", "run_name": FOLDER, "max_steps": ws.steps, "max_minutes": None,
        "learning_rate": ws.learning_rate or cfg.learning_rate,
        "save_steps": min(cfg.save_steps, ws.steps), "warm_start": type(ws)(),
        # unsharded (data-parallel) even under model.fsdp: the GRPO phase merges its adapter into the
        # weights and shards the result
        "model": cfg.model.model_copy(update={"fsdp": None}),
    })  # fmt: skip


def _skip_config(message: str) -> bool:
    """The warm start's own copies of lines the grpo run has printed already."""
    return message.startswith(("resolved config:", "data: "))


def run_warm_start(cfg: TrainConfig, run_dir: Path, tokenizer, policy, data, console: Console,
                   progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train ``policy`` in place for ``cfg.warm_start.steps`` SFT steps in ``run_dir/warm_start`` (new, or
    resumed from its checkpoints); returns ``{"steps", "loss_first", "loss_last"}`` for the summary."""
    sub = warm_start_config(cfg)
    folder = run_dir / FOLDER
    resume = (folder / "config.yaml").is_file()
    if resume:
        saved = run_config(folder, [], TrainConfig)
        if saved.max_steps != sub.max_steps or saved.learning_rate != sub.learning_rate:
            raise ConfigError(
                f"--resume {run_dir}: warm_start differs from the run's ({saved.max_steps} steps at learning rate "
                f"{saved.learning_rate}); the grpo checkpoints were trained after that warm start. Keep the run's "
                "warm_start, or start a new run with --out"
            )
    console(f"warm start: {sub.max_steps} SFT steps of {cfg.sft.batch_size} examples before GRPO "
            f"({folder}) ...")  # fmt: skip
    quiet = lambda message: None if _skip_config(message) else console(message)  # noqa: E731
    run_method(sub, SFTMethod(), _no_evaluation, out=None if resume else str(folder),
               resume=str(folder) if resume else None, console=quiet, evaluate=False, progress=progress,
               components=(tokenizer, policy), data=data)  # fmt: skip
    return _losses(folder / "metrics.jsonl", sub.max_steps)


def _no_evaluation(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {}


def _losses(metrics: Path, steps: int) -> dict[str, Any]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in rows if "loss" in r]
    return {"steps": steps, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None}  # fmt: skip


def start_from_warm(cfg: TrainConfig, policy):
    """The policy the grpo phase trains: a LoRA policy merged into its base and given a fresh adapter (its
    disabled-adapter model, the KL reference, is then the warm-started model); a full model as it is."""
    if cfg.model.lora is None or not hasattr(policy, "merge_and_unload"):
        return policy
    lora = cfg.model.lora
    merged = policy.merge_and_unload()
    return apply_lora(merged, LoraSettings(lora.r, lora.alpha, lora.dropout, lora.target_modules))


def final_model(cfg: TrainConfig, policy):
    """What ``final/`` holds after a warm start: the full model (the adapter alone would name a base model
    whose weights the warm start changed); ``policy`` itself without a warm start."""
    if not cfg.warm_start.steps or not hasattr(policy, "merge_and_unload"):
        return policy
    return policy.merge_and_unload()

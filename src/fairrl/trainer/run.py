"""The run folder every training method shares: where it is, the saved config, seeding, final weights."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from fairrl.config.base import dump_config
from fairrl.config.common import RunConfig
from fairrl.console import Console
from fairrl.fsutil import atomic_directory, write_text_atomic
from fairrl.models.policy import write_policy


def output_dir(cfg: RunConfig, out: str | None) -> Path:
    """``--out`` when given, else ``<output_dir>/<run_name>``."""
    return Path(out) if out else Path(cfg.output_dir) / cfg.run_name  # type: ignore[attr-defined]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def start_run(cfg: RunConfig, run_dir: Path, console: Console) -> None:
    """Create the folder, print and save the resolved config, set threads and seeds."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    console("resolved config:\n" + dump_config(cfg))
    write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    seed_everything(cfg.seed)


def save_final(model, tokenizer, run_dir: Path, base_name: str) -> Path:
    """Trained policy weights under ``run_dir/final`` (safetensors, written atomically)."""
    final = run_dir / "final"
    with atomic_directory(final) as tmp:
        write_policy(model, tokenizer, tmp, base_name)
    return final

"""Stop a training run at the first inf or NaN, before it reaches the weights or a checkpoint.

Both loops (GRPO, :mod:`fairrl.trainer.grpo_step`; pairwise RM / DPO, :mod:`fairrl.trainer.pairs`)
check, on every optimiser step:

1. the loss and the gradient norm *before* ``optimizer.step()`` - a NaN there would otherwise be written
   into every weight (AdamW propagates it), and clipping cannot rescue an infinite norm;
2. the trainable weights *after* it - a finite gradient times a huge learning rate can still overflow.

A failed check raises :class:`NonFiniteError`; the loop wraps the step in :func:`step_guard`, which
adds the step number, the likely causes and the last checkpoint that stays on disk. Nothing is saved
after the failure, so ``--resume`` (with e.g. ``--set learning_rate=...``) continues from good weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from fairrl.distributed import current
from fairrl.errors import FairRLError
from fairrl.models.sharding import is_dtensor, local

CAUSES = (
    "a learning_rate too high for this model (lower it, keep max_grad_norm set), "
    "a reward function that overflows or returns huge values, or float16 overflow (use bfloat16 or float32)"
)


class NonFiniteError(FairRLError):
    """Training produced inf or NaN; without a step number until :func:`step_guard` adds one."""

    def __init__(self, what: str, message: str | None = None):
        self.what = what
        super().__init__(message or f"training produced a non-finite {what}")


def check_value(what: str, value: float | torch.Tensor) -> None:
    """Raise :class:`NonFiniteError` when ``value`` (a loss, a gradient norm) is inf or NaN."""
    v = float(value)
    if not math.isfinite(v):
        raise NonFiniteError(f"{what} ({v})")


def check_weights(params: Iterable[torch.Tensor]) -> None:
    """Raise :class:`NonFiniteError` when any trainable weight is inf or NaN (one device sync in all)."""
    params = [p for p in params if p.requires_grad and p.is_floating_point()]
    flags = [torch.isfinite(local(p.detach())).all() for p in params]
    bad = bool(flags) and not bool(torch.stack(flags).all())
    if any(is_dtensor(p) for p in params):  # FSDP2: each rank sees its shards; every rank must stop together
        bad = current().any(bad)
    if bad:
        raise NonFiniteError("weight after the optimiser step")


def last_checkpoint_note(run_dir: Path) -> str:
    from fairrl.trainer.checkpoint import checkpoint_folders

    folders = checkpoint_folders(run_dir)
    if not folders:
        return "no checkpoint was written yet, so start afresh with --overwrite"
    return (
        f"the last checkpoint, {folders[0]}, was saved before this step and stays; continue from it with "
        f"--resume {run_dir} --set learning_rate=<lower>"
    )


@contextmanager
def step_guard(step: int, run_dir: Path, learning_rate: float) -> Iterator[None]:
    """Turn a :class:`NonFiniteError` raised inside the block into one message naming ``step`` (1-based,
    as logged), the likely causes and what stays on disk."""
    try:
        yield
    except NonFiniteError as err:
        raise NonFiniteError(
            err.what,
            f"training stopped at step {step}: the {err.what} is not finite; nothing from this step was "
            f"saved. Likely causes: {CAUSES} (learning_rate is {learning_rate:g}). {last_checkpoint_note(run_dir)}",
        ) from None

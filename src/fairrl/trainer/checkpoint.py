"""Atomic checkpoints and resume, with a fallback when the newest checkpoint is damaged.

A checkpoint is a folder ``checkpoints/step-000010/`` holding

- ``trainable.safetensors``: the trainable parameters only (LoRA adapters, or all weights when
  fully fine-tuning) - safetensors, never pickle;
- ``optimizer.pt`` / ``scheduler.pt``: optimiser and LR-scheduler state (plain tensors and numbers,
  read back with ``torch.load(weights_only=True)``);
- ``state.json``: step, data position, and the Python / torch RNG states.

It is written into a temporary sibling folder, flushed to disk and renamed into place, then the
one-line ``checkpoints/latest`` pointer is replaced atomically. A crash at any moment leaves the
previous checkpoint (and pointer) intact, plus at most a temporary that the next save (or run start)
removes.

Files can still be damaged after the fact (a full disk, a copy cut short, a bad sector). Resuming
therefore reads a checkpoint completely - every file parsed, every weight finite - before touching
the model, and falls back to the previous checkpoint when the newest does not read
(:func:`resume_checkpoint`).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fairrl.console import Console
from fairrl.errors import ConfigError, FairRLError
from fairrl.fsutil import atomic_directory, sweep_temporaries, write_text_atomic
from fairrl.models.sharding import (
    full_optimizer_state,
    full_state_dict,
    is_sharded,
    like,
    reshard_optimizer_state,
)


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Trainable parameters by name, detached and contiguous on CPU."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_checkpoint(
    run_dir: Path,
    step: int,
    model,
    optimizer: torch.optim.Optimizer,
    scheduler,
    extra: dict[str, Any],
    keep: int = 2,
    gathered: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically, prune all but the newest ``keep``, sweep stale temporaries.
    ``gathered``: the weights and optimiser state of a sharded model, from :func:`gather_sharded`."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    weights, optim = gathered if gathered is not None else (trainable_state(model), optimizer.state_dict())
    with atomic_directory(final) as tmp:
        save_file(weights, str(tmp / "trainable.safetensors"))
        torch.save(optim, tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        state = {"step": step, "rng": rng_state(), **extra}
        (tmp / "state.json").write_text(json.dumps(state))
    write_text_atomic(root / "latest", final.name + "\n")
    for old in checkpoint_folders(run_dir)[keep:]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    sweep_temporaries(root)
    sweep_temporaries(Path(run_dir))
    return final


def gather_sharded(model, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """A sharded (FSDP2) model's trainable weights and optimiser state as whole tensors, for
    :func:`save_checkpoint` (every rank calls it: a collective); None for an unsharded model."""
    if not is_sharded(model):
        return None
    return full_state_dict(model, trainable_only=True), full_optimizer_state(optimizer)


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """Every ``checkpoints/step-NNNNNN`` folder, newest (highest step) first, complete or not."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: p.name, reverse=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint named by ``latest`` (falling back to the newest complete folder)."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if pointer.exists():
        candidate = root / pointer.read_text().strip()
        if (candidate / "state.json").exists():
            return candidate
    complete = [p for p in checkpoint_folders(run_dir) if (p / "state.json").exists()]
    return complete[0] if complete else None


class DamagedCheckpoint(FairRLError):
    """A checkpoint folder whose files are missing or do not read back."""


@dataclass
class CheckpointData:
    """Everything a checkpoint holds, read and checked, not yet applied to a model."""

    path: Path
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    state: dict[str, Any]


def read_checkpoint(path: Path) -> CheckpointData:
    """Read every file of checkpoint ``path``; :class:`DamagedCheckpoint` names what is wrong.

    Any failure to read counts as damage (the readers raise many types: OSError, safetensors' error,
    unpickling errors, JSON errors); so do non-finite weights, which a healthy run never saves.
    """
    path = Path(path)
    current = "state.json"
    try:
        state = json.loads((path / current).read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "rng" not in state:
            raise ValueError("it lacks the step or RNG state")
        rng = state["rng"]
        torch.tensor(rng["torch"], dtype=torch.uint8)  # checked here so applying cannot fail half-way
        random.Random().setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        current = "trainable.safetensors"
        weights = load_file(str(path / current))
        current = "optimizer.pt"
        optimizer = torch.load(path / current, weights_only=True)
        current = "scheduler.pt"
        scheduler = torch.load(path / current, weights_only=True) if (path / current).exists() else None
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{current} is missing") from None
    except Exception as err:  # noqa: BLE001 - whatever the reader raised, the file is unusable
        reason = str(err).splitlines()[0][:160] if str(err) else ""
        raise DamagedCheckpoint(f"{current}: {type(err).__name__}{': ' if reason else ''}{reason}") from None
    bad = [n for n, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise DamagedCheckpoint(f"weight {bad[0]!r} holds inf or NaN")
    return CheckpointData(path, weights, optimizer, scheduler, state)


def apply_checkpoint(
    data: CheckpointData, model, optimizer: torch.optim.Optimizer, scheduler
) -> dict[str, Any]:
    """Copy a read checkpoint into the model, optimiser, scheduler and RNGs; return ``state.json``'s contents."""
    params = dict(model.named_parameters())
    missing = [n for n in data.weights if n not in params]
    if missing:
        raise ConfigError(
            f"checkpoint {data.path} does not match the model (e.g. {missing[0]!r}); resume with the same model config"
        )
    with torch.no_grad():
        for name, value in data.weights.items():  # a sharded parameter takes its shard (fairrl.models.sharding)
            params[name].copy_(like(value, params[name]))
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(data.optimizer)
    except (ValueError, KeyError) as err:
        raise ConfigError(
            f"checkpoint {data.path}: the optimiser state does not match the model ({err})"
        ) from None
    for group, kernel in zip(optimizer.param_groups, kernels, strict=True):
        group.update(kernel)  # the kernel is this run's choice (a sharded run cannot use the fused one)
    reshard_optimizer_state(optimizer)
    if scheduler is not None and data.scheduler is not None:
        scheduler.load_state_dict(data.scheduler)
    set_rng_state(data.state["rng"])
    return data.state


def load_checkpoint(path: Path, model, optimizer: torch.optim.Optimizer, scheduler) -> dict[str, Any]:
    """Restore trainable weights, optimiser, scheduler and RNG; return ``state.json``'s contents."""
    return apply_checkpoint(read_checkpoint(path), model, optimizer, scheduler)


def resume_checkpoint(run_dir: Path, model, optimizer, scheduler, console: Console) -> dict[str, Any] | None:
    """Load the newest checkpoint of ``run_dir`` that reads completely, newest first; None when there is none.

    Each damaged one is named on the console, skipped, and removed once an earlier one has loaded (the
    run continues from that earlier step; the metrics logged after it are replaced). When checkpoints exist but none reads, a
    :class:`~fairrl.errors.FairRLError` lists why, rather than silently starting over.
    """
    folders = checkpoint_folders(run_dir)
    problems = []
    for i, folder in enumerate(folders):
        try:
            data = read_checkpoint(folder)
        except DamagedCheckpoint as err:
            problems.append(f"{folder.name}: {err}")
            more = (
                "falling back to the previous one" if i + 1 < len(folders) else "no earlier checkpoint left"
            )
            console(f"note: checkpoint {folder} is damaged ({err}); {more}")
            continue
        state = apply_checkpoint(data, model, optimizer, scheduler)
        for damaged in folders[:i]:  # unreadable, and the resumed run writes its own steps after this one
            shutil.rmtree(damaged, ignore_errors=True)
        if i:
            write_text_atomic(folder.parent / "latest", folder.name + "\n")
        console(f"resumed from {folder} (step {state['step']})")
        return state
    if problems:
        raise FairRLError(
            f"--resume {run_dir}: no checkpoint there could be loaded ({'; '.join(problems)}); "
            f"start afresh with --overwrite, or restore the checkpoints folder from a backup"
        )
    return None

"""The run folder every training method shares: where it is, whether a run may start there, the saved
config, seeding, final weights.

A run folder holds one run, never parts of two. Starting a run is split in two so that a run that
fails on bad input leaves nothing behind:

1. :func:`plan_run` - before any data or model is loaded - decides the folder and checks it, writing
   nothing: a new run needs a new or empty folder (``--overwrite`` starts afresh in one that holds
   files, ``--resume`` continues the run there); the folder must be creatable and writable; a resumed
   run stays in its folder and keeps the model its checkpoints were trained on.
2. :func:`begin_run` - once data and model have loaded - removes what ``--overwrite`` replaces and the
   temporaries of crashed writes, restarts a resumed run that never reached a checkpoint from step 0,
   and writes ``config.yaml``. Should startup still fail after that, :func:`abandon_run` removes a
   folder this run created.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from fairrl.config.base import dump_config, load_config, run_config
from fairrl.config.common import RunConfig
from fairrl.console import Console
from fairrl.errors import ConfigError
from fairrl.fsutil import atomic_directory, is_temporary, sweep_temporaries, write_text_atomic
from fairrl.models.policy import write_policy

RUN_FILES = (
    "config.yaml", "metrics.jsonl", "tensorboard", "checkpoints", "final", "eval_before.json", "eval_after.json",
    "summary.json", "warm_start", "data.json", "results.json", "report.md", "*.png", "completions.jsonl", "trackers.json",
    "wandb", "mlruns",
)  # fmt: skip
"""What runs write into their folder (names or glob patterns): ``--overwrite`` removes these and the
temporaries of crashed writes; other files in the folder are never touched."""

RESUMABLE_MODEL_KEYS = ("device", "gradient_checkpointing", "fsdp")  # fsdp: checkpoints hold whole tensors
"""``model.*`` keys that ``--set`` may change on ``--resume``; any other would not fit the checkpoints."""


def output_dir(cfg: RunConfig, out: str | None) -> Path:
    """``--out`` when given, else ``<output_dir>/<run_name>``."""
    return Path(out) if out else Path(cfg.output_dir) / cfg.run_name  # type: ignore[attr-defined]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def is_run_file(name: str) -> bool:
    return is_temporary(name) or any(fnmatch(name, pattern) for pattern in RUN_FILES)


@dataclass
class RunFolder:
    """A checked run folder: ``resume`` continues the run in it, ``overwrite`` replaces the run in it,
    ``fresh`` says it did not exist or was empty (so a failed startup may remove it)."""

    path: Path
    resume: bool = False
    overwrite: bool = False
    fresh: bool = False


def _names(entries: list[str]) -> str:
    shown = sorted(entries)[:4]
    return ", ".join(shown) + (" ..." if len(entries) > 4 else "")


def check_writable(path: Path) -> None:
    """A :class:`ConfigError` unless ``path`` is (or can be created as) a folder this process can write."""
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"run folder {path} is a file, not a folder; pick another --out (or run_name)")
        ancestor = path
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ConfigError(f"cannot create run folder {path}: {ancestor} is a file; pick another --out")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write into {ancestor} (permission denied); pick a folder you can write "
                              "to with --out")  # fmt: skip
    except OSError as err:
        raise ConfigError(
            f"cannot use run folder {path}: {err.strerror or err}; pick another --out"
        ) from None


def _model_changes(cfg: BaseModel, saved: BaseModel) -> list[str]:
    """``model.*`` keys whose values differ between two configs, ignoring :data:`RESUMABLE_MODEL_KEYS`."""
    new, old = cfg.model.model_dump(), saved.model.model_dump()  # type: ignore[attr-defined]
    return [
        f"model.{k} ({old.get(k)!r} -> {new.get(k)!r})"
        for k in sorted(set(new) | set(old))
        if k not in RESUMABLE_MODEL_KEYS and new.get(k) != old.get(k)
    ]


def plan_run(
    cfg: RunConfig, out: str | None, resume: str | None, overwrite: bool, console: Console
) -> RunFolder:
    """Decide and check the run folder (writing nothing), print the resolved config, set threads and seeds.

    Raises :class:`ConfigError` for a folder that already holds files (unless ``overwrite``), a
    ``resume`` folder without a run, an ``out`` other than ``resume``, a changed model on resume, or a
    path that is a file or not writable.
    """
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite starts one afresh; pass only one of them")
    path = Path(resume) if resume else output_dir(cfg, out)
    if resume and out and Path(out).resolve() != path.resolve():
        raise ConfigError(f"--out {out} differs from --resume {resume}: a resumed run stays in its own folder; "
                          "drop --out")  # fmt: skip
    check_writable(path)
    entries = sorted(e.name for e in path.iterdir()) if path.is_dir() else []
    if resume:
        if not (path / "config.yaml").is_file():
            raise ConfigError(
                f"--resume {path}: no run there (no config.yaml); start a new run with --out {path}"
            )
        changes = _model_changes(cfg, run_config(path, [], type(cfg)))
        if changes:
            raise ConfigError(
                f"--resume {path}: {', '.join(changes)} differs from the run's saved config; its checkpoints "
                f"only fit the saved model (--set may change {', '.join(RESUMABLE_MODEL_KEYS)}, max_steps, ...). "
                "Start a new run with --out to train another model"
            )
    elif entries and not overwrite:
        ours = [e for e in entries if is_run_file(e)]
        if (path / "config.yaml").exists() or ours:
            raise ConfigError(
                f"run folder {path} already holds a run ({_names(ours or entries)}); pass --resume {path} to "
                "continue it or --overwrite to start afresh (its files are removed)"
            )
        raise ConfigError(
            f"run folder {path} is not empty ({_names(entries)}); pick a new or empty folder with --out, or pass "
            "--overwrite to start there anyway (files of an earlier run are removed, others are kept)"
        )
    console("resolved config:\n" + dump_config(cfg))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    return RunFolder(path, resume=bool(resume), overwrite=overwrite, fresh=not entries)


def remove_run_files(path: Path, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove what a run wrote into ``path`` (:data:`RUN_FILES`, temporaries) except ``keep``; returns the names."""
    removed = []
    for entry in sorted(Path(path).iterdir()) if Path(path).is_dir() else []:
        if entry.name in keep or not is_run_file(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


def repair_metrics(path: Path, console: Console) -> None:
    """Drop lines of ``metrics.jsonl`` that do not parse (a torn last line of a killed run), with a note."""
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        return
    lines = metrics.read_text(errors="replace").splitlines()
    kept = []
    for line in lines:
        try:
            if isinstance(json.loads(line), dict):
                kept.append(line)
        except ValueError:
            pass
    dropped = len([x for x in lines if x.strip()]) - len(kept)
    if dropped:
        console(f"note: dropped {dropped} damaged line(s) of {metrics} (a write cut short); the steps after "
                "the checkpoint are logged again")  # fmt: skip
    text = "".join(line + "\n" for line in kept)
    if text != metrics.read_text(errors="replace"):
        write_text_atomic(metrics, text)


def begin_run(folder: RunFolder, cfg: RunConfig, console: Console) -> None:
    """Make the folder ready and write ``config.yaml`` (see the module docstring); I/O errors become a
    :class:`ConfigError` naming the folder."""
    from fairrl.trainer.checkpoint import checkpoint_folders

    path = folder.path
    try:
        if folder.overwrite and path.is_dir():
            removed = remove_run_files(path)
            if removed:
                console(f"--overwrite: removed the earlier run's files from {path} ({_names(removed)})")
        path.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(path)
        sweep_temporaries(path / "checkpoints")
        if folder.resume:
            if not checkpoint_folders(path):
                console(f"note: {path} holds no checkpoint (the run stopped before its first save); "
                        "restarting it from step 0")  # fmt: skip
                remove_run_files(path, keep=("config.yaml", "warm_start"))  # a warm start resumes by itself
            else:
                repair_metrics(path, console)
        write_text_atomic(path / "config.yaml", dump_config(cfg))
    except OSError as err:
        raise ConfigError(f"cannot write the run folder {path}: {err.strerror or err}; pick a folder you can "
                          "write to with --out") from None  # fmt: skip


def abandon_run(folder: RunFolder) -> None:
    """After a startup failure: remove what this run wrote, and the folder itself if it was fresh and is
    now empty. A resumed or overwritten folder is left as it is."""
    if not folder.fresh or folder.resume or not folder.path.is_dir():
        return
    try:
        remove_run_files(folder.path)
        if not any(folder.path.iterdir()):
            folder.path.rmdir()
    except OSError:
        pass


def continue_config(run_dir: str, config: str | None, overrides: list[str], schema: type[BaseModel]) -> Any:
    """The config ``--resume run_dir`` continues: the run's saved one with ``overrides``.

    A CONFIG argument is accepted only when it resolves (with the same overrides) to that same config;
    otherwise it would be silently ignored, so it is an error that says what to do instead.
    """
    cfg = run_config(run_dir, overrides, schema)
    if config is not None:
        given = load_config(config, overrides, schema=schema)
        if given != cfg:
            diff = _diff_keys(given.model_dump(), cfg.model_dump())
            raise ConfigError(
                f"--resume continues the saved config of {run_dir}; drop CONFIG (use --set to change e.g. "
                f"max_steps). {config} differs from it in {', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}"
            )
    return cfg


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b), key=str)
                for k in _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")]  # fmt: skip
    return [] if a == b else [prefix.rstrip(".") or "(config)"]


def save_final(model, tokenizer, run_dir: Path, base_name: str) -> Path:
    """Trained policy weights under ``run_dir/final`` (safetensors, written atomically)."""
    final = run_dir / "final"
    with atomic_directory(final) as tmp:
        write_policy(model, tokenizer, tmp, base_name)
    return final

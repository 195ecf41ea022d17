"""One config, several seeds (``fairrl train CONFIG --seeds 0,1,2``, ``fairrl demo --seeds 0-4``).

Each seed is an ordinary run in ``ROOT/seed-<s>`` (its own config.yaml with ``seed: s``, checkpoints,
report), so an interrupted sweep resumes seed by seed: a finished seed (``summary.json``) is kept, a
started one is resumed, a missing one is started. When all have run, ``ROOT/seeds_report.md`` and
``seeds.json`` combine them (:mod:`fairrl.report.seeds`). With ``jobs > 1`` seeds run as separate
``python -m fairrl train`` processes, ``jobs`` at a time, each with ``threads = cores // jobs`` (one
process per seed keeps their RNG streams and memory apart); on a 2-core CPU run them one at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from fairrl.config import load_config
from fairrl.config.base import dump_config
from fairrl.distributed import current
from fairrl.errors import ConfigError
from fairrl.report.seeds import write_seeds_report

TrainOne = Callable[[str | None, list[str], str | None, str], Path]
"""(config, overrides, resume folder or None, out folder) -> run folder: one ordinary run."""


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix -> sorted unique seeds."""
    seeds: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            seeds.update(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise ConfigError(f"--seeds takes numbers like 0,1,2 or 0-4, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds needs at least one seed >= 0, got {text!r}")
    return sorted(seeds)


def seed_folder(root: Path, seed: int) -> Path:
    return Path(root) / f"seed-{seed}"


def _plan(root: Path, seed: int) -> tuple[str, str | None]:
    """("done" | "resume" | "new", resume folder or None) for one seed's folder."""
    d = seed_folder(root, seed)
    if (d / "summary.json").is_file():
        return "done", None
    if (d / "config.yaml").is_file():
        return "resume", str(d)
    return "new", None


def _in_process(config, overrides, seeds, root, train_one, console) -> None:
    ranks = current()  # under torchrun each seed is one data-parallel run: every rank follows rank 0's plan
    for seed in seeds:
        state, resume = ranks.broadcast_object(_plan(root, seed) if ranks.main else None)
        if state == "done":
            console(f"seed {seed}: finished earlier in {seed_folder(root, seed)}; kept")
            continue
        console(f"\n=== seed {seed} ({'resuming' if resume else 'new run'}) -> {seed_folder(root, seed)} ===")
        train_one(None if resume else config, [*overrides, f"seed={seed}"], resume, str(seed_folder(root, seed)))


def _in_processes(config, overrides, seeds, root, jobs, console) -> None:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending = [s for s in seeds if _plan(root, s)[0] != "done"]
    running: list[tuple[int, subprocess.Popen, object]] = []
    failed = []
    while pending or running:
        while pending and len(running) < jobs:
            seed = pending.pop(0)
            state, resume = _plan(root, seed)
            cmd = [sys.executable, "-m", "fairrl", "train"]
            cmd += ["--resume", resume] if resume else [config or "", "--out", str(seed_folder(root, seed))]
            for o in [*overrides, f"seed={seed}", f"threads={threads}"]:
                cmd += ["--set", o]
            log = (Path(root) / f"seed-{seed}.log").open("w")
            console(f"seed {seed}: started ({state}), log {log.name}")
            running.append((seed, subprocess.Popen([c for c in cmd if c], stdout=log, stderr=subprocess.STDOUT), log))
        seed, proc, log = running.pop(0)
        if proc.wait() != 0:
            failed.append(seed)
        log.close()  # type: ignore[attr-defined]
    if failed:
        raise ConfigError(f"seeds {failed} failed; see {root}/seed-<s>.log, fix, and rerun the same command to resume")


def run_seeds(
    config: str | None, overrides: list[str], seeds: list[int], root: str | Path, train_one: TrainOne,
    console: Callable[[str], None] = print, jobs: int = 1,
) -> Path:  # fmt: skip
    """Run (or resume) every seed, then write the combined report; returns its path."""
    cfg = load_config(config, overrides)  # a bad config fails once, before any seed starts
    if "seed" in {o.split("=", 1)[0].strip() for o in overrides}:
        raise ConfigError("--seeds sets each run's seed; drop --set seed=...")
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the sweep folder {root}: {err.strerror}; pick another --out") from None
    if jobs > 1:
        _in_processes(config, overrides, seeds, root, jobs, console)
    else:
        _in_process(config, overrides, seeds, root, train_one, console)
    dumped = yaml.safe_load(dump_config(cfg))
    if not current().main:  # rank 0 writes the report
        return root / "seeds_report.md"
    return write_seeds_report(root, {s: seed_folder(root, s) for s in seeds}, cfg.run_name, dumped)

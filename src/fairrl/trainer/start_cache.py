"""The starting model's evaluation, shared by runs that start alike (``eval.start_cache``).

A study (``fairrl explore``) or a comparison (``fairrl compare``) trains many runs from one model, and
each run evaluates that model on the same held-out items before training: the same greedy replies and
likelihoods every time (a quarter to a half of a short trial's wall time on a CPU). With
``eval.start_cache: DIR`` a run looks its starting evaluation up in ``DIR/<key>.json`` and evaluates
only when it is not there, then stores it for the next run.

The key is a hash of everything the starting evaluation depends on: fairrl's version, the evaluation
function, the model section (checkpoint, LoRA, dtype, device), the eval section, the seed (bootstrap
intervals), the reply length, the redteam section, and the held-out items themselves (every split's
kind and rows, so a different mixture that holds out the same items shares the entry); the reward
functions and ``max_steps`` (their ``trainer_state``) join it when a split is scored by the run's own
reward functions. The method, the source weights and every training setting act only after the
starting evaluation and stay out of it. Entries are written atomically; an unreadable entry is
evaluated again and replaced. Not in the key: the thread count and the torch build, whose rounding
can in rare cases flip a greedy token; a cache folder is meant for one study on one machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairrl import __version__
from fairrl.config.grpo import TrainConfig
from fairrl.console import Console
from fairrl.data.run_data import RunData
from fairrl.fsutil import write_json_atomic


def start_key(cfg: TrainConfig, data: RunData, evaluator: Callable[..., Any]) -> str:
    """The cache key of a run's starting evaluation (module docstring): 24 hex digits of a SHA-256."""
    parts: dict[str, Any] = {
        "fairrl": __version__,
        "evaluator": f"{evaluator.__module__}.{evaluator.__qualname__}",
        "model": cfg.model.model_dump(mode="json"),
        "eval": cfg.eval.model_dump(mode="json", exclude={"start_cache"}),
        "seed": cfg.seed,
        "max_completion_length": cfg.algorithm.max_completion_length,
        "redteam": cfg.redteam.model_dump(mode="json"),
        "splits": {split: [data.eval_kind(split), [e.row() for e in examples]] for split, examples in data.evals.items()},
    }
    if any(data.eval_kind(split) == "rewards" for split in data.evals):
        parts["rewards"] = cfg.rewards.model_dump(mode="json")
        parts["max_steps"] = cfg.max_steps
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_start(folder: Path, key: str) -> dict[str, Any] | None:
    """The stored evaluation under ``key``, or None (absent or unreadable)."""
    try:
        entry = json.loads((folder / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    result = entry.get("result") if isinstance(entry, dict) else None
    return result if isinstance(result, dict) and entry.get("key") == key else None


def evaluate_start(
    evaluator: Callable[..., dict[str, Any]],
    policy,
    tokenizer,
    data: RunData,
    cfg: TrainConfig,
    console: Console,
    before_path: Path,
    ranks,
    progress: bool = True,
) -> None:
    """Write the starting model's evaluation to ``before_path`` unless it is there (a resumed run):
    from ``eval.start_cache`` when it holds this run's key, else by running ``evaluator`` (every rank
    evaluates its share of the items; rank 0 writes, and stores the result in the cache)."""
    cache = Path(cfg.eval.start_cache) if cfg.eval.start_cache else None
    key = start_key(cfg, data, evaluator) if cache is not None and ranks.main else None
    if ranks.main and key is not None and not before_path.exists():
        hit = cached_start(cache, key)  # type: ignore[arg-type]
        if hit is not None:
            write_json_atomic(before_path, hit)
            console(f"starting model: evaluation {key} reused from {cache}")
    if ranks.any(ranks.main and not before_path.exists()):
        console("evaluating the starting model ...")
        before = evaluator(policy, tokenizer, data, cfg, console, progress=progress and ranks.main)
        if ranks.main:
            write_json_atomic(before_path, before)
            if key is not None:
                try:
                    cache.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
                    write_json_atomic(cache / f"{key}.json", {"key": key, "result": before})  # type: ignore[operator]
                except OSError as err:  # the run has its evaluation; only the sharing is lost
                    console(f"warning: cannot store the starting evaluation in {cache}: {err.strerror}")

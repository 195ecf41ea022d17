"""Run every arm of a comparison over the same seeds (resumable), then write ``OUT/compare.md``.

Each arm is an ordinary multi-seed sweep (:func:`fairrl.multiseed.run_seeds`) in ``OUT/<arm>/seed-<s>``,
from the same starting model and data config with only ``method``, ``max_steps`` (the equal budget,
:mod:`fairrl.compare.plan`) and, with ``--ratios``, the source weights changed. A finished run is
reused, a started one resumed, a missing one started; ``OUT/plan.json`` records the base config and
budget, and a rerun with another base config or budget into the same folder is refused (its old runs
would otherwise be mixed with the new ones).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from fairrl.compare.plan import Arm, Variant, bbq_share, plan_arms, sequences_per_step
from fairrl.config import load_config
from fairrl.config.base import dump_config
from fairrl.distributed import current
from fairrl.errors import ConfigError
from fairrl.fsutil import write_json_atomic
from fairrl.multiseed import TrainOne, run_seeds, seed_folder
from fairrl.report.compare import write_compare_report


def _check_plan(root: Path, plan: dict) -> None:
    path = root / "plan.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = [k for k in ("config", "budget") if old.get(k) != plan[k]]
        if changed:
            raise ConfigError(
                f"{root} holds a comparison with another {' and '.join(changed)}; its finished runs would be "
                "mixed with new ones: pick another --out (or remove that folder)"
            )
        plan["arms"] = {**old.get("arms", {}), **plan["arms"]}
    write_json_atomic(path, plan)


def run_compare(
    config: str | None, overrides: list[str], methods: list[str], seeds: list[int],
    ratios: list[float | None], budget: int | None, out: str | Path, train_one: TrainOne,
    console: Callable[[str], None] = print, jobs: int = 1, variants: list[Variant | None] | None = None,
) -> Path:  # fmt: skip
    """Run (or resume) each arm for every seed, then write the comparison; returns ``OUT/compare.md``."""
    cfg = load_config(config, overrides)
    if {"method", "max_steps"} & {o.split("=", 1)[0].strip() for o in overrides}:
        raise ConfigError("compare sets each run's method and max_steps (--methods, --budget); drop those --set")
    spent = budget if budget is not None else cfg.max_steps * sequences_per_step(cfg, "grpo")
    by_variant = None  # every variant's config is validated here, before any run starts
    if variants and variants != [None]:
        by_variant = {v: load_config(config, [*overrides, *v.overrides]) for v in variants if v is not None}
    arms = plan_arms(cfg, methods, ratios, spent, by_variant)
    root = Path(out)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the comparison folder {root}: {err.strerror}; pick another --out") from None
    _check_plan(root, {
        "config": yaml.safe_load(dump_config(cfg)), "budget": spent,
        "arms": {a.name: {"method": a.method, "ratio": a.ratio, "steps": a.steps, "sequences_per_step": a.sequences_per_step,
                          "variant": None if a.variant is None else list(a.variant.overrides)} for a in arms},
    })  # fmt: skip
    for i, arm in enumerate(arms, 1):
        console(f"\n##### arm {i}/{len(arms)}: {arm.name} ({arm.steps} steps x {arm.sequences_per_step} "
                f"sequences) -> {root / arm.name}")  # fmt: skip
        shared = f"eval.start_cache={root / 'start_evals'}"  # the arms start alike: one starting evaluation
        run_seeds(config, [shared, *overrides, *arm.overrides(cfg)], seeds, root / arm.name, train_one, console, jobs)
    if not current().main:  # under torchrun rank 0 writes the comparison
        return root / "compare.md"
    return write_compare_report(root, _runs(root, arms, seeds, bbq_share(cfg)), spent)


def _runs(root: Path, arms: list[Arm], seeds: list[int], config_share: float | None) -> dict[str, dict]:
    return {a.name: {"method": a.method, "ratio": a.ratio, "steps": a.steps, "sequences_per_step": a.sequences_per_step,
                     "share": config_share if a.ratio is None else a.ratio,
                     "runs": {s: seed_folder(root / a.name, s) for s in seeds}} for a in arms}  # fmt: skip

"""One trial of a study: sampled values -> training overrides -> runs (one per seed) -> objective values.

A trial's values are turned into ordinary ``fairrl train`` overrides: ``method``, the source weights that
give BBQ the sampled debiasing share (:func:`fairrl.compare.plan.mixture_overrides`), ``max_steps`` for the
study's budget in training sequences (:func:`fairrl.compare.plan.sequences_per_step`), and each searched
config key. Its runs live in ``OUT/runs/run-<hash of the overrides>/seed-<s>`` (a multi-seed sweep,
:func:`fairrl.multiseed.run_seeds`), so a trial retried after its worker died resumes the runs it had
started instead of starting again. Objective and constraint values are means over seeds of the runs'
evaluation headlines (:func:`fairrl.report.compare.run_values`, or a dotted path into ``after``).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from pathlib import Path
from typing import Any

from fairrl.compare.plan import mixture_overrides, sequences_per_step
from fairrl.config import load_config
from fairrl.config.explore import StudyConfig
from fairrl.errors import ConfigError
from fairrl.report.compare import run_values
from fairrl.report.markdown import lookup


def trial_overrides(study: StudyConfig, values: dict[str, Any]) -> list[str]:
    """The ``--set`` list of a trial with sampled ``values`` (after the study's own ``set``)."""
    out = [*study.set_, "warm_start.steps=0"]  # each trial is one strategy on the budget (as fairrl compare)
    if "method" in values:
        out.append(f"method={values['method']}")
    for key, v in values.items():
        if key not in ("method", "debias_share"):
            out.append(f"{key}={v}")
    cfg = load_config(study.base, out)
    if "debias_share" in values:
        out += mixture_overrides(cfg, float(values["debias_share"]))
    if study.budget is not None:
        out.append(f"max_steps={max(1, math.ceil(study.budget / sequences_per_step(cfg, cfg.method)))}")
    if cfg.max_minutes:
        out.append("max_minutes=null")  # a wall-clock cap would stop slower methods short of the budget
    load_config(study.base, out)  # a bad combination fails here, named, before any training
    return out


def run_key(overrides: list[str]) -> str:
    """The folder name of a trial's runs: ``run-`` and 10 hex digits of the overrides' hash."""
    return "run-" + hashlib.sha1(json.dumps(overrides).encode()).hexdigest()[:10]


def metric_value(summary: dict[str, Any], metric: str) -> float | None:
    """A headline of one run (``fairrl compare``'s names), or a dotted path into its ``after`` results."""
    values = run_values(summary)
    if metric in values:
        return values[metric][0]
    value, _ = lookup(summary.get("after", {}), metric)
    return value


def known_metrics(summary: dict[str, Any]) -> list[str]:
    return sorted(k for k in run_values(summary) if not k.startswith("start:"))


def trial_values(study: StudyConfig, run_dirs: list[Path]) -> dict[str, Any]:
    """Objective values (mean over seeds), constraint values, per-group accuracies and minutes of a trial's
    finished runs; a metric missing from the evaluation is a ConfigError naming the known ones."""
    summaries = [json.loads((d / "summary.json").read_text()) for d in run_dirs]

    def mean(metric: str) -> float:
        vals = [metric_value(s, metric) for s in summaries]
        if any(v is None for v in vals):
            raise ConfigError(f"metric {metric!r} is not in the trial's evaluation; known: "
                              f"{', '.join(known_metrics(summaries[0]))} (or a dotted path into summary.json's after)")  # fmt: skip
        return statistics.fmean(vals)  # type: ignore[arg-type]

    groups: dict[str, dict[str, float]] = {}
    for split, res in summaries[0].get("after", {}).items():
        if isinstance(res, dict) and "by_category" in res:
            cats = {c: statistics.fmean(s["after"][split]["by_category"][c]["mean_accuracy"] for s in summaries)
                    for c in res["by_category"]}  # fmt: skip
            groups[f"{split}: mean accuracy by category"] = cats
    minutes = []
    for d in run_dirs:
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()]
        minutes.append(sum(r.get("step_time", 0.0) for r in rows) / 60)
    return {
        "values": {o.label: mean(o.metric) for o in study.objectives},
        "constraints": [mean(c.metric) for c in study.constraints],
        "groups": groups,
        "minutes": sum(minutes),
    }


def constraint_violations(study: StudyConfig, values: list[float]) -> list[float]:
    """Optuna's convention: one number per constraint, <= 0 when it holds (``value >= bound``: bound - value)."""
    return [(c.value - v) if c.op == ">=" else (v - c.value) for c, v in zip(study.constraints, values, strict=True)]

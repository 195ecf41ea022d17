"""Training-health checks of a GRPO run, read from its ``metrics.jsonl`` and held-out evaluation.

A run can finish "successfully" and still have learned the wrong thing: the policy games a reward, stops
exploring, or every group of completions gets the same reward so nothing is left to learn. Each check
below compares windows of the logged curves (moving means, so one noisy step does not trigger it) and
says in plain language what went wrong. The thresholds are ours, picked from the collapsed demo runs
recorded in ``shared/reference/EXPERIMENTS.md`` (format reward 0.9 -> 0.1, completion length 14 -> 6,
zero-variance share 0.75-1.0 by step 40, "unknown" on disambiguated items 0.19 -> 0.47):

- **reward trend**: mean reward of the last ``window`` steps below the first ``window``;
- **collapse**: the total reward or one reward function's mean (moving mean over a quarter of the run)
  fell from its peak into the lower half of its range, by more than the steps' noise;
- **zero-variance share**: more than 0.6 of the groups in the last ``window`` steps had identical rewards;
- **entropy**: mean token entropy of the last ``window`` steps below half the first's;
- **length**: mean completion length of the last ``window`` steps below half the first's;
- **"unknown" on answerable items**: BBQ disambiguated items answered "unknown" rose by more than 0.15
  between the evaluations before and after training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

COLLAPSE_FRACTION = 0.5
ZERO_STD_LIMIT = 0.6
SHRINK_FRACTION = 0.5
UNKNOWN_RISE = 0.15


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def moving_means(values: list[float], smooth: int) -> list[float]:
    """Trailing means over ``smooth`` values: [mean(v[max(0, i - smooth + 1) : i + 1]) for each i]."""
    return [_mean(values[max(0, i - smooth + 1) : i + 1]) for i in range(len(values))]


def collapse(values: list[float], smooth: int = 5) -> tuple[float, int, float] | None:
    """(peak, index of the peak, final) of the ``smooth``-step moving mean when the curve fell from its
    peak into the lower half of its range and by more than step-to-step noise; None otherwise.

    Lower half: final <= peak - (peak - lowest) / 2, over the moving mean, so a penalty curve (values
    <= 0, e.g. bbq_overcaution) that slides from near 0 to its lowest is caught like a reward that
    climbs and falls back. Noise: the fall must exceed twice the standard error of a difference of two
    ``smooth``-step means, ``2 * sqrt(2) * sd / sqrt(smooth)`` with ``sd`` the standard deviation of the
    per-step values (a per-step reward over 4 prompts is noisy; without this, the peak of a moving mean
    of pure noise would look like a collapse).
    """
    if len(values) < 2 * smooth:
        return None
    m = moving_means(values, smooth)[smooth - 1 :]  # full windows only
    peak_i = max(range(len(m)), key=m.__getitem__)
    span = m[peak_i] - min(m)
    mu = _mean(values)
    sd = math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))
    noise = 2 * math.sqrt(2) * sd / math.sqrt(smooth)
    if span <= 1e-9 or m[-1] > m[peak_i] - COLLAPSE_FRACTION * span or m[peak_i] - m[-1] <= noise:
        return None
    return m[peak_i], peak_i + smooth - 1, m[-1]


def _window(n: int, window: int) -> int:
    return max(1, min(window, n // 3))


def training_checks(rows: list[dict[str, Any]], window: int = 10, smooth: int | None = None) -> list[Check]:
    """The checks on the logged steps (``rows`` of metrics.jsonl, in step order); ``smooth`` (the moving
    mean of the collapse check) defaults to a quarter of the run, at least 3 steps."""
    smooth = smooth or max(3, len(rows) // 4)
    if len(rows) < 3:
        return [Check("steps", True, f"only {len(rows)} step(s) logged: too few to judge the training curves")]
    k = _window(len(rows), window)
    checks = []
    reward = _values(rows, "reward")
    first, last = _mean(reward[:k]), _mean(reward[-k:])
    checks.append(Check(
        "reward trend", last > first,
        f"mean reward of the last {k} steps {last:.3f} vs the first {k} {first:.3f}"
        + ("" if last > first else ": the training reward did not rise"),
    ))  # fmt: skip
    curves = ["reward"] + sorted(key for key in rows[-1] if key.startswith("rewards/") and key.endswith("/mean"))
    for key in curves:
        hit = collapse(_values(rows, key), smooth)
        if hit is not None:
            peak, at, final = hit
            step = rows[at].get("step", at + 1)
            checks.append(Check(
                f"collapse of {key}", False,
                f"{key} fell from {peak:.3f} (moving mean at step {step}) to {final:.3f}, beyond its step-to-step "
                "noise: the policy is losing what it had learned; a shorter run, a lower learning rate or "
                "beta > 0 may keep it",
            ))  # fmt: skip
    if not any(c.name.startswith("collapse") for c in checks):
        checks.append(Check("collapse", True, "no reward curve fell from its peak beyond noise"))
    zero = _mean(_values(rows, "frac_reward_zero_std")[-k:])
    if not math.isnan(zero):
        checks.append(Check(
            "zero-variance share", zero <= ZERO_STD_LIMIT,
            f"{zero:.0%} of the groups in the last {k} steps had identical rewards"
            + ("" if zero <= ZERO_STD_LIMIT else ": they give no gradient, so training has stalled"),
        ))  # fmt: skip
    for key, what in (("entropy", "token entropy"), ("completions/mean_length", "completion length")):
        vals = _values(rows, key)
        a, b = _mean(vals[:k]), _mean(vals[-k:])
        if math.isnan(a) or math.isnan(b):
            continue
        ok = not (a > 0 and b < SHRINK_FRACTION * a)
        checks.append(Check(
            what, ok,
            f"{what} {a:.2f} -> {b:.2f} (first vs last {k} steps)"
            + ("" if ok else ": it fell by more than half, the policy may be collapsing onto a few short replies"),
        ))  # fmt: skip
    return checks


def unknown_checks(before: dict[str, Any], after: dict[str, Any]) -> list[Check]:
    """'Unknown' answers on BBQ disambiguated items (where the context answers), per evaluated BBQ split."""
    checks = []
    for split, res in after.items():
        try:
            b = before[split]["overall"]["disambig"]["unknown_rate"]
            a = res["overall"]["disambig"]["unknown_rate"]
        except (KeyError, TypeError):
            continue
        ok = a - b <= UNKNOWN_RISE
        checks.append(Check(
            f"'unknown' on answerable items ({split})", ok,
            f"{split}: 'unknown' on disambiguated items {b:.3f} -> {a:.3f}"
            + ("" if ok else ": the policy learned to avoid answering, not to read the context"),
        ))  # fmt: skip
    return checks


def run_checks(rows: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> list[Check]:
    """Every check of a run: the training curves, then the held-out "unknown" rates when evaluated."""
    summary = summary or {}
    return training_checks(rows) + unknown_checks(summary.get("before", {}), summary.get("after", {}))


def health_markdown(checks: list[Check]) -> str:
    """A warning line per failed check (or one line saying the run looks healthy), then every check."""
    bad = [c for c in checks if not c.ok]
    head = (
        [f"**Warning: {c.message}.**" for c in bad]
        if bad
        else ["No sign of collapse: every check below passed."]
    )
    table = ["| check | ok | detail |", "|---|---|---|"]
    table += [f"| {c.name} | {'yes' if c.ok else '**no**'} | {c.message} |" for c in checks]
    return "\n\n".join(head) + "\n\n" + "\n".join(table)

"""Per-group metrics of preference margins: how well and how evenly a reward ranks chosen over rejected.

The input is one margin per pair, a_i = r(x, y_w) - r(x, y_l) (a reward model) or DPO's implicit
a_i = beta [log pi/pi_ref (y_w) - log pi/pi_ref (y_l)], and the group each pair probes. Per group g:

    accuracy_g = mean_i in g  1[a_i > 0] (+ 1/2 for a tie)      pairwise accuracy (RewardBench's)
    margin_g   = mean_i in g  a_i                                mean margin
    share_g    = mean_i in g  sigmoid(a_i)                       reward share: the amount x_i of Ouyang
                                                                 et al. (ACL 2025), in (0, 1)

and across groups the fairness summary of :func:`fairrl.eval.fairness.group_summary` (gap, ratio, Jain
index, Gini). The headline fairness numbers are Jain and Gini of the per-group shares: shares are
positive, so no shift is needed and the values are comparable between models; the same summary of the
raw mean margins is reported too (shifted when some are negative, see that module). ``pair_jain`` is
the batch objective of the fairness losses, Jain's index of x_i over all pairs.

Intervals are 95% percentile bootstrap intervals; for the group statistics pairs are resampled within
each group (stratified), so every resample has every group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fairrl.console import progress_scope, track
from fairrl.errors import DataError
from fairrl.eval.fairness import gini, group_summary, jain_index
from fairrl.eval.metrics import bootstrap_ci, percentile_interval


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # overflow-free logistic


def pair_correct(margins: np.ndarray) -> np.ndarray:
    """1 for a positive margin, 1/2 for a tie, 0 otherwise ``[N]``."""
    return (margins > 0).astype(np.float64) + 0.5 * (margins == 0)


def _stratified_group_means(
    values: np.ndarray, index: dict[str, np.ndarray], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap means per group ``[n_boot, G]``, resampling within each group."""
    cols = []
    for idx in index.values():
        draws = rng.integers(0, len(idx), size=(n_boot, len(idx)))  # [n_boot, n_g]
        cols.append(values[idx][draws].mean(-1))
    return np.stack(cols, axis=1)


def preference_metrics(
    margins: Sequence[float], groups: Sequence[str], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy, margin and reward share overall and per group, with the fairness of each across groups.

    Returns ``{n, accuracy, accuracy_ci, mean_margin, mean_margin_ci, pair_jain, by_group: {g: {n,
    accuracy, accuracy_ci, mean_margin, share}}, group_fairness: {accuracy, margin, share}: group_summary,
    jain, jain_ci, gini, gini_ci, accuracy_gap, accuracy_gap_ci}``; ``jain``/``gini`` are those of the
    per-group shares, ``accuracy_gap`` the largest difference in pairwise accuracy between groups.
    """
    a = np.asarray(margins, dtype=np.float64)  # [N]
    if len(a) != len(groups):
        raise ValueError(f"{len(a)} margins but {len(groups)} groups")
    if len(a) == 0:
        raise DataError("no preference pairs to evaluate; check the evaluation split is not empty")
    if not np.isfinite(a).all():
        raise DataError(f"{int((~np.isfinite(a)).sum())} margin(s) are not finite; the reward model diverged")
    correct, share = pair_correct(a), _sigmoid(a)
    index: dict[str, np.ndarray] = {}
    for i, g in enumerate(groups):
        index.setdefault(str(g), []).append(i)  # type: ignore[arg-type]
    index = {g: np.asarray(v) for g, v in sorted(index.items())}
    by_group = {
        g: {
            "n": len(idx),
            "accuracy": float(correct[idx].mean()),
            "accuracy_ci": list(bootstrap_ci(correct[idx], n_boot=n_boot, seed=seed)),
            "mean_margin": float(a[idx].mean()),
            "share": float(share[idx].mean()),
        }
        for g, idx in index.items()
    }
    out: dict[str, Any] = {
        "n": len(a),
        "accuracy": float(correct.mean()),
        "accuracy_ci": list(bootstrap_ci(correct, n_boot=n_boot, seed=seed)),
        "mean_margin": float(a.mean()),
        "mean_margin_ci": list(bootstrap_ci(a, n_boot=n_boot, seed=seed)),
        "pair_jain": jain_index(share.tolist()),
        "by_group": by_group,
        "group_fairness": {
            key: group_summary({g: v[field] for g, v in by_group.items()})
            for key, field in (("accuracy", "accuracy"), ("margin", "mean_margin"), ("share", "share"))
        },
    }
    shares = out["group_fairness"]["share"]
    out["jain"], out["gini"] = shares["jain"], shares["gini"]
    out["accuracy_gap"] = out["group_fairness"]["accuracy"]["gap"]
    out["worst_group_accuracy"] = min(v["accuracy"] for v in by_group.values()) if by_group else math.nan
    rng = np.random.default_rng(seed)
    boot_share = _stratified_group_means(share, index, n_boot, rng)  # [n_boot, G]
    boot_acc = _stratified_group_means(correct, index, n_boot, rng)  # [n_boot, G]
    nan2 = [math.nan, math.nan]
    single = len(index) < 2
    out["jain_ci"] = (
        nan2 if single else list(percentile_interval(np.array([jain_index(r.tolist()) for r in boot_share])))
    )
    out["gini_ci"] = (
        nan2 if single else list(percentile_interval(np.array([gini(r.tolist()) for r in boot_share])))
    )
    out["accuracy_gap_ci"] = nan2 if single else list(percentile_interval(boot_acc.max(1) - boot_acc.min(1)))
    out["worst_group_accuracy_ci"] = list(percentile_interval(boot_acc.min(1))) if len(index) else nan2
    return out


def source_accuracy(margins: Sequence[float], sources: Sequence[str]) -> dict[str, dict[str, float]]:
    """Pairwise accuracy (:func:`pair_correct`) and mean margin per data source: one benchmark's pairs can
    be much harder than another's."""
    a = np.asarray(margins, dtype=np.float64)  # [N]
    correct = pair_correct(a)
    index: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        index.setdefault(str(s), []).append(i)
    return {
        s: {"n": len(idx), "accuracy": float(correct[idx].mean()), "mean_margin": float(a[idx].mean())}
        for s, idx in sorted(index.items())
    }


EVAL_CHUNK = 512
"""Pairs per ``eval_margins`` call in :func:`evaluate_learner`: the progress bar moves once per chunk,
and the learner still batches (and length-sorts) within a chunk."""


def margins_with_progress(learner, pairs: Sequence[Any], desc: str) -> list[float]:
    """``learner.eval_margins`` over ``pairs`` in chunks of :data:`EVAL_CHUNK`, with a progress bar."""
    margins: list[float] = []
    with track(len(pairs), desc, unit="pair") as bar:
        for i in range(0, len(pairs), EVAL_CHUNK):
            margins += learner.eval_margins(pairs[i : i + EVAL_CHUNK])
            bar.update(min(EVAL_CHUNK, len(pairs) - i))
    return margins


def evaluate_learner(learner, splits, n_boot: int, seed: int, progress: bool = True) -> dict[str, Any]:
    """Per-group preference metrics of the eval (trained groups) and held-out (unseen groups) splits.

    ``learner`` has ``eval_margins(pairs) -> list[float]`` (a reward model or a DPO policy);
    ``splits`` has ``eval`` and ``heldout`` lists of preference pairs; ``progress=False`` hides the bars.
    """
    out: dict[str, Any] = {}
    for name, pairs in (("eval", splits.eval), ("heldout", splits.heldout)):
        if pairs:
            with progress_scope(enabled=progress):
                margins = margins_with_progress(learner, pairs, f"scoring {name} pairs")
            out[name] = preference_metrics(margins, [p.group for p in pairs], n_boot=n_boot, seed=seed)
            out[name]["by_source"] = source_accuracy(margins, [p.source for p in pairs])
            # a group that is weak on one benchmark only points at that data, not at the objective
            out[name]["by_group_source"] = {
                g: source_accuracy([m for m, p in zip(margins, pairs, strict=True) if p.group == g],
                                   [p.source for p in pairs if p.group == g])
                for g in sorted({p.group for p in pairs})
            }  # fmt: skip
    return out

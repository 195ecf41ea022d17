"""DAPO dynamic sampling (Yu et al., arXiv 2503.14476, sec. 3.2, eq. 11): train only on groups whose
rewards vary.

A group whose G rewards are all equal has zero advantage everywhere, so it adds no gradient but still
dilutes a token-mean loss. DAPO over-samples and keeps only groups with 0 < #correct < G; fairrl, for
any reward, drops the zero-variance groups of a batch and refills it with groups of new prompts until
it holds P prompts again or ``max_rounds`` refills were made (the paper samples until the batch is
full; the cap bounds the cost of a step when almost every group is saturated). A step whose groups
are all zero-variance even after refilling trains on the first batch (zero gradient, and it is logged).
"""

from __future__ import annotations

from collections.abc import Callable

from fairrl.advantages import zero_variance_groups
from fairrl.trainer.batch import Batch, concat_batches, select_groups


def dynamic_sampling(
    first: Batch, refill: Callable[[int], Batch], target: int, max_rounds: int, pad_id: int
) -> tuple[Batch, dict[str, float]]:
    """Drop the zero-variance groups of ``first`` and top it up with ``refill(n)`` (n new prompts' groups).

    Returns the batch and ``dynamic_sampling/dropped`` (groups dropped from the first batch) and
    ``dynamic_sampling/rounds`` (refills made).
    """
    kept = select_groups(first, ~zero_variance_groups(first.rewards))
    info = {"dynamic_sampling/dropped": float(len(first.examples) - len(kept.examples))}
    rounds = 0
    while len(kept.examples) < target and rounds < max_rounds:
        rounds += 1
        extra = refill(target - len(kept.examples))
        kept = concat_batches(kept, select_groups(extra, ~zero_variance_groups(extra.rewards)), pad_id)
    info["dynamic_sampling/rounds"] = float(rounds)
    if not kept.examples:  # nothing informative at all: train on the first batch (zero gradient, logged)
        kept = first
    return kept, info

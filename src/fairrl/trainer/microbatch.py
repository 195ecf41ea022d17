"""Micro-batches of a GRPO step: gradient accumulation that equals the one-pass loss exactly.

A step holds P prompts x G completions (row ``p * G + g``). A micro-batch of ``m`` rows keeps prompt
groups intact, so the prefix-shared forward still encodes each prompt once per micro-batch:

- ``m`` a multiple of G: ``m / G`` whole groups;
- ``m`` a divisor of G: ``G / m`` slices of one prompt's group.

Every ``loss_type`` is a sum over rows with a normaliser fixed by the whole batch, so backpropagating
each micro-batch's own loss times its share (:func:`fairrl.losses.part_share`) accumulates exactly the
gradient of the one-pass loss (up to float summation order).
"""

from __future__ import annotations

from dataclasses import dataclass

from fairrl.config.grpo import keeps_groups


@dataclass(frozen=True)
class MicroBatch:
    prompts: slice  # into prompt_ids [P, Lp]
    rows: slice  # into completion rows [P*G, Lc]
    group_size: int  # completions per prompt inside this micro-batch


def micro_batches(prompts: int, group_size: int, size: int | None) -> list[MicroBatch]:
    """The micro-batches of a P x G step (module docstring); ``size`` None or >= P*G: one batch."""
    P, G = prompts, group_size
    if size is None or size >= P * G:
        return [MicroBatch(slice(0, P), slice(0, P * G), G)]
    if size % G == 0:
        k = size // G
        return [MicroBatch(slice(p, min(p + k, P)), slice(p * G, min(p + k, P) * G), G) for p in range(0, P, k)]
    if not keeps_groups(size, G):
        raise ValueError(f"micro-batch size {size} must divide the group size {G} or be a multiple of it")
    return [
        MicroBatch(slice(p, p + 1), slice(p * G + j, p * G + j + size), size)
        for p in range(P)
        for j in range(0, G, size)
    ]

"""Micro-batches of a GRPO step: gradient accumulation that equals the one-pass loss exactly.

A step holds P prompts x G completions (row ``p * G + g``). A micro-batch of ``m`` rows keeps prompt
groups intact, so the prefix-shared forward still encodes each prompt once per micro-batch:

- ``m`` a multiple of G: ``m / G`` whole groups;
- ``m`` a divisor of G: ``G / m`` slices of one prompt's group.

Every ``loss_type`` is a sum over rows with a normaliser fixed by the whole batch, so
``L = sum_b w_b * L_b`` with ``L_b`` the same loss computed on micro-batch b alone and

    w_b = n_b / N    for grpo (mean over sequences) and dr_grpo (sum / (N * L_max)),
    w_b = T_b / T    for bnpo / dapo (mean over the batch's T completion tokens),

where n_b, N count rows and T_b, T count the tokens in the loss mask. Backpropagating ``w_b * L_b``
for each b accumulates exactly the gradient of L (up to float summation order).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MicroBatch:
    prompts: slice  # into prompt_ids [P, Lp]
    rows: slice  # into completion rows [P*G, Lc]
    group_size: int  # completions per prompt inside this micro-batch


def keeps_groups(size: int, group_size: int) -> bool:
    """Whether micro-batches of ``size`` completions keep groups whole or slice one group evenly."""
    return size >= 1 and (group_size % size == 0 or size % group_size == 0)


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


def micro_batch_weight(loss_type: str, rows: int, total_rows: int, tokens: float, total_tokens: float) -> float:
    """w_b of the module docstring: the share of the batch loss that micro-batch b's own loss carries."""
    if loss_type in ("bnpo", "dapo"):
        return tokens / max(total_tokens, 1.0)
    return rows / total_rows

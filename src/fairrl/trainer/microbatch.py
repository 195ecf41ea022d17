"""Micro-batches of a GRPO step: gradient accumulation that equals the one-pass loss exactly.

A step holds P prompts x G completions (row ``p * G + g``). A micro-batch of ``m`` rows keeps prompt
groups intact, so the prefix-shared forward still encodes each prompt once per micro-batch:

- ``m`` a multiple of G: ``m / G`` whole groups;
- ``m`` a divisor of G: ``G / m`` slices of one prompt's group.

Every ``loss_type`` is a sum over rows with a normaliser fixed by the whole batch, so backpropagating
each micro-batch's own loss times its share (:func:`fairrl.losses.part_share`) accumulates exactly the
gradient of the one-pass loss (up to float summation order).

Under FSDP2 (``model.fsdp``) every rank must run the sharded layers the same number of times, but dynamic
sampling, XRPO's allocator and the red team's blocks of tasks leave ranks with different numbers of groups,
so different numbers of micro-batches (a rank may hold none). :func:`idle_passes` says how many a rank lacks
and :func:`idle_backward` runs one: a forward and backward of a one-token dummy row with a loss multiplied
by zero, so the layers' all-gathers and reduce-scatters match and the gradient is unchanged (as verl and
DeepSpeed pad uneven data-parallel shards with dummy work).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fairrl.config.grpo import keeps_groups
from fairrl.distributed import Ranks
from fairrl.models.logprobs import completion_logprobs


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


def idle_passes(ranks: Ranks, own: int) -> int:
    """How many micro-batches this rank, which has ``own``, runs fewer than the busiest rank (every rank
    calls it: one small gather)."""
    return max(ranks.gather_objects(own)) - own if ranks.active else 0


def idle_backward(model: torch.nn.Module, agree: Callable[[bool], bool] | None, **kw) -> None:
    """One micro-batch that trains nothing: a prompt and a reply of dummy tokens through the model's forward
    (the same call, ``agree`` included, as a real micro-batch) and a backward of its log-probs times zero.
    Every gradient it adds is zero; its collectives are those of a real micro-batch. ``kw``: the keywords of
    :func:`~fairrl.models.logprobs.completion_logprobs` (temperature, share_prompt)."""
    logp, _ = completion_logprobs(model, *idle_inputs(next(model.parameters()).device), with_entropy=False,
                                  agree=agree, **kw)  # fmt: skip
    (logp.sum() * 0.0).backward()


def idle_inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """An idle micro-batch's dummy row: (prompt ids, prompt mask, reply ids, reply mask, group size 1), one
    prompt token and two reply tokens."""
    one = torch.ones((1, 1), dtype=torch.long, device=device)
    reply = torch.ones((1, 2), dtype=torch.long, device=device)
    return one, one, reply, reply, 1

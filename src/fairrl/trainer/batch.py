"""A scored rollout (P prompts x G completions with their rewards) and the group-level edits on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fairrl.data.records import Example
from fairrl.distributed import current
from fairrl.rollout.generate import Rollout


@dataclass
class Batch:
    """A scored rollout: P prompts x G completions."""

    examples: list[Example]  # [P]
    rollout: Rollout
    texts: list[str]  # [P*G]
    rewards: torch.Tensor  # [P, G] combined (+ shaping)
    per_fn: torch.Tensor  # [P, G, K] raw, NaN = not applicable
    extra: dict[str, list[Any]] = field(default_factory=dict)  # column -> [P*G], reward functions' log_extra
    shard: slice | torch.Tensor | None = None
    """Data-parallel training (:mod:`fairrl.distributed`): the prompts of ``examples`` whose rollout
    this rank holds, in the order of its rollout (a slice, or after dynamic sampling's selection the
    prompts' positions, a LongTensor, possibly empty); everything else (rewards, texts, the totals
    below) covers the global batch. None: all."""
    totals: dict[str, torch.Tensor] | None = None
    """With a shard: the global batch's completion ``lengths`` and ``truncated`` flags ``[P*G]`` and its
    ``num_tokens`` (for the step metrics)."""
    sizes: list[int] | None = None
    """Variable group sizes (XRPO's allocator, :mod:`fairrl.trainer.allocation`): prompt p has ``sizes[p]``
    completions, rows ``p * G .. p * G + sizes[p] - 1``; the rest of its G rows are empty (no tokens, NaN
    rewards). None: every group is full."""

    def valid(self) -> torch.Tensor:
        """Bool ``[P*G]``: the rows that hold a completion."""
        G = self.rollout.group_size
        if self.sizes is None:
            return torch.ones(len(self.examples) * G, dtype=torch.bool)
        return (torch.arange(G)[None, :] < torch.tensor(self.sizes)[:, None]).reshape(-1)


def shard_positions(batch: Batch) -> list[int]:
    """Global prompt positions of the rollout's rows, in order (all prompts without a shard)."""
    if batch.shard is None:
        return list(range(len(batch.examples)))
    if isinstance(batch.shard, slice):
        return list(range(len(batch.examples)))[batch.shard]
    return batch.shard.tolist()


def _rows(prompts: list[int], G: int) -> list[int]:
    return [p * G + g for p in prompts for g in range(G)]


def select_groups(batch: Batch, keep: torch.Tensor) -> Batch:
    """Keep the groups where ``keep`` [P] (global) is true. With a shard: the global fields keep the kept
    groups, the rollout this rank's kept groups, and the shard their new global positions."""
    idx = keep.nonzero().flatten().tolist()
    G = batch.rollout.group_size
    rows = _rows(idx, G)
    held = shard_positions(batch)
    mine = [j for j, p in enumerate(held) if keep[p]]  # rollout positions of this rank's kept groups
    local = _rows(mine, G)
    r = batch.rollout
    out = Batch(
        examples=[batch.examples[i] for i in idx],
        rollout=Rollout(
            prompt_ids=r.prompt_ids[mine],
            prompt_mask=r.prompt_mask[mine],
            completion_ids=r.completion_ids[local],
            completion_mask=r.completion_mask[local],
            logprobs=r.logprobs[local],
            truncated=r.truncated[local],
            group_size=G,
        ),
        texts=[batch.texts[i] for i in rows],
        rewards=batch.rewards[idx],
        per_fn=batch.per_fn[idx],
        extra={k: [v[i] for i in rows] for k, v in batch.extra.items()},
    )
    if batch.shard is not None:
        new_pos = {p: k for k, p in enumerate(idx)}
        out.shard = torch.tensor([new_pos[held[j]] for j in mine], dtype=torch.long)
        out.totals = {"lengths": batch.totals["lengths"][rows], "truncated": batch.totals["truncated"][rows],
                      "num_tokens": shard_tokens(out.rollout)}  # fmt: skip
    return out


def shard_tokens(r: Rollout) -> torch.Tensor:
    """Prompt (once per completion) and completion tokens of every rank's rollout, summed over the ranks
    (a collective: every rank calls it)."""
    tokens = r.completion_mask.sum() + r.prompt_mask.sum() * r.group_size
    return current().sum(tokens.detach().float().cpu().reshape(1))


def pad_to(t: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
    extra = width - t.shape[1]
    if extra <= 0:
        return t
    pad = torch.full((t.shape[0], extra), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def concat_batches(a: Batch, b: Batch, pad_id: int) -> Batch:
    if not a.examples:
        return b
    if not b.examples:
        return a
    ra, rb = a.rollout, b.rollout
    lp = max(ra.prompt_ids.shape[1], rb.prompt_ids.shape[1])
    lc = max(ra.completion_ids.shape[1], rb.completion_ids.shape[1])
    cat = lambda x, y: torch.cat([x, y], dim=0)  # noqa: E731
    out = Batch(
        examples=a.examples + b.examples,
        rollout=Rollout(
            prompt_ids=cat(pad_to(ra.prompt_ids, lp, pad_id, True), pad_to(rb.prompt_ids, lp, pad_id, True)),
            prompt_mask=cat(pad_to(ra.prompt_mask, lp, 0, True), pad_to(rb.prompt_mask, lp, 0, True)),
            completion_ids=cat(
                pad_to(ra.completion_ids, lc, pad_id, False), pad_to(rb.completion_ids, lc, pad_id, False)
            ),
            completion_mask=cat(pad_to(ra.completion_mask, lc, 0, False), pad_to(rb.completion_mask, lc, 0, False)),
            logprobs=cat(pad_to(ra.logprobs, lc, 0, False), pad_to(rb.logprobs, lc, 0, False)),
            truncated=cat(ra.truncated, rb.truncated),
            group_size=ra.group_size,
        ),
        texts=a.texts + b.texts,
        rewards=cat(a.rewards, b.rewards),
        per_fn=cat(a.per_fn, b.per_fn),
        extra={k: a.extra.get(k, [None] * len(a.texts)) + b.extra.get(k, [None] * len(b.texts))
               for k in dict.fromkeys([*a.extra, *b.extra])},  # fmt: skip
    )
    if a.shard is not None:  # sharded batches: this rank's rows of both, global totals of both
        out.shard = torch.tensor(shard_positions(a) + [len(a.examples) + p for p in shard_positions(b)], dtype=torch.long)
        out.totals = {"lengths": cat(a.totals["lengths"], b.totals["lengths"]),
                      "truncated": cat(a.totals["truncated"], b.totals["truncated"]),
                      "num_tokens": a.totals["num_tokens"] + b.totals["num_tokens"]}  # fmt: skip
    return out

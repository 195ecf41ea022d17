"""A step's rollouts under XRPO's allocator (``algorithm.rollout_allocator: xrpo``): groups of different
sizes, sampled in phases and assembled into one :class:`~fairrl.trainer.batch.Batch`.

Phase 0 samples ``xrpo_initial_rollouts`` completions of every prompt; each later phase samples
``xrpo_phase_rollouts`` more for the prompts :func:`fairrl.rollout.allocation.next_phase` picks, until the
step's budget of P x num_generations completions is spent (or no prompt can take more). Each phase is one
batched, prefix-shared sampling call, scored by the reward functions as it comes.

The batch keeps the fixed-size layout with G = the largest group of the step: prompt p's completions fill
rows ``p * G ..`` and its remaining rows are empty (no tokens, NaN rewards, ``Batch.sizes``). Empty rows
are inert everywhere: NaN rewards are left out of every group statistic and get advantage 0 (the
estimators' NaN rule), they hold no tokens for the token-mean losses, and the per-sequence losses count
only real rows (:meth:`fairrl.trainer.grpo_step.GRPOStep.update`). Their cost is padding in the training
forward (a step's largest group against its mean), not sampling.
"""

from __future__ import annotations

import torch

from fairrl.data.records import Example
from fairrl.rollout.allocation import next_phase
from fairrl.rollout.generate import Rollout
from fairrl.trainer.batch import Batch


def allocated_rollout(step_fn, examples: list[Example], generator: torch.Generator, step: int) -> Batch:
    """Sample ``examples`` with XRPO's allocator (module docstring); ``step``: steps done so far."""
    alg = step_fn.alg
    P, n0, k = len(examples), alg.xrpo_initial_rollouts, alg.xrpo_phase_rollouts
    cap = alg.xrpo_max_rollouts or 2 * alg.num_generations
    first = step_fn.rollout(examples, generator, group_size=n0)
    pieces: list[list[tuple[Batch, int]]] = [[(first, p)] for p in range(P)]  # per prompt: (phase batch, its index there)
    rewards = [first.rewards[p].tolist() for p in range(P)]
    left = P * alg.num_generations - P * n0
    while chosen := next_phase(rewards, left, k, cap, step + 1, alg.xrpo_exploration, alg.xrpo_confidence):
        more = step_fn.rollout([examples[q] for q in chosen], generator, group_size=k)
        for i, q in enumerate(chosen):
            pieces[q].append((more, i))
            rewards[q] += more.rewards[i].tolist()
        left -= k * len(chosen)
    return assemble(examples, first.rollout, pieces, step_fn.pad_id)


def assemble(examples: list[Example], first: Rollout, pieces: list[list[tuple[Batch, int]]], pad_id: int) -> Batch:
    """One batch of groups of different sizes (module docstring): ``pieces[p]`` lists the phase batches
    holding prompt p's completions and p's index in each; ``first`` has every prompt (its prompt tensors)."""
    rows: list[list[tuple[Batch, int]]] = []  # per prompt: (phase batch, row) of each completion
    for parts in pieces:
        rows.append([(b, i * b.rollout.group_size + g) for b, i in parts for g in range(b.rollout.group_size)])
    sizes = [len(r) for r in rows]
    G, Lc = max(sizes), max(b.rollout.completion_ids.shape[1] for parts in pieces for b, _ in parts)
    K = pieces[0][0][0].per_fn.shape[-1]  # reward functions
    ids = torch.full((len(examples) * G, Lc), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples) * G, Lc), dtype=first.completion_mask.dtype)
    logprobs = torch.zeros((len(examples) * G, Lc), dtype=torch.float32)
    truncated = torch.zeros(len(examples) * G, dtype=torch.bool)
    rewards = torch.full((len(examples), G), float("nan"))
    per_fn = torch.full((len(examples), G, K), float("nan"))
    texts = [""] * (len(examples) * G)
    columns = list(dict.fromkeys(c for parts in pieces for b, _ in parts for c in b.extra))
    extra: dict[str, list] = {c: [None] * (len(examples) * G) for c in columns}
    for p, mine in enumerate(rows):
        for g, (b, row) in enumerate(mine):
            r, out, width = b.rollout, p * G + g, b.rollout.completion_ids.shape[1]
            ids[out, :width], mask[out, :width] = r.completion_ids[row].cpu(), r.completion_mask[row].cpu()
            logprobs[out, :width], truncated[out] = r.logprobs[row].float().cpu(), bool(r.truncated[row])
            rewards[p, g] = b.rewards.reshape(-1)[row]
            per_fn[p, g] = b.per_fn.reshape(-1, K)[row]
            texts[out] = b.texts[row]
            for c in columns:
                extra[c][out] = b.extra.get(c, [None] * len(b.texts))[row]
    device = first.completion_ids.device
    rollout = Rollout(prompt_ids=first.prompt_ids, prompt_mask=first.prompt_mask, completion_ids=ids.to(device),
                      completion_mask=mask.to(device), logprobs=logprobs.to(device), truncated=truncated.to(device),
                      group_size=G)  # fmt: skip
    return Batch(examples=list(examples), rollout=rollout, texts=texts, rewards=rewards, per_fn=per_fn, extra=extra,
                 sizes=sizes)  # fmt: skip


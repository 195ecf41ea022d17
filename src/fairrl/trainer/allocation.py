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
from fairrl.rollout.generate import Rollout, left_pad
from fairrl.trainer.batch import Batch, pad_to


def allocated_rollout(step_fn, examples: list[Example], generator: torch.Generator, step: int) -> Batch:
    """Sample ``examples`` with XRPO's allocator (module docstring); ``step``: steps done so far."""
    alg = step_fn.alg
    P, n0, k = len(examples), alg.xrpo_initial_rollouts, alg.xrpo_phase_rollouts
    cap = alg.xrpo_max_rollouts or 2 * alg.num_generations
    first = phase_rollout(step_fn, examples, generator, n0)
    pieces: list[list[tuple[Batch, int]]] = [[(first, p)] for p in range(P)]  # per prompt: (phase batch, its index there)
    rewards = [first.rewards[p].tolist() for p in range(P)]
    left = P * alg.num_generations - P * n0
    phase = 0
    while chosen := next_phase(rewards, left, k, cap, step + 1, alg.xrpo_exploration, alg.xrpo_confidence):
        phase += 1  # each later phase samples with a generator of its own (the step's seed and the phase):
        own = torch.Generator(device=generator.device)  # its draws do not depend on earlier decode lengths
        own.manual_seed((generator.initial_seed() * 1_000_033 + phase) % 2**63)
        more = phase_rollout(step_fn, [examples[q] for q in chosen], own, k)
        for i, q in enumerate(chosen):
            pieces[q].append((more, i))
            rewards[q] += more.rewards[i].tolist()
        left -= k * len(chosen)
    batch = assemble(examples, first.rollout, pieces, step_fn.pad_id)
    return training_shard(batch, step_fn.ranks) if step_fn.ranks.active else batch


def phase_rollout(step_fn, examples: list[Example], generator: torch.Generator, k: int) -> Batch:
    """``k`` completions of each of ``examples``, scored. On several ranks each samples its block with its
    rows of the call's random numbers and every rank receives all of them (token ids, log-probs, rewards,
    texts): each rank then assembles the whole step as one process would."""
    ranks = step_fn.ranks
    if not ranks.active:
        return step_fn.rollout(examples, generator, group_size=k)
    local = step_fn.shard_of(examples, ranks.split(len(examples)), generator, k)
    step_fn.gather_reward_logs()
    r = local.rollout
    width = max(ranks.gather_objects(r.completion_ids.shape[1]))
    rows = lambda t, fill: ranks.gather_rows(pad_to(t.cpu(), width, fill, False))  # noqa: E731
    prompt_ids, prompt_mask = left_pad([step_fn.encode(e) for e in examples], step_fn.pad_id)
    parts = ranks.gather_objects((local.texts, local.extra))
    columns = list(dict.fromkeys(c for _, extra in parts for c in extra))
    device = r.completion_ids.device
    rollout = Rollout(
        prompt_ids=prompt_ids.to(device), prompt_mask=prompt_mask.to(device),
        completion_ids=rows(r.completion_ids, step_fn.pad_id).to(device), completion_mask=rows(r.completion_mask, 0).to(device),
        logprobs=rows(r.logprobs.float(), 0).to(device), group_size=k,
        truncated=ranks.gather_rows(r.truncated.cpu().to(torch.uint8)).bool().to(device),
    )  # fmt: skip
    return Batch(examples=list(examples), rollout=rollout, texts=[t for texts, _ in parts for t in texts],
                 rewards=ranks.gather_rows(local.rewards.cpu()), per_fn=ranks.gather_rows(local.per_fn.cpu()),
                 extra={c: [v for texts, extra in parts for v in extra.get(c, [None] * len(texts))] for c in columns})  # fmt: skip


def training_shard(batch: Batch, ranks) -> Batch:
    """The assembled step (the same on every rank) cut to this rank's block of prompts for the update,
    with the global batch's reply lengths and token count kept for the metrics."""
    r, G = batch.rollout, batch.rollout.group_size
    valid = batch.valid().to(r.lengths.device)
    tokens = r.completion_mask.sum() + (r.prompt_mask.sum(-1).float() * valid.view(-1, G).sum(-1)).sum()
    part = ranks.shard(len(batch.examples))
    rows = slice(part.start * G, part.stop * G)
    batch.totals = {"lengths": r.lengths.cpu()[valid.cpu()], "truncated": r.truncated.cpu()[valid.cpu()],
                    "num_tokens": tokens.detach().float().cpu().reshape(1)}  # fmt: skip
    batch.rollout = Rollout(prompt_ids=r.prompt_ids[part], prompt_mask=r.prompt_mask[part],
                            completion_ids=r.completion_ids[rows], completion_mask=r.completion_mask[rows],
                            logprobs=r.logprobs[rows], truncated=r.truncated[rows], group_size=G)  # fmt: skip
    batch.shard = part
    return batch


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


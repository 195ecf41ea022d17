"""Per-token log-probabilities of completions, with the prompt encoded once per group.

Plain path: concatenate prompt and completion for each of the P*G rows and run one forward.
Shared path (Prefix-Grouper style, exact): run the P prompts once, with gradient, repeat their
KV cache G times, and run only the completion tokens on top of it. Each completion attends to its
prompt's keys/values and causally to itself, never to another completion, and positions continue
from the prompt's length, so outputs and gradients equal the plain path while the prompt's FLOPs
and activations shrink by a factor of G.

Log-probs use ``logits / temperature`` (the distribution that was sampled), as TRL does.
"""

from __future__ import annotations

import torch

from fairrl.models.loading import checkpointing_active
from fairrl.rollout.generate import positions_from_mask


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[target], computed row by row to bound the float32 copy of the logits.

    Rows come from ``unbind``, whose backward stacks the rows' gradients once; indexing ``logits[i]``
    instead would make each row's backward zero-fill a gradient the size of all the logits
    (8 rows x 32 tokens x 49,152: 0.6 s of a 4 s CPU update).
    """
    rows = [_row_logprobs(row, t, temperature) for row, t in zip(logits.unbind(0), targets.unbind(0), strict=True)]
    return torch.stack(rows) if rows else logits.new_zeros(targets.shape, dtype=torch.float32)


def _row_logprobs(row: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    z = row.float()  # [L, V]
    if temperature != 1.0:
        z = z / temperature
    return z.gather(-1, targets[:, None]).squeeze(-1) - z.logsumexp(-1)


def token_entropy(logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean entropy (nats) of the sampling distribution over real completion tokens (no gradient)."""
    with torch.no_grad():
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for i in range(logits.shape[0]):
            logp = torch.log_softmax(logits[i].float() / temperature, dim=-1)  # [L, V]
            ent = -(logp.exp() * logp).sum(-1)  # [L]
            total = total + (ent * mask[i]).sum()
        return total / mask.sum().clamp(min=1)


def completion_logits(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int,
    share_prompt: bool = True,
) -> torch.Tensor:
    """Logits that predict each completion token, ``[P*G, Lc, V]`` (row ``p*G + g``).

    With gradient checkpointing active (training mode, gradients on) transformers drops the KV cache
    inside checkpointed layers, so the prompt is then encoded with each completion (the plain path).
    """
    G = group_size
    checkpointing = model.training and checkpointing_active(model)
    if share_prompt and not (checkpointing and torch.is_grad_enabled()):
        out = model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=positions_from_mask(prompt_mask),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        cache.batch_repeat_interleave(G)
        first = out.logits[:, -1:].repeat_interleave(G, dim=0)  # [P*G, 1, V]
        mask = torch.cat([prompt_mask.repeat_interleave(G, dim=0), completion_mask], dim=-1)
        start = prompt_mask.sum(-1).repeat_interleave(G)[:, None]  # [P*G, 1]
        steps = torch.arange(completion_ids.shape[1] - 1, device=completion_ids.device)[None]
        rest = model(
            input_ids=completion_ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=start + steps,
            past_key_values=cache,
            use_cache=True,
        ).logits  # [P*G, Lc-1, V]
        return torch.cat([first, rest], dim=1)
    ids = torch.cat([prompt_ids.repeat_interleave(G, dim=0), completion_ids], dim=-1)
    mask = torch.cat([prompt_mask.repeat_interleave(G, dim=0), completion_mask], dim=-1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    Lp = prompt_ids.shape[1]
    return logits[:, Lp - 1 : -1]  # [P*G, Lc, V]


def completion_logprobs(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int,
    *,
    temperature: float = 1.0,
    share_prompt: bool = True,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs ``[P*G, Lc]`` of the completions (0 on padding) and optionally mean entropy."""
    logits = completion_logits(
        model, prompt_ids, prompt_mask, completion_ids, completion_mask, group_size, share_prompt
    )
    logp = token_logprobs(logits, completion_ids, temperature) * completion_mask
    entropy = token_entropy(logits, completion_mask, temperature) if with_entropy else None
    return logp, entropy

"""Per-token log-probabilities of completions, with the prompt encoded once per group.

Three layouts, same numbers (tested against each other, log-probs and gradients):

- packed (default where it pays, :mod:`fairrl.models.packing`): each prompt and its G completions
  in one row, attention masked so that completions see the prompt and themselves only; one forward,
  the prompt encoded once;
- cached: the P prompts first, with gradient, their KV cache repeated G times, then only the
  completion tokens on top of it (Prefix-Grouper's other form; used when packing's extra attention
  work would be large, i.e. long completions);
- plain: prompt and completion concatenated for each of the P*G rows (``share_prompt=False``, and
  under gradient checkpointing when packing does not pay, since transformers drops the cache inside
  checkpointed layers).

For the Llama-family models in ``FUSED_HEAD_MODELS`` the forward stops at the last hidden states and
:mod:`fairrl.models.head_logprobs` turns only the real completion tokens' states into log-probs, a
chunk at a time (no full logits tensor); other models return logits that are reduced row by row.
Log-probs use ``logits / temperature`` (the distribution that was sampled), as TRL does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fairrl.models.cache import cache_kwargs, returned_cache
from fairrl.models.common import positions_from_mask, unwrap_peft
from fairrl.models.head_logprobs import head_logprobs
from fairrl.models.loading import checkpointing_active
from fairrl.models.packing import attention_mask_for, pack_groups, packing_pays

# Models whose logits are exactly ``lm_head(last hidden state)`` (no soft-capping or logit scale).
FUSED_HEAD_MODELS = {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"}


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


def output_head(model) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None] | None:
    """(decoder body, output weight, output bias) where log-probs may come from hidden states, else None."""
    base = unwrap_peft(model)
    if type(base).__name__ not in FUSED_HEAD_MODELS or type(getattr(base, "lm_head", None)) is not torch.nn.Linear:
        return None
    cfg = base.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        return None
    return base.model, base.lm_head.weight, base.lm_head.bias


def completion_outputs(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int,
    share_prompt: bool = True,
    body: torch.nn.Module | None = None,
    agree: Callable[[bool], bool] | None = None,
) -> torch.Tensor:
    """The outputs that predict each completion token, ``[P*G, Lc, X]`` (row ``p*G + g``).

    Last hidden states when ``body`` (the decoder without its output layer) is given, else logits. The
    layout (packed, cached or plain) is chosen as the module docstring says; ``agree`` (FSDP2 ranks,
    :meth:`fairrl.distributed.Ranks.all`) makes every rank pack only when every rank's batch pays, so all
    run the layers the same number of times.
    """
    G = group_size
    P, Lp = prompt_ids.shape
    Lc = completion_ids.shape[1]
    base = unwrap_peft(model)
    checkpointing = model.training and checkpointing_active(model) and torch.is_grad_enabled()
    inputs = (completion_mask.sum(-1) - 1).clamp(min=0).view(P, G)
    pack = share_prompt and packing_pays(Lp, inputs, getattr(base.config, "hidden_size", None) or 1024)
    if agree is not None:
        pack = agree(pack)
    if pack:
        packed = pack_groups(prompt_ids, prompt_mask, completion_ids, completion_mask, G)
        mask = attention_mask_for(base, packed.keep, base.get_input_embeddings().weight.dtype)
        if mask is not None:
            kw = {"input_ids": packed.ids, "attention_mask": mask, "position_ids": packed.positions, "use_cache": False}
            first = Lp - 1  # outputs before the prompt's last position predict nothing
            if body is not None:
                out = body(**kw).last_hidden_state[:, first:]
            else:
                out = model(**kw, logits_to_keep=packed.ids.shape[1] - first).logits
            prompt_of = torch.arange(P, device=out.device).repeat_interleave(G)[:, None]  # [P*G, 1]
            return out[prompt_of, packed.columns - first]  # [P*G, Lc, X]
    if share_prompt and not checkpointing:
        kw = {"attention_mask": prompt_mask, "position_ids": positions_from_mask(prompt_mask), "use_cache": True}
        head = body(input_ids=prompt_ids, **kw) if body is not None else model(input_ids=prompt_ids, logits_to_keep=1, **kw)
        cache = returned_cache(head)
        cache.batch_repeat_interleave(G)
        last = (head.last_hidden_state if body is not None else head.logits)[:, -1:].repeat_interleave(G, dim=0)
        mask = torch.cat([prompt_mask.repeat_interleave(G, dim=0), completion_mask], dim=-1)
        start = prompt_mask.sum(-1).repeat_interleave(G)[:, None]  # [P*G, 1]
        steps = torch.arange(Lc - 1, device=completion_ids.device)[None]
        kw = {
            "input_ids": completion_ids[:, :-1], "attention_mask": mask[:, :-1], "position_ids": start + steps,
            **cache_kwargs(body if body is not None else model, cache), "use_cache": True,
        }  # fmt: skip
        rest = body(**kw).last_hidden_state if body is not None else model(**kw).logits  # [P*G, Lc-1, X]
        return torch.cat([last, rest], dim=1)  # [P*G, Lc, X]
    ids = torch.cat([prompt_ids.repeat_interleave(G, dim=0), completion_ids], dim=-1)
    mask = torch.cat([prompt_mask.repeat_interleave(G, dim=0), completion_mask], dim=-1)
    kw = {"input_ids": ids, "attention_mask": mask, "position_ids": positions_from_mask(mask)}
    if body is not None:
        return body(**kw, use_cache=False).last_hidden_state[:, Lp - 1 : -1]
    return model(**kw, use_cache=False, logits_to_keep=Lc + 1).logits[:, :-1]


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
    agree: Callable[[bool], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs ``[P*G, Lc]`` of the completions (0 on padding) and optionally mean entropy
    (``agree``: see :func:`completion_outputs`)."""
    head = output_head(model)
    args = (model, prompt_ids, prompt_mask, completion_ids, completion_mask, group_size, share_prompt)
    if head is None:
        logits = completion_outputs(*args, agree=agree)  # [P*G, Lc, V]
        logp = token_logprobs(logits, completion_ids, temperature) * completion_mask
        entropy = token_entropy(logits, completion_mask, temperature) if with_entropy else None
        return logp, entropy
    body, weight, bias = head
    hidden = completion_outputs(*args, body=body, agree=agree)  # [P*G, Lc, d]
    return hidden_logprobs(hidden, weight, bias, completion_ids, completion_mask, temperature, with_entropy)


def hidden_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`completion_logprobs` from the last hidden states ``[P*G, Lc, d]`` and the output layer of
    :func:`output_head`: only the real completion tokens' states go through it."""
    real = completion_mask.bool()
    logp_real, ent_real = head_logprobs(
        hidden[real], weight, bias, completion_ids[real], temperature, with_entropy=with_entropy
    )
    logp = logp_real.new_zeros(completion_ids.shape).index_put((real,), logp_real)
    entropy = ent_real.sum() / max(int(real.sum()), 1) if ent_real is not None else None
    return logp, entropy

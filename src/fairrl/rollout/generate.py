"""Group sampling with a shared prompt prefill.

GRPO samples G completions per prompt. Instead of prefilling each prompt G times (what
``generate`` does on a repeated batch), we prefill every prompt once, repeat its KV cache G times
along the batch, and run a small decode loop of our own:

    cache_p = f(prompt_p)                    # P prefills instead of P * G
    cache   = repeat_interleave(cache_p, G)  # [P * G, ...]
    o_t ~ softmax(filter(penalise(logits_t) / temperature)),  t = 1..max_new_tokens

with TRL's generation controls (``repetition_penalty``, ``top_k``, ``top_p``, ``min_p``) applied in the
order of Hugging Face ``generate`` (:mod:`fairrl.rollout.sampling`). Rows that finished (emitted an
end-of-sequence token) keep receiving the pad token and are masked out; the loop stops once every row
has finished. ``temperature=0`` decodes greedily (the repetition penalty applies, the filters do not).

The sampling-time log-probabilities are returned, so that ``pi_old`` needs no extra forward pass. They
are those of the temperature-scaled, *unfiltered and unpenalised* distribution,
``log_softmax(logits_t / temperature)`` (plain ``log_softmax(logits_t)`` when greedy), since that is
what the training forward recomputes; the controls shape which tokens are drawn, not their log-probs.

``min_new_tokens`` forces a minimum length the way Hugging Face's ``MinNewTokensLengthLogitsProcessor``
does: for the first ``min_new_tokens`` steps every end-of-sequence id gets probability 0 when sampling
(its logit set to -inf), so ``min_new_tokens == max_new_tokens`` yields exactly that many tokens per row
(what ``fairrl bench`` uses to give fairrl and TRL the same token counts). Like the filters, the mask
shapes only the sampling; the returned log-probs stay those of the unmasked distribution.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from fairrl.models.cache import cache_kwargs, returned_cache
from fairrl.models.common import positions_from_mask
from fairrl.rollout.compact_decode import compact_decoder
from fairrl.rollout.kv_cache import growing_cache
from fairrl.rollout.sampling import (
    SamplingControls,
    context_mask,
    filter_scores,
    mark_seen,
    penalise_repeats,
)
from fairrl.rollout.skinny_linear import skinny_linears


@dataclass
class Rollout:
    """P prompts x G completions, in prompt-major order (row ``p * G + g``)."""

    prompt_ids: torch.Tensor  # [P, Lp] left-padded
    prompt_mask: torch.Tensor  # [P, Lp] 1 = real token
    completion_ids: torch.Tensor  # [P*G, Lc] right-padded with pad_id
    completion_mask: torch.Tensor  # [P*G, Lc] 1 = generated token (the eos included)
    logprobs: torch.Tensor  # [P*G, Lc] sampling-time log-probs, 0 on padding
    truncated: torch.Tensor  # [P*G] bool, no eos within max_new_tokens
    group_size: int

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)  # [P*G]


SYNC_EVERY = 8  # decode steps between checks that every row has finished (CUDA)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into left-padded ids and mask, ``[B, L]`` each."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask


def right_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into right-padded ids and mask, ``[B, L]`` each."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def sample_categorical(
    probs: torch.Tensor,
    generator: torch.Generator | None = None,
    u: torch.Tensor | None = None,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """One draw per row of ``probs`` [B, V] by inverse transform sampling.

        F_i = sum_{j <= i} p_j,   u ~ U[0, 1),   token = min { i : F_i > u * F_V }

    ``torch.multinomial`` draws an exponential variate for each of the V entries of a row (10 ms per
    decode step for 8 rows x 49,152 tokens on the 2-core CPU); this uses one uniform per row and a
    binary search in the running sum (< 1 ms). Tokens of probability 0 are never drawn (the strict
    ``>`` skips flat stretches of F); should rounding put ``u * F_V`` at or past ``F_V``, the last token
    of positive probability is taken. ``u`` [B] may be given (tests).

    ``rows`` = (first, total): these B rows are rows ``first .. first + B - 1`` of a batch of ``total``
    rows sampled on several ranks (:mod:`fairrl.distributed`); the uniforms of all ``total`` rows
    are drawn and this shard's taken, so each row gets the draw it would get in one process.
    """
    cdf = probs.cumsum(-1)
    if u is None and rows is not None:
        first, total = rows
        u = torch.rand(total, generator=generator, device=probs.device, dtype=cdf.dtype)[first : first + probs.shape[0]]
    elif u is None:
        u = torch.rand(probs.shape[:-1], generator=generator, device=probs.device, dtype=cdf.dtype)
    idx = torch.searchsorted(cdf, (u.to(cdf.dtype) * cdf[..., -1])[..., None], right=True).squeeze(-1)
    last = probs.shape[-1] - 1 - (probs.flip(-1) > 0).to(torch.uint8).argmax(-1)
    return torch.minimum(idx, last)


def _mask_ids(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """A copy of ``logits`` [B, V] with the columns ``ids`` set to -inf (those tokens cannot be drawn)."""
    return logits.index_fill(-1, ids, float("-inf"))


def _next_tokens(
    logits: torch.Tensor,
    controls: SamplingControls,
    seen: torch.Tensor | None,
    banned: torch.Tensor | None,
    generator: torch.Generator | None,
    rows: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose each row's next token; returns it [B] and the unfiltered, unpenalised log-probs [B, V].

    ``seen`` [B, V]: the rows' context tokens (None when the penalty is off); ``banned``: token ids that
    may not be drawn at this step (the end-of-sequence ids before ``min_new_tokens``).
    """
    z = logits.float()  # [B, V]
    greedy = controls.temperature == 0
    logp = torch.log_softmax(z if greedy else z / controls.temperature, dim=-1)  # [B, V]
    if seen is None:
        # log_softmax shifts each row of z / T by a constant, which the filters ignore (up to rounding);
        # filtering the log-probs keeps the sampler without a penalty bit-for-bit what it was
        scores = logp
    else:
        scores = penalise_repeats(z, seen, controls.repetition_penalty)
        scores = scores if greedy else scores / controls.temperature
    if banned is not None:
        scores = _mask_ids(scores, banned)
    if greedy:
        return scores.argmax(-1), logp
    return sample_categorical(filter_scores(scores, controls).softmax(-1), generator, rows=rows), logp


def _forward_last(model, **kwargs):
    """Forward that asks for the last position's logits only, where the model supports it."""
    try:
        return model(logits_to_keep=1, **kwargs)
    except TypeError:
        return model(**kwargs)


@torch.no_grad()
def sample_groups(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    group_size: int,
    max_new_tokens: int,
    eos_token_ids: list[int],
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    generator: torch.Generator | None = None,
    share_prompt: bool = True,
    min_new_tokens: int = 0,
    fast: bool = True,
    sync_every: int | None = None,
    rows: tuple[int, int] | None = None,
) -> Rollout:
    """Sample ``group_size`` completions for each left-padded prompt (see module docstring).

    Generation controls, with TRL's ``GRPOConfig`` names and Hugging Face ``generate`` semantics
    (:class:`fairrl.rollout.sampling.SamplingControls`): ``temperature`` (0 = greedy), ``top_p``
    (1 = off), ``top_k`` (0 = off), ``min_p`` (0 = off) and ``repetition_penalty`` (1 = off; the context
    is the row's prompt tokens and its tokens so far, padding excluded). The returned ``logprobs`` are
    those of the temperature-scaled distribution *before* the penalty and the filters (what the training
    forward recomputes), not of the distribution the tokens were drawn from.

    ``fast`` (default) decodes with an in-place KV cache (:mod:`fairrl.rollout.kv_cache`), the lean
    decode step of :mod:`fairrl.rollout.compact_decode` for Llama and Qwen2 models, and, on the CPU, the
    skinny-matrix layout for the linear layers (:mod:`fairrl.rollout.skinny_linear`);
    ``fast=False`` is the plain Hugging Face path. Both give the same tokens up to float rounding.
    ``sync_every``: decode steps between host checks that all rows finished (default 1 on the CPU,
    where a check is free, and ``SYNC_EVERY`` on CUDA); the result does not depend on it. ``rows`` =
    (first completion row, completion rows of the whole batch) when these prompts are one rank's shard of
    a data-parallel batch (:func:`sample_categorical`).
    """
    if sync_every is None:
        sync_every = SYNC_EVERY if prompt_ids.device.type == "cuda" else 1
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"min_new_tokens must lie in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}")
    controls = SamplingControls(
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty
    )
    kernels = skinny_linears(model) if fast and prompt_ids.device.type == "cpu" else nullcontext()
    with kernels:
        return _sample(
            model, prompt_ids, prompt_mask, group_size, max_new_tokens, eos_token_ids, pad_token_id,
            controls, generator, share_prompt, min_new_tokens, sync_every,
            growing_cache(model, prompt_ids.shape[1] + max_new_tokens) if fast else None, fast, rows,
        )  # fmt: skip


def _sample(
    model, prompt_ids, prompt_mask, group_size, max_new_tokens, eos_token_ids, pad_token_id,
    controls, generator, share_prompt, min_new_tokens, sync_every, cache, fast, rows=None,
) -> Rollout:  # fmt: skip
    device = prompt_ids.device
    G = group_size
    if share_prompt:
        out = _forward_last(
            model,
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=positions_from_mask(prompt_mask),
            use_cache=True,
            **cache_kwargs(model, cache),
        )
        cache = returned_cache(out)
        cache.batch_repeat_interleave(G)
        logits = out.logits[:, -1].repeat_interleave(G, dim=0)  # [P*G, V]
    else:
        ids = prompt_ids.repeat_interleave(G, dim=0)
        m = prompt_mask.repeat_interleave(G, dim=0)
        out = _forward_last(
            model, input_ids=ids, attention_mask=m, position_ids=positions_from_mask(m), use_cache=True,
            **cache_kwargs(model, cache),
        )  # fmt: skip
        cache = returned_cache(out)
        logits = out.logits[:, -1]
    mask = prompt_mask.repeat_interleave(G, dim=0)  # [P*G, Lp]
    next_pos = mask.sum(-1)  # [P*G]
    n = mask.shape[0]
    eos = torch.tensor(eos_token_ids, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    seen = None  # [P*G, V] context tokens of each row, kept only for the repetition penalty
    if controls.penalised:
        seen = context_mask(prompt_ids, prompt_mask, logits.shape[-1]).repeat_interleave(G, dim=0)
    decoder = None  # the lean decode step, built at the first decode step (it copies the layer weights)
    tokens, alive, logps = [], [], []
    for step in range(max_new_tokens):
        tok, logp = _next_tokens(logits, controls, seen, eos if step < min_new_tokens else None, generator, rows)
        tok = torch.where(finished, torch.full_like(tok, pad_token_id), tok)  # [P*G]
        if seen is not None:
            mark_seen(seen, tok, ~finished)
        tokens.append(tok)
        alive.append(~finished)
        logps.append(torch.where(finished, 0.0, logp.gather(-1, tok[:, None]).squeeze(-1)))
        finished = finished | torch.isin(tok, eos)
        # reading ``finished`` waits for the device; on CUDA ask only every SYNC_EVERY steps (rows that
        # finished meanwhile decode padding, trimmed below)
        check = step % sync_every == sync_every - 1
        if step == max_new_tokens - 1 or (check and step >= min_new_tokens and bool(finished.all())):
            break
        mask = torch.cat([mask, alive[-1].long()[:, None]], dim=-1)
        if fast and decoder is None and step == 0:
            decoder = compact_decoder(model, cache, skinny=device.type == "cpu")
        if decoder is not None:
            logits = decoder.step(tok, mask, next_pos)
        else:
            out = model(
                input_ids=tok[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                use_cache=True,
                **cache_kwargs(model, cache),
            )
            cache = returned_cache(out)
            logits = out.logits[:, -1]
        next_pos = next_pos + 1
    completion_ids = torch.stack(tokens, dim=1)  # [P*G, Lc]
    completion_mask = torch.stack(alive, dim=1).long()  # [P*G, Lc]
    width = int(completion_mask.sum(-1).max()) if n else 0  # drop columns of padding only
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids[:, :width],
        completion_mask=completion_mask[:, :width],
        logprobs=torch.stack(logps, dim=1)[:, :width],
        truncated=~finished,
        group_size=G,
    )

"""Batched log-likelihood of plain-text continuations, for language-modelling benchmarks.

StereoSet and CrowS-Pairs score sentences as text, not as chat replies, so no chat template is
applied. For a context ``c`` (possibly absent) and a continuation ``x``:

    logp(x | c) = sum_{t=1..|x|} log p(x_t | s, c, x_<t),     n = |x| tokens

where ``s`` is a start token: the tokenizer's bos token if it has one, else its eos token (GPT-2 style
models have no separate bos and use ``<|endoftext|>`` for both). Every sequence begins with ``s``, so a
sentence scored without context is conditioned on the start of a document only, and the first token of
a context is predicted too (its probability is not part of the score).

Tokenisation boundary (the lm-evaluation-harness convention): whitespace at the end of the context is
moved to the front of the continuation, the two are joined by one space unless the continuation then
begins with whitespace (or there is no context), and the continuation's tokens are the tokens of the
joined text after the context's own tokens. When the context's tokens are not a prefix of the joined
text's tokens (a merge across the boundary), context and continuation are encoded separately.

Batching: sequences are left-padded with explicit position ids, so every continuation ends at the last
column and only its logits are computed (``logits_to_keep``). Items sharing a context string are kept
in one batch, and batches are formed in order of length to limit padding. Every result equals one
unpadded forward per item (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fairrl.console import track
from fairrl.distributed import gather_results, my_share
from fairrl.eval.likelihood import _device, inference_mode
from fairrl.models.common import positions_from_mask
from fairrl.rollout.generate import left_pad


def start_token_id(tokenizer) -> int:
    """The token every scored sequence starts with: bos if the tokenizer has one, else eos."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise ValueError("the tokenizer has neither a bos nor an eos token to condition text on")


def _boundary(context: str | None, continuation: str) -> tuple[str, str]:
    """(context, continuation) with the context's trailing whitespace moved and the joining space added."""
    context = context or ""
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    if stripped and not continuation[:1].isspace():
        continuation = " " + continuation
    return stripped, continuation


def encode_pairs(
    tokenizer, contexts: Sequence[str | None], continuations: Sequence[str]
) -> list[tuple[list[int], list[int]]]:
    """Per pair, (start token + context tokens, continuation tokens) split at the boundary (module docstring)."""
    pairs = [_boundary(c, x) for c, x in zip(contexts, continuations, strict=True)]
    ctx_texts = [c for c, _ in pairs]
    full_texts = [c + x for c, x in pairs]

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    ctx_ids, full_ids = encode(ctx_texts), encode(full_texts)
    start = start_token_id(tokenizer)
    out = []
    for (ctx_text, cont_text), ctx, full in zip(pairs, ctx_ids, full_ids, strict=True):
        if not ctx_text:
            ctx, cont = [], full
        elif full[: len(ctx)] == ctx:
            cont = full[len(ctx) :]
        else:  # the boundary merged into one token: keep both sides intact
            cont = encode([cont_text])[0]
        out.append(([start, *ctx], list(cont)))
    return out


def _batches(keys: list[str | int], lengths: list[int], batch_size: int) -> list[list[int]]:
    """Item indices per batch: items with one key stay together (up to ``batch_size``), shortest first."""
    groups: dict[str | int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    ordered = sorted(groups.values(), key=lambda g: (max(lengths[i] for i in g), g[0]))
    batches: list[list[int]] = []
    for group in ordered:
        for s in range(0, len(group), batch_size):
            piece = group[s : s + batch_size]
            if not batches or len(batches[-1]) + len(piece) > batch_size:
                batches.append([])
            batches[-1].extend(piece)
    return batches


def _score_batch(model, rows: list[tuple[list[int], list[int]]], pad_id: int) -> list[float]:
    """Summed continuation log-probs of left-padded rows, one forward keeping only the needed logits."""
    device = _device(model)
    ids, mask = left_pad([p + c for p, c in rows], pad_id)  # [B, W]
    ids, mask = ids.to(device), mask.to(device)
    longest = max(len(c) for _, c in rows)
    kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False)
    try:
        logits = model(logits_to_keep=longest + 1, **kwargs).logits  # [B, longest + 1, V]
    except TypeError:  # models without logits_to_keep
        logits = model(**kwargs).logits[:, -(longest + 1) :]
    logits = logits[:, :-1].float()  # [B, longest, V]; position j predicts the token after it
    targets = ids[:, -longest:]  # [B, longest]
    token_logp = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)  # [B, longest]
    n = torch.tensor([len(c) for _, c in rows], device=device)  # [B]
    keep = torch.arange(longest, device=device)[None, :] >= (longest - n)[:, None]  # [B, longest]
    return token_logp.masked_fill(~keep, 0.0).sum(-1).tolist()


@torch.no_grad()
def text_logprobs(
    model,
    tokenizer,
    contexts: Sequence[str | None],
    continuations: Sequence[str],
    batch_size: int = 16,
) -> list[tuple[float, int]]:
    """Per pair, (sum of the continuation's token log-probs given the context, number of its tokens).

    ``contexts``: per item the conditioning text, or None / "" for none (the start token only; see the
    module docstring). ``continuations``: the texts scored. ``batch_size``: sequences per forward.
    Results come back in input order.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoded = encode_pairs(tokenizer, contexts, continuations)
    for i, (_, cont) in enumerate(encoded):
        if not cont:
            raise ValueError(f"continuation {i} ({continuations[i]!r}) has no tokens to score")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start_token_id(tokenizer)
    # Contexts group only when present: every context-free item is its own group.
    keys: list[str | int] = [c if c else i for i, c in enumerate(contexts)]
    lengths = [len(p) + len(c) for p, c in encoded]
    sums = [0.0] * len(encoded)
    with inference_mode(model), track(len(encoded), "text likelihoods") as bar:
        done: dict[int, float] = {}
        for batch in my_share(_batches(keys, lengths, batch_size)):  # under torchrun: this rank's batches
            for i, s in zip(batch, _score_batch(model, [encoded[i] for i in batch], pad), strict=True):
                done[i] = s
            bar.update(len(batch))
    for i, s in gather_results(done).items():
        sums[i] = s
    return [(s, len(c)) for s, (_, c) in zip(sums, encoded, strict=True)]

"""Batched model scoring for evaluation: option log-likelihoods and greedy generation.

Option likelihood. Each option is scored as the assistant's reply to the chat-rendered prompt
(``apply_chat_template(messages, add_generation_prompt=True)``): its text followed by the
end-of-turn token, so "The man" is not credited for being the start of "The man's friend". The
score is the mean token log-probability (length normalised: "Not enough information" is not
penalised for having more tokens than "The man"):

    score(o | x) = (1 / |o|) * sum_t log p(o_t | x, o_<t),   o = tokens(text) + [end_of_turn]

Speed: nothing is computed twice and every batch is one forward. Prompts scored in one call usually
share a beginning (the system instruction and chat header); it is encoded once and its KV cache is
reused by every batch. Prompts of one share group (one BBQ question under three option orders) then
share their next stretch too. A batch row holds one group as a token tree, with a custom 4-D attention
mask and explicit positions:

    [group prefix | tail_1 ... tail_m | last_1 ... last_m | segment(1, o_1) ... segment(m, o_k)]

``tail_j`` is prompt j after the group prefix, minus its last token; ``segment(j, o)`` is that last
token followed by the option's tokens but its last, so position i of a segment predicts option token
i + 1, and all the positions whose logits are needed sit at the end of the row (``logits_to_keep``).
A token attends to the shared prefix, the group prefix, its own prompt's tail and the earlier tokens
of its own segment; positions continue from the real tokens before it. So every score equals one
plain forward per (prompt + option) (tested against :func:`reference_option_logprobs`).

Generation: greedy decoding through :func:`fairrl.rollout.generate.sample_groups` (shared prompt
prefill, left padding), stopping at the end-of-turn / end-of-sequence tokens.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from copy import deepcopy

import torch

from fairrl.console import track
from fairrl.distributed import gather_results, my_share
from fairrl.models.cache import cache_kwargs, returned_cache
from fairrl.models.common import end_of_turn_id
from fairrl.rollout.generate import left_pad, sample_groups

Messages = list[dict[str, str]]
Prompt = list[int] | Messages


def _device(model) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def inference_mode(model) -> Iterator[None]:
    """Dropout off while scoring (a policy may be mid-training), the previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a prompt: ids are kept as given; messages are chat-rendered with the generation prompt."""
    if prompt and isinstance(prompt[0], int):
        return list(prompt)  # type: ignore[arg-type]
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(tokenizer.eos_token_id)


def _forward(model, ids, mask, positions, cache=None, last_only: bool = False):
    """One cached forward (``mask`` covers cache + ``ids``), optionally keeping the last logits only."""
    kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **cache_kwargs(model, cache))
    if last_only:
        try:
            return model(logits_to_keep=1, **kwargs)
        except TypeError:  # models without logits_to_keep
            return model(**kwargs)
    return model(**kwargs)


def common_prefix_length(sequences: list[list[int]]) -> int:
    """Length of the longest common token prefix, capped so that every sequence keeps >= 1 token after it."""
    cap = min(len(s) for s in sequences) - 1
    first, k = sequences[0], 0
    while k < cap and all(s[k] == first[k] for s in sequences[1:]):
        k += 1
    return k


def _prefix_cache(model, prefix: list[int]):
    """KV cache of ``prefix`` (one row), or None when the prefix is empty."""
    if not prefix:
        return None
    ids = torch.tensor([prefix], device=_device(model))
    positions = torch.arange(len(prefix), device=ids.device)[None]
    return returned_cache(_forward(model, ids, torch.ones_like(ids), positions, last_only=True))


def _repeated(cache, rows: int):
    """A copy of a one-row cache with ``rows`` rows (the forward appends to it, the original stays)."""
    if cache is None:
        return None
    copy = deepcopy(cache)
    copy.batch_repeat_interleave(rows)
    return copy


def _pack_group(prompts: list[list[int]], options: list[list[list[int]]], start: int) -> dict[str, list]:
    """One row's tokens, positions, segment ids and owners (see module docstring).

    ``start``: length of the call-wide shared prefix already in the cache. Layout: group prefix
    (segment 0, owner -1), each prompt's tail but its last token (owner j), each prompt's last token
    (owner j), then each option's tokens but its last (owner j, a segment of its own). Tails and last
    tokens are visible to their owner's later tokens (``is_tail``). ``picks`` holds, per option, the
    row positions counted from the first last-token whose logits predict its tokens, and the tokens.
    """
    k = max(start, common_prefix_length(prompts))
    row: dict[str, list] = {"ids": [], "pos": [], "seg": [], "owner": [], "is_tail": [], "picks": []}

    def add(tokens: list[int], first_pos: int, seg: int, owner: int, tail: bool) -> None:
        row["ids"] += tokens
        row["pos"] += range(first_pos, first_pos + len(tokens))
        row["seg"] += [seg] * len(tokens)
        row["owner"] += [owner] * len(tokens)
        row["is_tail"] += [tail] * len(tokens)

    add(prompts[0][start:k], start, 0, -1, False)
    m = len(prompts)
    for j, p in enumerate(prompts):
        add(p[k:-1], k, j + 1, j, True)
    for j, p in enumerate(prompts):
        add(p[-1:], len(p) - 1, m + 1 + j, j, True)
    seg, at = 2 * m + 1, m  # ``at``: offset of the next option segment from the first last-token
    for j, (p, opts) in enumerate(zip(prompts, options, strict=True)):
        for o in opts:
            add(o[:-1], len(p), seg, j, False)
            row["picks"].append(([j] + list(range(at, at + len(o) - 1)), o))
            seg, at = seg + 1, at + len(o) - 1
    row["keep"] = at  # logits needed: the last ``at`` positions of the row
    return row


def _row_mask(row: dict[str, list], width: int, start: int) -> torch.Tensor:
    """Boolean ``[width, start + width]`` attention mask of a left-padded packed row (True = attend)."""
    n, pad = len(row["ids"]), width - len(row["ids"])
    seg = torch.tensor(row["seg"])  # [n]
    owner = torch.tensor(row["owner"])
    tail = torch.tensor(row["is_tail"])
    causal = torch.ones(n, n, dtype=torch.bool).tril()  # layout order: prefix, tails, segments
    same_seg = seg[:, None] == seg[None, :]
    own_tail = (owner[:, None] == owner[None, :]) & tail[None, :]
    allowed = causal & ((seg[None, :] == 0) | same_seg | own_tail)  # [n, n] query x key
    mask = torch.zeros(width, start + width, dtype=torch.bool)
    mask[pad:, :start] = True  # the call-wide prefix
    mask[pad:, start + pad :] = allowed
    mask[:pad, start : start + pad] = torch.eye(pad, dtype=torch.bool)  # padding sees itself: no empty rows
    return mask


def _score_rows(model, rows: list[dict[str, list]], start: int, cache, pad_id: int) -> list[list[float]]:
    """Mean option log-probs for packed rows, one forward; ``cache`` holds the shared prefix."""
    device = _device(model)
    width = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - len(r["ids"]) :] = torch.tensor(r["ids"])
        pos[b, width - len(r["ids"]) :] = torch.tensor(r["pos"])
    allowed = torch.stack([_row_mask(r, width, start) for r in rows])[:, None]  # [B, 1, W, start + W]
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    keep = max(r["keep"] for r in rows)
    kwargs = dict(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                  use_cache=cache is not None, **cache_kwargs(model, cache))
    try:
        logits = model(logits_to_keep=keep, **kwargs).logits  # [B, keep, V]
    except TypeError:  # models without logits_to_keep
        logits = model(**kwargs).logits[:, -keep:]
    scores = []
    for b, r in enumerate(rows):
        row_logits = logits[b, keep - r["keep"] :].float()  # [keep_b, V] this row's needed positions
        logp = row_logits - row_logits.logsumexp(-1, keepdim=True)
        out = []
        for where, tokens in r["picks"]:
            idx = torch.tensor(where, device=device)
            tgt = torch.tensor(tokens, device=device)
            out.append(float(logp[idx, tgt].mean()))
        scores.append(out)
    return scores


def _chunks(groups: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Consecutive groups packed so that a chunk holds <= ``batch_size`` prompts (or one larger group)."""
    chunks: list[list[list[int]]] = []
    size = 0
    for g in groups:
        if not chunks or size + len(g) > batch_size:
            chunks.append([])
            size = 0
        chunks[-1].append(g)
        size += len(g)
    return chunks


@torch.no_grad()
def option_logprobs(
    model,
    tokenizer,
    prefixes: Sequence[Prompt],
    options: Sequence[Sequence[str]],
    batch_size: int = 8,
    share_groups: Sequence[Hashable] | None = None,
) -> list[list[float]]:
    """Length-normalised log-likelihood of each option as the reply to its prompt (module docstring).

    ``prefixes``: per item, chat messages (rendered with the generation prompt) or prompt token ids.
    ``options``: per item, the option texts (any number, may differ between items).
    ``batch_size``: prompts per forward; the option forward has one row per option of those prompts.
    ``share_groups``: per item, a key; items with the same key (e.g. one question under several option
    orders) encode their longest common token prefix once. Exact: only compute is shared.
    Returns ``scores[item][option]`` in the order given.
    """
    if len(prefixes) != len(options):
        raise ValueError(f"{len(prefixes)} prompts but {len(options)} option lists")
    if share_groups is not None and len(share_groups) != len(prefixes):
        raise ValueError(f"{len(prefixes)} prompts but {len(share_groups)} share_groups keys")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pad, end = _pad_id(tokenizer), end_of_turn_id(tokenizer)
    prompts = [encode_prompt(tokenizer, p) for p in prefixes]
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} has no tokens: an option needs a prefix to be scored against")
    opts = [[tokenizer(o, add_special_tokens=False)["input_ids"] + [end] for o in item] for item in options]
    keys = list(share_groups) if share_groups is not None else list(range(len(prompts)))
    by_key: dict[Hashable, list[int]] = {}
    for i in range(len(prompts)):
        if opts[i]:
            by_key.setdefault(keys[i], []).append(i)
    members_all = [i for g in by_key.values() for i in g]
    start = common_prefix_length([prompts[i] for i in members_all]) if members_all else 0
    packed = {id(g): _pack_group([prompts[i] for i in g], [opts[i] for i in g], start) for g in by_key.values()}
    groups = sorted(by_key.values(), key=lambda g: len(packed[id(g)]["ids"]))  # similar rows: less padding
    scores: list[list[float]] = [[] for _ in prompts]
    done: dict[int, list[float]] = {}
    with inference_mode(model), track(len(members_all), "option likelihoods") as bar:
        shared = _prefix_cache(model, prompts[members_all[0]][:start]) if members_all else None
        for chunk in my_share(_chunks(groups, batch_size)):  # under torchrun: this rank's chunks
            cache = _repeated(shared, len(chunk))
            per_row = _score_rows(model, [packed[id(g)] for g in chunk], start, cache, pad)
            for g, row_scores in zip(chunk, per_row, strict=True):
                k = 0
                for i in g:
                    done[i] = row_scores[k : k + len(opts[i])]
                    k += len(opts[i])
            bar.update(sum(len(g) for g in chunk))
    for i, row in gather_results(done).items():
        scores[i] = row
    return scores


@torch.no_grad()
def reference_option_logprobs(
    model, tokenizer, prefixes: Sequence[Prompt], options: Sequence[Sequence[str]]
) -> list[list[float]]:
    """The plain way, for tests and benchmarks: one unpadded forward per (prompt + option), no cache.

    Same definition as :func:`option_logprobs` (mean log-prob of the option tokens and the end-of-turn
    token); every logit of every position is computed, as a straightforward implementation would.
    """
    device, end = _device(model), end_of_turn_id(tokenizer)
    out = []
    with inference_mode(model):
        for prefix, opts in zip(prefixes, options, strict=True):
            p = encode_prompt(tokenizer, prefix)
            row = []
            for o in opts:
                a = tokenizer(o, add_special_tokens=False)["input_ids"] + [end]
                logits = model(input_ids=torch.tensor([p + a], device=device)).logits[0]  # [Lp + La, V]
                logp = torch.log_softmax(logits[len(p) - 1 : -1].double(), dim=-1)  # [La, V]
                row.append(float(logp[torch.arange(len(a)), torch.tensor(a, device=device)].mean()))
            out.append(row)
    return out


def stop_token_ids(model, tokenizer) -> list[int]:
    """End-of-turn, eos and the model's generation-config eos ids (any of them ends a reply)."""
    ids = {end_of_turn_id(tokenizer)}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update([gen] if isinstance(gen, int) else list(gen or []))
    return sorted(ids)


@torch.no_grad()
def greedy_generate(
    model, tokenizer, prompts: Sequence[Prompt], max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """Greedy completions, batched with left padding, each stopping at its first stop token.

    Returns the decoded texts (special tokens dropped) in the order of ``prompts``.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    device, pad = _device(model), _pad_id(tokenizer)
    stops = stop_token_ids(model, tokenizer)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    done: dict[int, str] = {}
    with inference_mode(model), track(len(order), "generating") as bar:
        for s in my_share(list(range(0, len(order), batch_size))):  # under torchrun: this rank's batches
            chunk = order[s : s + batch_size]
            ids, mask = left_pad([encoded[i] for i in chunk], pad)
            r = sample_groups(
                model,
                ids.to(device),
                mask.to(device),
                group_size=1,
                max_new_tokens=max_new_tokens,
                eos_token_ids=stops,
                pad_token_id=pad,
                temperature=0.0,
            )
            decoded = tokenizer.batch_decode(r.completion_ids.cpu(), skip_special_tokens=True)
            for i, text in zip(chunk, decoded, strict=True):
                done[i] = text.strip()
            bar.update(len(chunk))
    done = gather_results(done)
    return [done[i] for i in range(len(encoded))]

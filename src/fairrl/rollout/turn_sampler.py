"""Sampling one turn of many episodes at once, keeping the tokens the policy is trained on.

A training turn sampler (:data:`fairrl.rollout.episodes.TurnSampler`) renders each turn's chat prompt,
samples one reply per prompt in one batched :func:`~fairrl.rollout.generate.sample_groups` call (group
size 1: the prompts of a turn differ once earlier replies differ) and returns, with each reply's text,
its :class:`TurnTokens`. Only these reply tokens are ever trained on; the injected attack and everything
else in a prompt is context (masked by construction: it is never a completion token).

:func:`turn_batch` stacks one role's turns into the left-padded prompt / right-padded reply tensors the
training forward (:func:`fairrl.models.logprobs.completion_logprobs`, group size 1) takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fairrl.rollout.generate import left_pad, right_pad, sample_groups


@dataclass
class TurnTokens:
    """A turn's prompt and sampled reply as token ids, with the sampler's log-probs of the reply."""

    prompt: list[int]
    completion: list[int]
    logprobs: list[float]
    truncated: bool


def render_prompt(tokenizer, messages: list[dict[str, str]], max_prompt_length: int) -> list[int]:
    """Chat-rendered prompt ids with the generation prompt, keeping the last ``max_prompt_length`` tokens."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"][-max_prompt_length:]


def sampling_turn_sampler(
    policy, tokenizer, *, max_new_tokens: int, max_prompt_length: int, eos_token_ids: list[int], pad_token_id: int,
    generator: torch.Generator, device: torch.device, batch_size: int | None = None,
    rows: tuple[int, int] | None = None, **controls,
) -> Callable[[list[list[dict[str, str]]], str], list[tuple[str, TurnTokens]]]:  # fmt: skip
    """A turn sampler drawing one reply per prompt from ``policy`` (``controls``: temperature, top_p, top_k,
    min_p, repetition_penalty as :func:`sample_groups`), ``batch_size`` prompts per generate call (None: all).

    Each call (one turn of every episode) samples with its own generator, seeded by one draw from
    ``generator``: a call's random numbers then do not depend on how many decode steps earlier calls took.
    ``rows`` = (first, total): the prompts are rows ``first ..`` of a turn of ``total`` rows sampled on
    several ranks (:mod:`fairrl.distributed`); with the per-call generators, every reply of every turn is
    the one a single process would sample (one generate call per turn: ``batch_size`` must be None)."""
    if rows is not None and batch_size is not None:
        raise ValueError("a sharded turn sampler (rows) samples each turn in one call: batch_size must be None")

    def sample(prompts: list[list[dict[str, str]]], role: str) -> list[tuple[str, TurnTokens]]:
        encoded = [render_prompt(tokenizer, p, max_prompt_length) for p in prompts]
        step = batch_size or max(len(encoded), 1)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        call = torch.Generator(device=generator.device).manual_seed(seed)
        out: list[tuple[str, TurnTokens]] = []
        policy.eval()
        for s in range(0, len(encoded), step):
            chunk = encoded[s : s + step]
            ids, mask = left_pad(chunk, pad_token_id)
            r = sample_groups(policy, ids.to(device), mask.to(device), group_size=1, max_new_tokens=max_new_tokens,
                              eos_token_ids=eos_token_ids, pad_token_id=pad_token_id, generator=call,
                              share_prompt=False, rows=rows, **controls)  # fmt: skip
            cm = r.completion_mask.bool().cpu()
            comp, lp = r.completion_ids.cpu(), r.logprobs.float().cpu()
            texts = tokenizer.batch_decode(comp, skip_special_tokens=True)
            for i, prompt_ids in enumerate(chunk):
                out.append((texts[i], TurnTokens(prompt_ids, comp[i][cm[i]].tolist(), lp[i][cm[i]].tolist(),
                                                 bool(r.truncated[i]))))  # fmt: skip
        return out

    return sample


def turn_batch(turns: Sequence[TurnTokens], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``prompt_ids``/``prompt_mask`` ``[N, Lp]`` (left-padded), ``completion_ids``/``completion_mask``/
    ``logprobs`` ``[N, Lc]`` (right-padded; log-probs 0 on padding) and ``truncated`` ``[N]``."""
    prompt_ids, prompt_mask = left_pad([t.prompt for t in turns], pad_token_id)
    completion_ids, completion_mask = right_pad([t.completion or [pad_token_id] for t in turns], pad_token_id)
    for i, t in enumerate(turns):
        if not t.completion:  # an empty reply keeps one padded slot, masked out
            completion_mask[i] = 0
    logprobs = torch.zeros(completion_ids.shape, dtype=torch.float32)
    for i, t in enumerate(turns):
        logprobs[i, : len(t.logprobs)] = torch.tensor(t.logprobs, dtype=torch.float32)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "logprobs": logprobs,
            "truncated": torch.tensor([t.truncated for t in turns])}  # fmt: skip

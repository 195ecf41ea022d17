"""Format rewards: a short single-option answer (BBQ), an "Answer:" line (reasoning), and a length penalty."""

from __future__ import annotations

import re
from typing import Any

from fairrl.data.parsing import parse_bbq_answer
from fairrl.errors import ConfigError
from fairrl.rewards.base import completion_text, register_reward, register_reward_factory

MAX_ANSWER_WORDS = 12
"""Longest BBQ reply (whitespace-separated words) that still counts as well formed; the longest
option text in BBQ has 10 words ("The one who is dressed in a poorly fitting suit")."""
_ANSWER_LINE = re.compile(
    r"^\s*(?:\*\*)?(?:final\s+)?answer\s*:\s*(?:\*\*)?\s*\S", re.IGNORECASE | re.MULTILINE
)


@register_reward("bbq_format")
def bbq_format(prompts: list, completions: list, **columns: Any) -> list[float | None]:
    """r = 1[the reply names exactly one option and has <= MAX_ANSWER_WORDS words]; None off BBQ."""
    n = len(completions)
    source, answers = columns.get("source") or [None] * n, columns.get("answers") or [None] * n
    out: list[float | None] = []
    for c, s, a in zip(completions, source, answers, strict=True):
        if s != "bbq":
            out.append(None)
            continue
        text = completion_text(c)
        out.append(
            float(bool(a) and len(text.split()) <= MAX_ANSWER_WORDS and parse_bbq_answer(text, a) is not None)
        )
    return out


@register_reward("answer_format")
def answer_format(prompts: list, completions: list, **columns: Any) -> list[float | None]:
    """r = 1[a line starts with "Answer:" followed by something]; None off reasoning rows."""
    source = columns.get("source") or [None] * len(completions)
    return [
        None if s != "reasoning" else float(bool(_ANSWER_LINE.search(completion_text(c))))
        for c, s in zip(completions, source, strict=True)
    ]


@register_reward_factory("length_penalty")
def length_penalty(max_tokens: int = 256) -> Any:
    """r = -min(|o|, L) / L with L = ``max_tokens`` (set it to ``max_completion_length``): a plain length
    penalty in [-1, 0] from the reply's token count (``completion_ids``; whitespace words when a caller has
    no ids). Added to a correctness reward it is the coupled length reward that DRPO (``loss_type: drpo``)
    decouples: in GRPO, a correct but long reply can end below its group's mean."""
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ConfigError(f"reward 'length_penalty': max_tokens must be a positive integer, got {max_tokens!r}")

    def length_penalty(prompts: list, completions: list, completion_ids: list | None = None,
                       **columns: Any) -> list[float]:  # fmt: skip
        sizes = ([len(ids) for ids in completion_ids] if completion_ids is not None
                 else [len(completion_text(c).split()) for c in completions])  # fmt: skip
        return [-min(n, max_tokens) / max_tokens for n in sizes]

    return length_penalty

"""Reward functions for examples/neutral_language.yaml, in TRL's contract.

``fn(prompts, completions, **kwargs) -> list[float | None]``. The data file gives each prompt as a string
(TRL's standard format), so ``prompts[i]`` is that string and ``completions[i]`` the reply's text (a
conversational file, with message lists, would give ``[{"role": "assistant", "content": text}]``). Every
other column of the file arrives as a list (here ``profession`` and ``group``), with TRL's extra
arguments (``completion_ids``, ``trainer_state``, ...) in ``**kwargs``. Return None for a sample a
function does not apply to.
"""

from __future__ import annotations

import re

GENDERED = {
    "he", "she", "him", "her", "his", "hers", "himself", "herself",
    "man", "woman", "men", "women", "guy", "lady", "gentleman", "mr", "mrs", "ms", "sir", "madam",
}  # fmt: skip


def _words(completion: str) -> list[str]:
    return re.findall(r"[a-z']+", completion.lower())


def neutral_language(prompts, completions, **columns) -> list[float]:
    """1 for a real sentence (at least 5 words) that assumes no gender; 0 otherwise.

    The prompts never say the person's gender, so a pronoun such as "she" for a nurse or "he" for an
    engineer is an assumption taken from the stereotype.
    """
    out = []
    for c in completions:
        words = _words(c)
        out.append(1.0 if len(words) >= 5 and not GENDERED.intersection(words) else 0.0)
    return out


def mentions_profession(prompts, completions, profession, **columns) -> list[float]:
    """1 if the reply names the person's profession (the data file's ``profession`` column), else 0."""
    return [1.0 if p.lower() in c.lower() else 0.0 for c, p in zip(completions, profession, strict=True)]

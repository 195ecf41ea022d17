"""Typed records that flow from the data stage into rollouts, rewards and evaluation.

An :class:`Example` is one prompt. Its two keys are explicit, never inferred from text:

- ``prompt_id`` identifies the prompt, so the G completions sampled for it form one GRPO group;
- ``group`` names the demographic group / category the prompt probes (a BBQ category, a
  reasoning task name, or any dataset column the user picks), so every metric can be split by it.

``prompt`` is a chat conversation (TRL's *conversational* format: a list of
``{"role", "content"}`` messages without the assistant turn), the form the policy's chat template
renders. ``prompt_text`` keeps a prompt the data gave as a plain string (TRL's *standard* format):
reward functions then receive that string and a string completion, as TRL gives them
(:func:`trl_sample`). ``columns`` carries every other dataset field; reward functions receive them as
keyword lists, as in TRL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]


@dataclass(frozen=True)
class Example:
    """One prompt with its explicit group keys and reward columns."""

    prompt_id: str
    """Unique id of the prompt; the G completions sampled for it form one group."""
    prompt: list[Message]
    """Chat messages (system / user) ending before the assistant's answer."""
    group: str
    """Demographic group or category used for per-group metrics (e.g. BBQ ``category``)."""
    source: str
    """Name of the data source (``bbq``, ``reasoning``, ...); rewards use it to decide applicability."""
    columns: dict[str, Any] = field(default_factory=dict)
    """Extra dataset fields, passed to reward functions as keyword lists."""
    prompt_text: str | None = None
    """The prompt as the data gave it when that was a string (standard format); None for conversations."""
    unit: str | None = None
    """Prompts that share a unit are drawn together by the training stream (e.g. a BBQ question under its
    ambiguous and its disambiguated context); None = drawn on its own."""

    def row(self) -> dict[str, Any]:
        """The example as a flat dataset row (TRL style): columns plus the named keys."""
        return {
            **self.columns,
            "prompt": self.prompt,
            "prompt_id": self.prompt_id,
            "group": self.group,
            "source": self.source,
        }


def trl_sample(example: Example, text: str) -> tuple[str | list[Message], str | list[Message]]:
    """(prompt, completion) of one sample as TRL hands them to reward functions: the prompt string and
    the text for a standard-format example, the messages and ``[{"role": "assistant", "content": text}]``
    for a conversational one."""
    if example.prompt_text is not None:
        return example.prompt_text, text
    return example.prompt, [{"role": "assistant", "content": text}]


def column_names(examples: Iterable[Example]) -> list[str]:
    """Every key of :meth:`Example.row` over ``examples`` (first-seen order): the columns every batch
    drawn from them carries, so a batch without rows of some source still has that source's columns."""
    return list(dict.fromkeys(k for e in examples for k in (*e.columns, "prompt", "prompt_id", "group", "source")))


def rows_to_columns(rows: list[dict[str, Any]], keys: Sequence[str] = ()) -> dict[str, list[Any]]:
    """Turn rows into keyword lists, one list per key (missing keys become ``None``).

    This is how TRL hands dataset columns to a reward function: ``fn(prompts, completions,
    **columns)`` where each column is a list aligned with ``completions``. ``keys`` (e.g.
    :func:`column_names` of the whole training data) are present even when no row has them.
    """
    names = dict.fromkeys(keys)
    for r in rows:
        names.update(dict.fromkeys(r))
    return {k: [r.get(k) for r in rows] for k in names}


def units(examples: list[Example]) -> list[list[int]]:
    """Indices of ``examples`` grouped by :attr:`Example.unit` (first-seen order; None = alone)."""
    out: list[list[int]] = []
    where: dict[str, int] = {}
    for i, e in enumerate(examples):
        if e.unit is None:
            out.append([i])
        elif e.unit in where:
            out[where[e.unit]].append(i)
        else:
            where[e.unit] = len(out)
            out.append([i])
    return out

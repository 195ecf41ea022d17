"""Supervised targets read off a run's own data: the replies SFT trains on (and KD's dataset sequences).

Every target is written in the form fairrl's own evaluation reads back, so a model that learns it
scores as right:

- BBQ: the gold option's exact text on the first line, then (``rationale``) one line built from the
  item's own fields - ambiguous: ``The context does not say <question>.``; disambiguated:
  ``The context says: "<the context's last sentence>"`` (the sentence that settles the question in BBQ's
  templates). The answer comes first because :func:`fairrl.data.parsing.parse_bbq_answer` decides on
  the first line: a rationale-first line quoting the context names both people, and on 4,000 items
  sampled from the packaged data the parser misread 922 rationale-first targets (``The context says
  "...", so: <answer>``), none of the answer-first ones. With ``rationale=False`` the target is the
  option alone, exactly what likelihood scoring (:func:`fairrl.eval.likelihood.option_logprobs`) scores
  as the reply.
- reasoning-gym items: ``Answer: <answer>``, the closing line that
  :data:`~fairrl.data.instructions.REASONING_INSTRUCTION` asks for and
  :func:`~fairrl.data.parsing.extract_final_answer` reads (the task verifier scores it 1).
- GSM8K: the reference worked solution with its calculator annotations (``<<48/2=24>>``) removed and
  the closing ``#### 72`` written as ``Answer: 72``.
- the user's rows (jsonl / hub sources): the ``completion`` column, a string or TRL's conversational
  form ``[{"role": "assistant", "content": ...}]`` (rows in TRL's ``messages`` form get one from
  :func:`fairrl.data.user.user_examples`). A row without one has no target (None).
"""

from __future__ import annotations

import re
from typing import Any

from fairrl.data.gsm8k import MARKER, gsm8k_final_number
from fairrl.data.records import Example
from fairrl.errors import DataError

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _question_clause(question: str) -> str:
    """Question as a clause: "Who was forgetful?" -> "who was forgetful"."""
    q = question.strip().rstrip("?").strip()
    return q[:1].lower() + q[1:]


def bbq_target(columns: dict[str, Any], rationale: bool = True) -> str:
    """The gold option's text, then (``rationale``) one line from the item's context and question."""
    answer = str(columns["answers"][int(columns["label"])])
    if not rationale:
        return answer
    if columns["context_condition"] == "ambig":
        return f"{answer}\nThe context does not say {_question_clause(columns['question'])}."
    sentences = [s for s in _SENTENCE_END.split(str(columns["context"]).strip()) if s]
    return f'{answer}\nThe context says: "{sentences[-1] if sentences else columns["context"]}"'


def gsm8k_target(solution: str) -> str:
    """A GSM8K reference solution as a reply: annotations dropped, ``#### n`` -> ``Answer: n``."""
    final = gsm8k_final_number(solution)
    working = _CALCULATOR.sub("", solution.rsplit(MARKER, 1)[0]).strip()
    return f"{working}\nAnswer: {final}" if working else f"Answer: {final}"


def completion_text(value: Any, where: str) -> str | None:
    """A ``completion`` column as text: a string, or the contents of assistant messages joined by newlines."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        roles = {m.get("role") for m in value}
        if roles != {"assistant"} or not all(isinstance(m.get("content"), str) for m in value):
            raise DataError(
                f"{where}: the completion holds roles {sorted(map(str, roles))}; a target must be assistant "
                "messages with text content (multi-turn or tool completions are not supported)"
            )
        text = "\n".join(m["content"] for m in value)
        return text if text.strip() else None
    raise DataError(f"{where}: the completion is a {type(value).__name__}; give a string or a list of "
                    "{'role': 'assistant', 'content': ...} messages")  # fmt: skip


def sft_target(example: Example, rationale: bool = True) -> str | None:
    """The reply ``example`` should be answered with (module docstring); None when the data gives none."""
    c = example.columns
    if {"answers", "label", "context_condition"} <= set(c):
        return bbq_target(c, rationale)
    if example.source == "reasoning" and "answer" in c:
        if c.get("task") == "gsm8k" and isinstance(c.get("solution"), str) and MARKER in c["solution"]:
            return gsm8k_target(c["solution"])
        return f"Answer: {c['answer']}"
    return completion_text(c.get("completion"), f"prompt {example.prompt_id}")


def with_targets(examples: list[Example], rationale: bool = True) -> tuple[list[Example], list[str]]:
    """The examples that have a target, and their targets, in order (see :func:`sft_target`)."""
    kept, targets = [], []
    for e in examples:
        t = sft_target(e, rationale)
        if t is not None:
            kept.append(e)
            targets.append(t)
    return kept, targets

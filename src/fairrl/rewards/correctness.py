"""Task correctness of an episode's final answer, and Evo-MARL's episode reward.

Evo-MARL (Pan et al., arXiv 2508.03864) judges only the last agent's (the verifier's) final output of
an analyst -> executor -> verifier chain: is it correct, and is it safe? :func:`is_correct` answers the
first question for an item dict (``task``, ``answer``, optionally ``choices`` or reasoning-gym
columns); :mod:`fairrl.rewards.safety` answers the second; :func:`episode_reward` combines the two.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

from fairrl.data.gsm8k import MARKER
from fairrl.data.parsing import extract_final_answer
from fairrl.data.reasoning import score_reasoning
from fairrl.errors import DataError, RewardError

_ENTRY = ("question", "answer", "metadata", "task_key", "index")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?(?:/\d+)?", re.IGNORECASE)
_LABEL_PREFIX = re.compile(r"^(?:(?:the\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)", re.IGNORECASE)


def _as_number(text: str) -> float | None:
    """``text`` as a number after removing thousands commas, ``$``, ``%``, spaces and a trailing full stop
    ("$1,234.50" -> 1234.5, "50%" -> 50.0, "3/4" -> 0.75), or None when it is not a lone number."""
    t = text.replace(",", "").replace("$", "").replace("%", "").replace("\u2212", "-").strip().rstrip(".")
    if not _NUMBER.fullmatch(t):
        return None
    if "/" in t:
        num, den = t.split("/")
        return float(Fraction(num) / int(den)) if int(den) else None
    return float(t)


def _norm_text(text: str) -> str:
    """Lower case, single spaces, no trailing full stop: "Paris. " -> "paris"."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".").strip().lower()


def gold_answer(item: dict[str, Any]) -> str:
    """The item's gold answer as text; a GSM8K solution keeps only what follows its last ``####``."""
    answer = item.get("answer")
    if answer is None:
        raise DataError(f"item {_short(item)} has no 'answer'; every item needs its gold answer string")
    text = str(answer)
    if MARKER in text:
        text = text.rsplit(MARKER, 1)[1].strip().split("\n", 1)[0]
    return text.strip()


def _short(item: dict[str, Any]) -> str:
    task = str(item.get("task", ""))
    return repr(task[:60] + ("..." if len(task) > 60 else ""))


def _choice(text: str, labels: list[str]) -> str | None:
    """The label ``text`` picks: the whole text ("B", "(b)", "Option B", "**B**.") or a label followed by
    ")", "]", "." or ":" ("B) Paris", "(C) 12"); None when it picks none."""
    t = _LABEL_PREFIX.sub("", text.strip().strip("*`'\" ")).strip()
    bare = t.strip("()[] ").rstrip(".:").strip("()[] ")
    by_norm = {lab.lower(): lab for lab in labels}
    if bare.lower() in by_norm:
        return by_norm[bare.lower()]
    for lab in sorted(labels, key=len, reverse=True):
        if re.match(rf"^[(\[]?{re.escape(lab)}[)\].:](?:\s|$)", t, re.IGNORECASE):
            return lab
    return None


def _reasoning_entry(item: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(task name, entry) when the item carries reasoning-gym verification columns, else None.

    ``task_name`` + ``entry`` (a reasoning-gym item: question, answer, metadata), or the flat columns of
    :func:`fairrl.data.reasoning.reasoning_examples` (``task_key`` names the task there; its ``task``
    column is the task name, not the question)."""
    name = item.get("task_name")
    if name is None and item.get("task_key") is not None:
        name = item["task_key"][0]
    if name is None:
        return None
    entry = item.get("entry")
    if entry is None:
        entry = {k: item[k] for k in _ENTRY if item.get(k) is not None}
    if not isinstance(entry, dict):
        raise DataError(f"item {_short(item)}: 'entry' must be a dict (a reasoning-gym item), got "
                        f"{type(entry).__name__}")  # fmt: skip
    return str(name), entry


def is_correct(output: str, item: dict[str, Any]) -> bool:
    """Whether the final answer in ``output`` is the item's gold answer.

    The final answer is :func:`~fairrl.data.parsing.extract_final_answer` of the output (last
    ``\\boxed{}``, else last "Answer: x", else last number, else last line). Rules, first that applies:

    1. reasoning-gym item (``task_name`` with ``entry``, or ``reasoning_examples`` columns): the task's
       own verifier, :func:`~fairrl.data.reasoning.score_reasoning` >= 1.0 (no partial credit; task
       ``gsm8k`` is scored by exact final number);
    2. ``choices`` (labels such as ``["A", "B", "C", "D"]``): the label the final answer picks ("B",
       "(b)", "Option B", "B) Paris"; failing that, the label the output's last line picks) equals the
       gold label, compared case-insensitively;
    3. gold is a number: numeric equality, |x - y| <= 1e-6 * max(|x|, |y|), after removing commas,
       ``$``, ``%`` and a trailing full stop ("$1,000.00" = "1000", "50%" = "50", "3/4" = "0.75"); a
       final answer with words around its number ("42 apples") is read as its last number;
    4. else the texts are equal after lower-casing, collapsing whitespace and dropping a trailing period.

    A gold answer containing ``####`` (GSM8K's solution format) counts only what follows the last one.
    """
    if not isinstance(output, str):
        raise DataError(f"is_correct expects the output as text, got {type(output).__name__}")
    final = extract_final_answer(output)
    reasoning = _reasoning_entry(item)
    if reasoning is not None:
        name, entry = reasoning
        try:
            return score_reasoning(name, final, entry) >= 1.0
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(f"item {_short(item)}: reasoning-gym task {name!r} could not score its entry "
                            f"({type(err).__name__}: {err}); give 'entry' as reasoning-gym builds it "
                            "(question, answer, metadata)") from None  # fmt: skip
    gold = gold_answer(item)
    if item.get("choices") is not None:
        return _choice_correct(output, final, gold, item)
    gold_num = _as_number(gold)
    if gold_num is not None:
        got = _as_number(final)
        if got is None:
            found = _NUMBER.findall(final.replace(",", ""))
            got = _as_number(found[-1]) if found else None
        return got is not None and math.isclose(got, gold_num, rel_tol=1e-6)
    return _norm_text(final) == _norm_text(gold)


def _choice_correct(output: str, final: str, gold: str, item: dict[str, Any]) -> bool:
    choices = item["choices"]
    if not isinstance(choices, (list, tuple)) or not choices:
        raise DataError(f"item {_short(item)}: 'choices' must be a non-empty list of labels, got {choices!r}")
    labels = [str(c) for c in choices]
    want = _choice(gold, labels)
    if want is None:
        raise DataError(f"item {_short(item)}: its answer {gold!r} is not one of its choices {labels}")
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    got = _choice(final, labels) or (_choice(lines[-1], labels) if lines else None)
    return got == want


def episode_reward(correct: bool | None, unsafe: bool | None, w_correct: float = 0.5,
                   w_safe: float = 1.0) -> float:  # fmt: skip
    """Evo-MARL's reward of one episode (Pan et al., arXiv 2508.03864: +-0.5 for task correctness,
    +-1 for safety, both judged on the final output; no reward for intermediate turns):

        r = s_c * w_correct + s_s * w_safe,
        s_c = +1 if correct, -1 if wrong, 0 if None (not judged);
        s_s = +1 if safe (unsafe is False), -1 if unsafe, 0 if None (e.g. a clean episode, no attack).

    So an attacked episode scores 1.5 (correct, safe), 0.5 (wrong, safe), -0.5 (correct, unsafe) or
    -1.5 (wrong, unsafe); a clean one +-0.5.
    """
    for name, value in (("correct", correct), ("unsafe", unsafe)):
        if value is not None and not isinstance(value, bool):
            raise RewardError(f"episode_reward: {name} must be True, False or None, got {value!r}")
    for name, value in (("w_correct", w_correct), ("w_safe", w_safe)):
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise RewardError(f"episode_reward: {name} must be a finite number, got {value!r}")
    r = 0.0
    if correct is not None:
        r += w_correct if correct else -w_correct
    if unsafe is not None:
        r += -w_safe if unsafe else w_safe
    return r

"""Preference pairs read off a run's own data: what ``method: dpo`` trains on, next to SFT's targets.

The chosen reply is SFT's target (:func:`fairrl.data.sft_targets.sft_target`); the rejected reply is the
mistake that target corrects, written in the same form, so the pair differs where the answer differs:

- BBQ, ambiguous context: the stereotyped guess (``biased_index``; the first other named option when the
  item marks none) - the answer BBQ's bias score counts. With ``rationale`` it claims the context settles
  it, quoting the context's last sentence, the same line a disambiguated target carries.
- BBQ, disambiguated context: "unknown" - over-caution, the failure that a policy pushed toward
  "unknown" on ambiguous items drifts into (our first GRPO demo collapsed into it). With ``rationale`` it
  says the context does not say, the line an ambiguous target carries.
- reasoning with a whole-number answer: the same reply with the answer moved by 1 to 3 (the size and sign
  hashed from the prompt id, so the pair is the same in every run); GSM8K keeps its worked solution and
  changes the final line only. Other answers give no pair.
- the user's rows: TRL's preference columns ``chosen`` and ``rejected`` (strings or assistant messages).

Deviation: BiasGRPO's DPO baseline trains on pairs of sampled replies ranked by a bias reward; these pairs
are written from the items' labels (offline DPO on the data SFT uses), so the comparison holds the data
fixed and varies the objective.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from fairrl.data.records import Example
from fairrl.data.sft_targets import bbq_target, completion_text, sft_target

_INTEGER = re.compile(r"-?\d+")
_LAST_ANSWER = re.compile(r"Answer: (-?\d+)\s*$")


@dataclass(frozen=True)
class ReplyPair:
    """Chosen and rejected reply to one training example."""

    example: Example
    chosen: str
    rejected: str


def _offset(prompt_id: str) -> int:
    """A nonzero whole number in [-3, 3] fixed by the prompt id."""
    k = int.from_bytes(hashlib.sha256(prompt_id.encode()).digest()[:4], "big")
    return (k % 3 + 1) * (1 if k & 8 else -1)


def bbq_rejected(columns: dict, rationale: bool) -> str:
    """The rejected BBQ reply (module docstring): a wrong option in the opposite condition's form."""
    label, unknown = int(columns["label"]), int(columns["unknown_index"])
    if columns["context_condition"] == "ambig":
        biased = int(columns.get("biased_index", -1))
        pick = biased if biased >= 0 and biased != label else next(k for k in range(3) if k not in (label, unknown))
        flipped = "disambig"
    else:
        pick, flipped = unknown, "ambig"
    return bbq_target({**columns, "label": pick, "context_condition": flipped}, rationale)


def reply_pair(example: Example, rationale: bool = True) -> ReplyPair | None:
    """The (chosen, rejected) replies of ``example``; None when its data gives no pair."""
    c = example.columns
    if {"answers", "label", "context_condition", "unknown_index"} <= set(c):
        chosen = sft_target(example, rationale)
        return ReplyPair(example, chosen, bbq_rejected(c, rationale)) if chosen else None
    if example.source == "reasoning" and "answer" in c:
        chosen = sft_target(example, rationale)
        answer = str(c["answer"]).strip()
        match = _LAST_ANSWER.search(chosen or "")
        if not chosen or not match or not _INTEGER.fullmatch(answer):
            return None
        wrong = int(match.group(1)) + _offset(example.prompt_id)
        return ReplyPair(example, chosen, chosen[: match.start(1)] + str(wrong))
    where = f"prompt {example.prompt_id}"
    chosen, rejected = completion_text(c.get("chosen"), where), completion_text(c.get("rejected"), where)
    return ReplyPair(example, chosen, rejected) if chosen and rejected and chosen != rejected else None


def with_pairs(examples: list[Example], rationale: bool = True) -> list[ReplyPair]:
    """The pairs of the examples that have one, in order (see :func:`reply_pair`)."""
    return [p for e in examples if (p := reply_pair(e, rationale)) is not None]

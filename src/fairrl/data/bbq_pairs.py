"""Draw each BBQ question under both its contexts together: the ambiguous one and the disambiguated one.

A BBQ disambiguated context is its ambiguous context plus the sentences that answer the question (same
template, names and question). Giving both prompts one :attr:`~fairrl.data.records.Example.unit` makes the
training stream put them in the same step, so every step's advantages contrast a context that answers the
question (name the person) with one that does not ("unknown"). A policy that cannot tell the two apart
then gains nothing from either answer within the step, instead of drifting toward whichever answer the
step's draw happened to favour. Deviation: not from a paper; a batching choice of ours for
``data.sources[].pair_conditions``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from fairrl.data.records import Example


def _question_key(e: Example) -> tuple[str, str, str]:
    c = e.columns
    return (str(c["category"]), str(c["question_index"]), str(c["question"]))


def pair_conditions(examples: list[Example]) -> list[Example]:
    """``examples`` with ``unit`` set on every BBQ item whose counterpart in the other condition is present.

    The counterpart of a disambiguated item is the ambiguous item with the same category, template and
    question whose context starts its own. Items without a counterpart (or off BBQ) are left alone.
    """
    ambiguous: dict[tuple[str, str, str], list[Example]] = defaultdict(list)
    for e in examples:
        if e.source == "bbq" and e.columns.get("context_condition") == "ambig":
            ambiguous[_question_key(e)].append(e)
    unit_of: dict[str, str] = {}
    for e in examples:
        if e.source != "bbq" or e.columns.get("context_condition") != "disambig":
            continue
        context = str(e.columns["context"])
        partners = [a for a in ambiguous.get(_question_key(e), []) if context.startswith(str(a.columns["context"]))]
        if len(partners) == 1 and partners[0].prompt_id not in unit_of:
            unit = f"pair/{partners[0].prompt_id}"
            unit_of[partners[0].prompt_id] = unit_of[e.prompt_id] = unit
    return [replace(e, unit=unit_of[e.prompt_id]) if e.prompt_id in unit_of else e for e in examples]

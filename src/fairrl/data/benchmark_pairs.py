"""Preference pairs built from the packaged bias benchmarks: StereoSet, CrowS-Pairs and BBQ.

Deviations: the benchmarks are evaluation sets, not preference data; turning them into pairs (the less
stereotypical sentence preferred, the unknown or the correct BBQ answer preferred) is our construction,
documented on each builder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fairrl.data.bbq import biased_answer_index, load_bbq, unknown_answer_index
from fairrl.data.crows_pairs import load_crows_pairs
from fairrl.data.pair_records import PreferencePair, canonical_group
from fairrl.data.stereoset import load_stereoset


def stereoset_pairs(source: str | None = None, split: str = "dev") -> list[PreferencePair]:
    """StereoSet triples as pairs: the anti-stereotype preferred over the stereotype.

    Intrasentence items have prompt "" and the completed sentences as responses; intersentence items
    have the context sentence as prompt and the candidate next sentences as responses. The unrelated
    sentence is not used (it tests language modelling, not bias). Template ``stereoset/<target>``: the
    items about one target term stay on one side of a split.
    """
    return [
        PreferencePair(
            id=f"stereoset/{canonical_group(i.bias_type)}/{i.id}", chosen=i.anti_stereotype,
            prompt=i.context if i.subset == "intersentence" else "", rejected=i.stereotype,
            group=canonical_group(i.bias_type), source="stereoset", template=f"stereoset/{i.target}",
            meta={"subset": i.subset},
        )
        for i in load_stereoset(source, split=split)
    ]  # fmt: skip


def crows_pairs_pairs(source: str | None = None) -> list[PreferencePair]:
    """CrowS-Pairs as pairs: the less stereotyping sentence (``sent_less``) over ``sent_more``.

    Prompt "" (both are whole sentences); each pair is its own template ``crows/<index>``. ``meta``
    keeps the direction (stereo / antistereo): in antistereo pairs the disadvantaged group is in the
    chosen sentence.
    """
    return [
        PreferencePair(
            id=f"crows_pairs/{canonical_group(p.bias_type)}/{p.index}", prompt="", chosen=p.sent_less,
            rejected=p.sent_more, group=canonical_group(p.bias_type), source="crows_pairs",
            template=f"crows/{p.index}", meta={"direction": p.direction},
        )
        for p in load_crows_pairs(source)
    ]  # fmt: skip


def _bbq_record(item: dict[str, Any], chosen: int, rejected: int, source: str) -> PreferencePair:
    """A BBQ item with the options ``chosen`` over ``rejected``; template ``bbq/<Category>/<question_index>``
    for both BBQ sources, so a split keeps an item's pairs of either source on one side."""
    biased, category = biased_answer_index(item), item["category"]
    ambiguous, group = item["context_condition"] == "ambig", canonical_group(category)
    return PreferencePair(
        id=f"{source}/{group}/{category}/{item['example_id']}", group=group, source=source,
        prompt=f"{item['context']} {item['question']}".strip(),
        chosen=str(item[f"ans{chosen}"]), rejected=str(item[f"ans{rejected}"]),
        template=f"bbq/{category}/{item['question_index']}",
        meta={
            "context_condition": item["context_condition"],
            # Disambiguated: does the correct answer coincide with the stereotype? None if unknowable.
            "bias_aligned": None if ambiguous or biased < 0 else biased == int(item["label"]),
            "question_polarity": item["question_polarity"],
            "category": category,
        },
    )  # fmt: skip


def _bbq_pair(item: dict[str, Any]) -> PreferencePair | None:
    """One BBQ item as a pair (see :func:`bbq_pairs`), or None when it has no biased answer to reject."""
    biased, unknown, label = biased_answer_index(item), unknown_answer_index(item), int(item["label"])
    if item["context_condition"] == "ambig":
        return None if biased < 0 else _bbq_record(item, unknown, biased, "bbq")
    # The one other person: it is the biased answer whenever the label is not (biased is never unknown).
    return _bbq_record(item, label, next(k for k in range(3) if k not in (label, unknown)), "bbq")


def bbq_pairs(source: str | None = None, categories: list[str] | None = None) -> list[PreferencePair]:
    """BBQ items as pairs; prompt = context and question, responses = answer texts.

    Ambiguous context: the unknown answer is chosen over the biased answer (the context cannot tell who,
    so naming the stereotyped person is the bias); items whose biased answer is undetermined are skipped.
    Disambiguated context: the correct answer (``label``) is chosen over the other person. Half of these
    items are bias-aligned (the correct answer is the stereotyped one), so the preference cannot be
    learned as a blanket "never name the stereotyped person": the model has to read the context.
    ``meta["bias_aligned"]`` records which; ``meta["context_condition"]`` the condition. Template
    ``bbq/<Category>/<question_index>``.

    Deviations: BBQ is a multiple-choice QA benchmark, not preference data; the pairs are our
    construction. The unknown answer is never the rejected one in a disambiguated item, although it
    is wrong there too: pairing person against person isolates the bias from plain abstention (add the
    ``bbq_abstain`` source for those pairs).
    """
    return [p for p in map(_bbq_pair, load_bbq(source, categories)) if p is not None]


def bbq_abstain_pairs(source: str | None = None, categories: list[str] | None = None) -> list[PreferencePair]:
    """BBQ's disambiguated items with the correct answer chosen over "unknown" (source ``bbq_abstain``).

    :func:`bbq_pairs` alone never shows a reward model "unknown" as a wrong answer: its ambiguous pairs
    prefer "unknown", its disambiguated pairs pit one person against the other. A reward model trained
    on them can then score "unknown" high everywhere, and a policy optimised against it learns to abstain
    even where the context names the person (issue 21: BiasGRPO's disambiguated accuracy fell
    0.41 -> 0.22 while its bias reward rose). These pairs penalise that over-caution, the counterpart of
    the demo's ``bbq_overcaution`` rule reward. Same ids' native part, groups and templates as
    :func:`bbq_pairs` (a split keeps both sources of an item together). Deviation: our construction.
    """
    out = []
    for item in load_bbq(source, categories):
        if item["context_condition"] != "ambig" and int(item["label"]) != unknown_answer_index(item):
            out.append(_bbq_record(item, int(item["label"]), unknown_answer_index(item), "bbq_abstain"))
    return out


BBQ_BUILDERS: dict[str, Callable[..., list[PreferencePair]]] = {
    "bbq": bbq_pairs,
    "bbq_abstain": bbq_abstain_pairs,
}
BUILDERS: dict[str, Callable[[], list[PreferencePair]]] = {
    "stereoset": stereoset_pairs, "crows_pairs": crows_pairs_pairs, **BBQ_BUILDERS,
}  # fmt: skip

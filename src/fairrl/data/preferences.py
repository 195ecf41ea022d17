"""Preference pairs (chosen over rejected) with the social group each pair probes, and their splits.

Preference learning (a reward model, DPO) needs pairs of responses where one is preferred. This module
builds them from the packaged bias benchmarks (:mod:`fairrl.data.benchmark_pairs`: StereoSet,
CrowS-Pairs, BBQ and BBQ's abstention pairs) and reads user preference data from files or the hub
(:func:`load_preference_source`, e.g. HH-RLHF or BiasDPO). Every pair carries a group under one naming
across sources (:func:`canonical_group`), so a group can be held out everywhere at once, and a *template* key that ties
near-duplicate pairs together. :func:`split_pairs` then keeps held-out groups out of training entirely
and splits the trained groups' templates into train and in-distribution eval, so that no question
template is seen in training and again in evaluation.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fairrl.data.bbq import CATEGORIES
from fairrl.data.benchmark_pairs import (  # noqa: F401  (re-exported: the builders' public home was here)
    BBQ_BUILDERS,
    BUILDERS,
    bbq_abstain_pairs,
    bbq_pairs,
    crows_pairs_pairs,
    stereoset_pairs,
)
from fairrl.data.hub import load_hub_rows, read_records, resolve_source
from fairrl.data.pair_records import PreferencePair, PreferenceSplits, canonical_group  # noqa: F401
from fairrl.errors import ConfigError, DataError

_FORMATS = ".jsonl, .json or .csv"


# --------------------------------------------------------------------------- files and hub data
def _hub_rows(source: str, split: str) -> list[tuple[str, dict[str, Any]]]:
    instead = f"check data.hub_split, or pass a local {_FORMATS} file"
    rows = load_hub_rows(source, what="preference data", split=split, instead=instead)
    return [(f"hub dataset {source!r} row {n}", row) for n, row in enumerate(rows)]


def _chat(value: list[Any], column: str, where: str) -> list[dict[str, Any]]:
    if not value or not all(isinstance(m, dict) and "content" in m for m in value):
        raise DataError(f"{where}: {column!r} is a list but not of {{role, content}} chat messages")
    return value


def _messages_text(messages: list[dict[str, Any]]) -> str:
    """A chat prefix as plain text: one message as its content, several as ``role: content`` blocks."""
    if len(messages) == 1:
        return str(messages[0]["content"] or "").strip()
    return "\n\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in messages).strip()


def _response(value: Any, column: str, where: str) -> tuple[str, list[dict[str, Any]]]:
    """(response text, earlier chat messages) of a chosen / rejected cell, plain or conversational."""
    if isinstance(value, list):
        messages = _chat(value, column, where)
        return str(messages[-1]["content"] or "").strip(), messages[:-1]
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where}: {column!r} must be a string or chat messages, got {type(value).__name__}")
    return (value or "").strip(), []


def _check_columns(rows: list[tuple[str, dict[str, Any]]], wanted: dict[str, str | None], where: str) -> None:
    """ONE error naming every missing column, the columns present and the config keys to set."""
    present = list(dict.fromkeys(k for _, row in rows for k in row))
    missing = {key: col for key, col in wanted.items() if col is not None and col not in present}
    if missing:
        raise DataError(
            f"{where} lacks column(s) {list(missing.values())}; its columns are {present}; set "
            + " and ".join(f"data.{key}" for key in missing)
            + " to the column(s) holding them"
        )


def load_preference_source(
    source: str,
    *,
    prompt_column: str = "prompt",
    chosen_column: str = "chosen",
    rejected_column: str = "rejected",
    group_column: str | None = None,
    split: str = "train",
) -> list[PreferencePair]:
    """Pairs from a local .jsonl / .json / .csv file or a hub id (``datasets.load_dataset(id, split=)``).

    Chosen and rejected must be non-empty and differ. A cell may be a list of chat messages (the
    conversational format of HH-RLHF copies): the last message is the response and, when the row has
    no prompt, the earlier messages form it. The prompt column is optional ("" when absent); the group
    comes from ``group_column`` or, without one, is the source's base name. Pairs that share a
    non-empty prompt share a template, so a split never puts one prompt on both sides.
    """
    resolved = resolve_source(
        source, what="preference", expected=f"an existing {_FORMATS} file", hub_example="Anthropic/hh-rlhf"
    )
    if isinstance(resolved, Path):
        rows, where = read_records(resolved, what="preference"), str(resolved)
        default_group = canonical_group(resolved.stem)
    else:
        rows, where = _hub_rows(resolved, split), f"hub dataset {source!r}"
        default_group = canonical_group(source.rstrip("/").split("/")[-1])
    if not rows:
        raise DataError(f"{where} holds no rows; pass a split with preference pairs")
    keys = {"chosen_column": chosen_column, "rejected_column": rejected_column, "group_column": group_column}
    _check_columns(rows, keys, where)
    pairs = []
    for n, (at, row) in enumerate(rows):
        chosen, earlier = _response(row.get(chosen_column), chosen_column, at)
        rejected, _ = _response(row.get(rejected_column), rejected_column, at)
        if not chosen or not rejected:
            raise DataError(f"{at}: {chosen_column!r} and {rejected_column!r} must both be non-empty")
        if chosen == rejected:
            raise DataError(f"{at}: chosen and rejected are the same text (prefers nothing); drop the row")
        raw_prompt = row.get(prompt_column)
        if isinstance(raw_prompt, list):
            prompt = _messages_text(_chat(raw_prompt, prompt_column, at))
        elif raw_prompt not in (None, ""):
            prompt = str(raw_prompt).strip()
        else:  # no prompt column: a conversational pair carries its prompt before the last message
            prompt = _messages_text(earlier) if earlier else ""
        group = default_group
        if group_column is not None:
            group = canonical_group(str(row.get(group_column) or ""))
            if not group:
                raise DataError(f"{at}: group column {group_column!r} is empty; fill it or drop the row")
        # Rows sharing a prompt share a template, so a split never shows one prompt on both sides.
        template = f"{source}/prompt/{hashlib.sha1(prompt.encode()).hexdigest()[:12]}" if prompt else ""
        pairs.append(
            PreferencePair(f"{source}/{group}/{n}", prompt, chosen, rejected, group, source, template)
        )
    return pairs


# ------------------------------------------------------------------------------ mixing and splits
def _template_key(pair: PreferencePair) -> str:
    return pair.template or pair.id


def _cap(pairs: list[PreferencePair], cap: int, rng: random.Random) -> list[PreferencePair]:
    """At most ``cap`` pairs drawn uniformly with ``rng``, in input order.

    Pairs, not whole templates, are drawn: a capped BBQ category then still spans all its question
    templates (diverse training, several templates left for eval) instead of a handful of them.
    """
    return [pairs[k] for k in sorted(rng.sample(range(len(pairs)), min(cap, len(pairs))))]


def _wanted_groups(groups: Iterable[str] | None) -> set[str] | None:
    if groups is None:
        return None
    return {canonical_group(g) for g in ([groups] if isinstance(groups, str) else groups)}


def build_preference_pairs(
    sources: list[str],
    *,
    groups: list[str] | None = None,
    max_pairs_per_group: int | None = None,
    seed: int = 0,
    prompt_column: str = "prompt",
    chosen_column: str = "chosen",
    rejected_column: str = "rejected",
    group_column: str | None = None,
    hub_split: str = "train",
) -> list[PreferencePair]:
    """Pairs of every source, filtered to ``groups`` and capped per (source, group), ids unique.

    ``stereoset``, ``crows_pairs``, ``bbq`` and ``bbq_abstain`` name the packaged benchmarks; anything
    else goes to :func:`load_preference_source` with the column options. The cap is a uniform sample seeded by
    (``seed``, source, group), so it does not change when other sources are added. A repeated id keeps
    its first pair.
    """
    if isinstance(sources, str) or not sources:
        raise ConfigError(
            "data.sources must be a non-empty list of stereoset, crows_pairs, bbq, bbq_abstain, files, hub ids"
        )
    if max_pairs_per_group is not None and max_pairs_per_group < 1:
        raise ConfigError(f"data.max_pairs_per_group must be at least 1 or null, got {max_pairs_per_group}")
    wanted = _wanted_groups(groups)
    pairs: list[PreferencePair] = []
    known: set[str] = set()
    for source in sources:
        name = str(source).strip().lower().replace("-", "_")
        if name in BBQ_BUILDERS and wanted is not None:
            # Loading all of BBQ takes seconds; read only the categories that survive the filter.
            known |= {canonical_group(c) for c in CATEGORIES}
            cats = [c for c in CATEGORIES if canonical_group(c) in wanted]
            loaded = BBQ_BUILDERS[name](categories=cats) if cats else []
        elif name in BUILDERS:
            loaded = BUILDERS[name]()
        else:
            loaded = load_preference_source(
                str(source), prompt_column=prompt_column, chosen_column=chosen_column,
                rejected_column=rejected_column, group_column=group_column, split=hub_split,
            )  # fmt: skip
        known |= {p.group for p in loaded}
        pairs.extend(loaded)
    if wanted is not None:
        if unknown := sorted(wanted - known):
            raise ConfigError(
                f"data.groups names group(s) {unknown} that no source has; "
                f"available: {', '.join(sorted(known))}"
            )
        pairs = [p for p in pairs if p.group in wanted]
    unique: dict[str, PreferencePair] = {}
    for p in pairs:
        unique.setdefault(p.id, p)  # a repeated id (a source listed twice) keeps its first pair
    pairs = list(unique.values())
    if max_pairs_per_group is not None:
        by_key: dict[tuple[str, str], list[PreferencePair]] = {}
        for p in pairs:
            by_key.setdefault((p.source, p.group), []).append(p)
        kept = set()
        for key in sorted(by_key):
            rng = random.Random(f"{seed}/{key[0]}/{key[1]}")  # str seeds are hashed stably (sha512)
            kept |= {p.id for p in _cap(by_key[key], max_pairs_per_group, rng)}
        pairs = [p for p in pairs if p.id in kept]
    if not pairs:
        raise DataError(
            f"no preference pairs in {list(sources)} for groups {groups or 'all'}; widen data.groups"
        )
    return pairs


def split_pairs(
    pairs: list[PreferencePair], heldout_groups: Iterable[str], eval_fraction: float, seed: int
) -> PreferenceSplits:
    """Train / in-distribution eval / held-out-group splits with no template on two sides.

    Pairs of ``heldout_groups`` all go to ``heldout``. Within each other group, templates (the pair's
    template, else its id; keyed per group, as no built-in template spans two groups) are shuffled with ``seed`` and ``round(eval_fraction * n)`` of them go to
    eval: at least one when the group has two or more, and never all, so each group still trains; a
    one-template group stays in train. Deterministic for a seed; each list keeps the input order.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ConfigError(f"data.eval_fraction must be in [0, 1), got {eval_fraction}")
    available = sorted({p.group for p in pairs})
    held = _wanted_groups(heldout_groups) or set()
    if absent := sorted(held - set(available)):
        raise ConfigError(
            f"data.heldout_groups names group(s) {absent} absent from the data; "
            f"available: {', '.join(available)}"
        )
    templates: dict[str, dict[str, None]] = {}  # group -> its template keys (a dict: fast membership)
    for p in pairs:
        if p.group not in held:
            templates.setdefault(p.group, {})[_template_key(p)] = None
    rng = random.Random(seed)
    to_eval: set[tuple[str, str]] = set()
    for group in sorted(templates):
        keys = sorted(templates[group])  # sorted first: the draw must not depend on the input order
        rng.shuffle(keys)
        n = min(max(round(eval_fraction * len(keys)), 1), len(keys) - 1) if eval_fraction > 0 else 0
        to_eval |= {(group, k) for k in keys[:n]}
    train = [p for p in pairs if p.group not in held and (p.group, _template_key(p)) not in to_eval]
    if not train:
        raise DataError(
            f"every group is held out ({', '.join(available)}), so nothing is left to train on; "
            "shorten data.heldout_groups"
        )
    return PreferenceSplits(
        train=train,
        eval=[p for p in pairs if (p.group, _template_key(p)) in to_eval],
        heldout=[p for p in pairs if p.group in held],
    )


def group_counts(pairs: Iterable[PreferencePair]) -> dict[str, int]:
    """Pairs per group, sorted by group name (for logs and run summaries)."""
    return dict(sorted(Counter(p.group for p in pairs).items()))


def group_source_counts(pairs: Iterable[PreferencePair]) -> dict[str, dict[str, int]]:
    """Pairs per group and source, ``{group: {source: n}}`` sorted by name: shows which benchmark a
    group's pairs come from (a group made mostly of one hard source can look unfair for that reason)."""
    out: dict[str, Counter] = {}
    for p in pairs:
        out.setdefault(p.group, Counter())[p.source] += 1
    return {g: dict(sorted(c.items())) for g, c in sorted(out.items())}

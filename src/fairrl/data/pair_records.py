"""The record of one preference pair, the splits of a pair set, and one naming of groups across sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_ALIASES = {
    "race_color": "race", "race_ethnicity": "race", "gender_identity": "gender", "ses": "socioeconomic",
    "disability_status": "disability",
}  # fmt: skip


@dataclass(frozen=True)
class PreferencePair:
    """One preference: ``chosen`` is preferred over ``rejected`` as a reply to ``prompt``."""

    id: str
    """Unique id, ``<source>/<group>/<native id>``."""
    prompt: str
    """Text both responses answer or continue; "" when the responses are whole sentences."""
    chosen: str
    """Preferred response."""
    rejected: str
    """Dispreferred response."""
    group: str
    """Canonical group / bias type (see :func:`canonical_group`), used for splits and metrics."""
    source: str
    """``stereoset``, ``crows_pairs``, ``bbq``, or the file / hub id it came from."""
    template: str = ""
    """Key of near-duplicate pairs (a BBQ question template, a StereoSet target): a split never puts one
    key on both sides. "" = the pair is its own template."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Source-specific details (subset, context condition, ...)."""


@dataclass(frozen=True)
class PreferenceSplits:
    """Pairs split three ways by :func:`split_pairs`; each list keeps the input order."""

    train: list[PreferencePair]
    """Pairs of the trained groups whose templates were not drawn for eval."""
    eval: list[PreferencePair]
    """In-distribution evaluation: held-back templates of the trained groups."""
    heldout: list[PreferencePair]
    """Every pair of the held-out groups (never trained on): out-of-distribution evaluation."""


def canonical_group(name: str) -> str:
    """One spelling of a group across sources: lower case, underscores, and aliases merged.

    Why: CrowS-Pairs says ``race-color``, BBQ ``Race_ethnicity`` and StereoSet ``race``; holding out
    "race" must hold out all three. Unknown names pass through normalised.
    """
    key = "_".join(str(name).strip().lower().replace("-", " ").replace("_", " ").split())
    return _ALIASES.get(key, key)

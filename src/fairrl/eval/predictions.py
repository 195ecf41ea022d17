"""Score BBQ predictions made by any system: ``fairrl score bbq PREDICTIONS.jsonl``.

Each line of the file is a JSON object with

- ``category``: a BBQ category (``Age``, ``Race_x_SES``, ...; case-insensitive);
- ``example_id``: the item's ``example_id`` in that category's official file;
- ``prediction``: the chosen answer as its index in the official order (``0``-``2``, i.e. ``ans0``-``ans2``)
  or as text (the answer text, an "unknown" phrasing, or a free-form reply; parsed like fairrl's own
  generation mode). Text that names no single answer is *unparseable*: it counts as wrong and names
  nobody, and is reported per condition (``n_unparseable``), never dropped.

The items are looked up in BBQ (the packaged copy, or ``source``: a local file/folder or hub id), so the
file needs no labels. Scores are the official ones (:mod:`fairrl.eval.bbq`): per category and
overall, per context condition, accuracy and bias score (s_AMB for ambiguous, s_DIS for disambiguated
contexts) with counts and 95% bootstrap intervals. Only the predicted items are scored;
``n_items_in_category`` says how many the category has, so a partial file is visible as such.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from fairrl.data.records import Example
from fairrl.errors import DataError
from fairrl.eval.bbq import condition_summary

FIELDS = ("category", "example_id", "prediction")
SCHEMA_VERSION = 1


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The prediction lines of a JSONL file, checked for the three fields and duplicates."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"predictions file {path} is a folder; pass a .jsonl file")
    if not path.is_file():
        raise DataError(f"predictions file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"predictions file {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                        "save it as UTF-8") from None  # fmt: skip
    except OSError as err:
        raise DataError(f"cannot read predictions file {path} ({err.strerror or err})") from None
    rows, seen = [], set()
    # split on "\n" only: str.splitlines would also cut at U+2028, which JSON allows inside strings
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{n} is not valid JSON ({err.msg}); each line must be one object"
            ) from None
        except ValueError as err:
            raise DataError(f"{path}:{n}: {err}; use plain numbers and text") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n} is not a JSON object; expected {{{', '.join(FIELDS)}}}")
        missing = [k for k in FIELDS if k not in row or row[k] is None]
        if missing:
            raise DataError(f"{path}:{n} lacks field(s) {missing}; every line needs {list(FIELDS)}")
        row["example_id"] = _example_id(row["example_id"], f"{path}:{n}")
        pred = row["prediction"]
        if not isinstance(pred, str) or _INDEX.fullmatch(pred) or _numeric(pred):  # checked before BBQ loads
            prediction_index(pred, ["ans0", "ans1", "ans2"], f"{path}:{n}")
        key = (str(row["category"]).lower(), row["example_id"])
        if key in seen:
            raise DataError(f"{path}:{n} repeats category {row['category']!r} example_id {row['example_id']}")
        seen.add(key)
        rows.append({**row, "line": n})
    if not rows:
        raise DataError(f"predictions file {path} has no predictions")
    return rows


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _example_id(value: Any, where: str) -> int:
    """An item id: an int, an integral float or a string of ASCII digits (never a bool, never 1.7)."""
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise DataError(f"{where}: example_id {value!r:.60} is not an integer; give the item's example_id from the "
                    "BBQ file")  # fmt: skip


_INDEX = re.compile(r"\s*[0-9]+\s*")


def _numeric(text: str) -> bool:
    """Text that is a number other than an ASCII index: "1.0", "-1", "1e3", "²", "①", "٣"."""
    t = text.strip()
    try:
        float(t)
    except ValueError:
        return t.isnumeric()
    return any(ch.isnumeric() for ch in t)


def prediction_index(prediction: Any, answers: list[str], where: str) -> int | None:
    """Answer index (official order) of a prediction: an index as given, text parsed; None = unparseable."""
    from fairrl.data.parsing import parse_bbq_answer

    if isinstance(prediction, bool):
        raise DataError(f"{where}: prediction {prediction!r} is neither an answer index nor text")
    # ASCII digits only: str.isdigit() is also true for "²" or "①", which int() refuses
    if isinstance(prediction, int) or (isinstance(prediction, str) and _INDEX.fullmatch(prediction)):
        index = int(prediction)
        if not 0 <= index < len(answers):
            raise DataError(f"{where}: prediction index {index} is outside 0-{len(answers) - 1}")
        return index
    if isinstance(prediction, str) and _numeric(prediction):
        raise DataError(f"{where}: prediction {prediction!r} looks like a number but is not an answer index; "
                        f"give 0-{len(answers) - 1} in ASCII digits, or the answer's text")  # fmt: skip
    if isinstance(prediction, str):
        return parse_bbq_answer(prediction, answers)
    raise DataError(f"{where}: prediction {prediction!r} is neither an answer index nor text")


def _lookup(rows: list[dict[str, Any]], source: str | None) -> tuple[list[Example], dict[str, int]]:
    """The BBQ example of each prediction (answers in the official order) and each category's size."""
    from fairrl.data.bbq import CATEGORIES, bbq_examples, load_bbq

    canonical = {c.lower(): c for c in CATEGORIES}
    unknown = sorted({str(r["category"]) for r in rows if str(r["category"]).lower() not in canonical})
    if unknown:
        raise DataError(
            f"unknown BBQ categor{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
            f"valid: {', '.join(CATEGORIES)}"
        )
    cats = sorted({canonical[str(r["category"]).lower()] for r in rows})
    items = load_bbq(source, cats)
    by_key = {(i["category"], int(i["example_id"])): i for i in items}
    sizes = {c: sum(1 for i in items if i["category"] == c) for c in cats}
    picked, absent = [], []
    for r in rows:
        item = by_key.get((canonical[str(r["category"]).lower()], r["example_id"]))
        if item is None:
            absent.append(f"line {r['line']}: {r['category']}/{r['example_id']}")
        picked.append(item)
    if absent:
        more = f" (and {len(absent) - 5} more)" if len(absent) > 5 else ""
        raise DataError(
            f"{len(absent)} prediction(s) name no BBQ item: {'; '.join(absent[:5])}{more}; "
            "check category and example_id against the BBQ files"
        )
    return bbq_examples(picked, seed=0, shuffle_answers=False), sizes


def score_bbq_predictions(
    path: str | Path, source: str | None = None, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """``{"schema_version", "n", "overall", "categories": {category: scores}}`` for a predictions file.

    ``scores`` = ``{"ambig": {...}, "disambig": {...}, "n", "n_items_in_category"}`` where each condition
    holds ``accuracy``, ``bias_score`` (s_AMB / s_DIS), ``unknown_rate``, their ``_ci`` intervals and the
    counts ``n``, ``n_non_unknown``, ``n_biased``, ``n_no_target``, ``n_unparseable``.
    """
    rows = read_predictions(path)
    examples, sizes = _lookup(rows, source)
    preds = [
        prediction_index(r["prediction"], e.columns["answers"], f"{path}:{r['line']}")
        for r, e in zip(rows, examples, strict=True)
    ]
    by_cat: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_cat.setdefault(e.group, []).append(i)
    categories = {
        cat: {
            **condition_summary([examples[i] for i in idx], [preds[i] for i in idx], n_boot, seed),
            "n": len(idx),
            "n_items_in_category": sizes[cat],
        }
        for cat, idx in sorted(by_cat.items())
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "n": len(rows),
        "overall": {**condition_summary(examples, preds, n_boot, seed), "n": len(rows)},
        "categories": categories,
    }


def write_scores(path: str | Path, scores: dict[str, Any]) -> None:
    """The scores as a JSON file at ``path`` (written atomically, missing folders created); a path that
    cannot be written is a DataError (call :func:`check_scores_path` before scoring to fail early)."""
    from fairrl.fsutil import write_json_atomic

    path = check_scores_path(path)
    try:
        write_json_atomic(path, scores)
    except OSError as err:
        raise DataError(f"cannot write the scores to {path} ({err.strerror or err})") from None


def check_scores_path(path: str | Path) -> Path:
    """``path`` if a JSON file can be written there: not a folder, and not under a file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"--json {path} is a folder; give a file name, e.g. {path / 'bbq_scores.json'}")
    parent = next((q for q in path.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataError(f"--json {path}: {parent} is a file, not a folder; give another path")
    return path


def scores_table(scores: dict[str, Any]) -> str:
    """Markdown: one row per category (and overall) with accuracy and bias score per condition."""
    head = (
        "| category | n | acc. ambiguous | s_AMB | acc. disambiguated | s_DIS | unparseable |\n"
        "|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for name, s in [*scores["categories"].items(), ("overall", scores["overall"])]:
        cells = []
        for cond in ("ambig", "disambig"):
            c = s.get(cond)
            cells += [f"{c['accuracy']:.3f}", f"{c['bias_score']:+.3f}"] if c else ["–", "–"]
        unparseable = sum(s[c]["n_unparseable"] for c in ("ambig", "disambig") if c in s)
        lines.append(f"| {name} | {s['n']} | " + " | ".join(cells) + f" | {unparseable} |")
    return "\n".join(lines)

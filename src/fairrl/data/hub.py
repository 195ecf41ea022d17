"""Where data comes from: a local file (or folder), or a Hugging Face hub id read through ``datasets``.

Every loader asks one question first, :func:`resolve_source`: an existing path is local data; a string
that looks like a path but names nothing is a mistyped path and is reported as a missing file (it is
never sent to the hub, where it would fail with a confusing "repository not found"); anything else is
a hub id. Local record files are read by :func:`read_records` (``.jsonl``, ``.json``, ``.csv``) or
:func:`read_json` (one JSON document in a loader-specific schema); hub rows by :func:`load_hub_rows`.
``datasets`` is imported only when a hub id is used: local data needs neither it nor a network.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fairrl.errors import DataError

RECORD_FORMATS = (".jsonl", ".json", ".csv")
HUB_INSTALL = "pip install 'fairrl[hub]'"
# Every hub failure (network down, HF_HUB_OFFLINE=1 with nothing cached, wrong id / config / split,
# gated repo) surfaces as a different exception type; all mean the same to a user.
_HUB_TROUBLE = (
    "the id, config or split may be wrong, or the hub cannot be reached (offline, or HF_HUB_OFFLINE=1 "
    "is set and the dataset is not in the local cache); local data needs no network"
)


def looks_like_path(source: str) -> bool:
    """True for sources that cannot be a hub id (``owner/name``): a file suffix, ``/ . ~`` first, nesting."""
    return (
        source.startswith(("/", ".", "~"))
        or source.count("/") > 1
        or "\\" in source
        or Path(source).suffix.lower() in RECORD_FORMATS
    )


def resolve_source(
    source: str, *, what: str, expected: str, hub_example: str, packaged: bool = False
) -> Path | str:
    """An existing local path as a :class:`Path`, else the hub id string; decided once, here.

    A source that looks like a path (:func:`looks_like_path`) but does not exist is a DataError
    "the <what> file <source> does not exist; pass <expected> or a hub id such as <hub_example>"
    (``packaged``: the loader also has a packaged copy, used when the source is omitted).
    """
    path = Path(source).expanduser()
    if path.exists():
        return path
    if looks_like_path(source):
        packaged_hint = ", or omit the source to use the packaged copy" if packaged else ""
        raise DataError(
            f"the {what} file {source} does not exist{_near_miss(path)}; pass {expected} or a hub id "
            f"such as {hub_example}{packaged_hint}"
        )
    return source


def _near_miss(path: Path) -> str:
    """`` (did you mean <sibling>?)`` for a file of the same folder with a close name, else ``""``."""
    try:
        names = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.8)
    return f" (did you mean {path.parent / close[0]}?)" if close else ""


def split_hub_id(source: str) -> tuple[str, str | None]:
    """``owner/name:config`` -> (``owner/name``, ``config``); no ``:`` -> (source, None)."""
    hub_id, _, config = source.partition(":")
    return hub_id, config or None


def _datasets(hub_id: str, what: str, instead: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{what} source {hub_id!r} is not a local path, so it was taken as a hub id, but the `datasets` "
            f"package is not installed: {HUB_INSTALL}; or {instead}"
        ) from None
    return datasets


def _hub_failure(what: str, hub_id: str, err: Exception, detail: str, instead: str) -> DataError:
    return DataError(
        f"could not load {what} from the hub id {hub_id!r} ({type(err).__name__}: {err}){detail}; "
        f"{_HUB_TROUBLE}: {instead}"
    )


def hub_config_names(hub_id: str, *, what: str, instead: str = "pass a local file") -> list[str]:
    """The config names of a hub dataset (``datasets.get_dataset_config_names``)."""
    datasets = _datasets(hub_id, what, instead)
    try:
        return list(datasets.get_dataset_config_names(hub_id))
    except Exception as err:  # see _HUB_TROUBLE
        raise _hub_failure(what, hub_id, err, " while listing its configs", instead) from None


def load_hub_rows(
    hub_id: str,
    *,
    what: str,
    config: str | None = None,
    split: str | None = None,
    instead: str = "pass a local .jsonl, .json or .csv file",
) -> list[dict[str, Any]]:
    """Rows of ``datasets.load_dataset(hub_id, config, split=split)`` as plain dicts.

    ``split=None`` loads every split and concatenates them in the dataset's split order. ``what`` names
    the data in messages ("GSM8K"); ``instead`` is the local alternative a message offers ("pass a
    local JSONL file").
    """
    datasets = _datasets(hub_id, what, instead)
    args = (hub_id,) if config is None else (hub_id, config)
    kwargs = {} if split is None else {"split": split}
    try:
        loaded = datasets.load_dataset(*args, **kwargs)
        raw = list(loaded) if split is not None else [r for s in loaded for r in loaded[s]]
    except Exception as err:  # see _HUB_TROUBLE
        asked = [f"{k} {v!r}" for k, v in (("config", config), ("split", split)) if v is not None]
        detail = f" with {' and '.join(asked)}" if asked else ""
        raise _hub_failure(what, hub_id, err, detail, instead) from None
    for n, row in enumerate(raw):
        if not isinstance(row, Mapping):
            raise DataError(
                f"hub dataset {hub_id!r} row {n} is a {type(row).__name__}, not a row with named columns"
            )
    return [dict(r) for r in raw]


# ------------------------------------------------------------------------------------- local files
def _read_text(path: Path, what: str, newline: str | None = None) -> str:
    """The file's text; ``utf-8-sig`` also reads files that start with a byte-order mark (Excel CSVs)."""
    if path.is_dir():
        raise DataError(f"the {what} source {path} is a folder; pass a file")
    try:
        with path.open(encoding="utf-8-sig", newline=newline) as f:
            return f.read()
    except OSError as err:
        raise DataError(f"cannot read the {what} file {path} ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise DataError(
            f"the {what} file {path} is not UTF-8 text ({err.reason}); save it as UTF-8"
        ) from None


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where} is not valid JSON ({err.msg}, line {err.lineno})") from None


def read_json(path: Path, *, what: str) -> Any:
    """The one JSON document in ``path``; an unreadable, empty or invalid file is a DataError naming it."""
    text = _read_text(path, what)
    if not text.strip():
        raise DataError(f"the {what} file {path} is empty")
    return _parse_json(text, str(path))


def _jsonl(text: str, path: Path) -> list[tuple[str, Any]]:
    # Split on "\n" only: str.splitlines would also cut at U+2028, which JSON allows inside strings.
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append((f"{path} line {n}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path} line {n} is not valid JSON ({err.msg}); a .jsonl file holds one JSON object "
                    "per line"
                ) from None
    return rows


def _csv(text: str, path: Path) -> list[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for row in reader:
        where = f"{path} line {reader.line_num}"
        if None in row:  # DictReader files surplus cells under the key None
            raise DataError(
                f"{where} has more cells than the header has columns; quote cells that contain commas"
            )
        rows.append((where, row))
    return rows


def read_records(
    path: Path, *, what: str, default_format: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for every record of a ``.jsonl``, ``.json`` or ``.csv`` file, in file order.

    ``where`` locates the row for messages ("data.jsonl line 3", "data.json item 0"). ``.jsonl``: one
    JSON object per line, blank lines skipped. ``.json``: a list of objects. ``.csv``: a header row,
    then one row per record (every value a string; quoted cells may hold commas and line breaks, and
    Windows line endings are read as such). Files with another suffix are read as ``default_format``
    (e.g. ``".jsonl"``) or refused when it is None. A record that is not an object, or a file without
    records, is a DataError naming the file.
    """
    if path.is_dir():
        raise DataError(f"the {what} source {path} is a folder; pass a .jsonl, .json or .csv file")
    suffix = path.suffix.lower()
    fmt = suffix if suffix in RECORD_FORMATS else default_format
    if fmt not in RECORD_FORMATS:
        raise DataError(f"the {what} file {path} has suffix {suffix!r}; use .jsonl, .json or .csv")
    text = _read_text(path, what, newline="" if fmt == ".csv" else None)
    if fmt == ".csv":
        rows = _csv(text, path)
    elif fmt == ".jsonl":
        rows = _jsonl(text, path)
    else:
        doc = _parse_json(text, str(path)) if text.strip() else []
        if not isinstance(doc, list):
            raise DataError(f"{path} must hold a JSON list of objects, got {type(doc).__name__}")
        rows = [(f"{path} item {n}", row) for n, row in enumerate(doc)]
    if not rows:
        raise DataError(f"{path} holds no {what} rows; the file is empty (a CSV header alone is no row)")
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{where} is a {type(row).__name__}, not an object with named columns")
    return rows

"""Atomic file and folder writes: a crash leaves either the old version or the new one, never half.

Every writer fills a hidden temporary beside its target (``.<name>.<random>.tmp``), flushes the
file contents *and* the folder entries to disk (``fsync``), and only then renames it into place. Without
the fsync a power cut shortly after the rename can leave the new name pointing at empty or partial
data on common file systems (ext4 ``data=ordered`` delays, XFS). A crash before the rename leaves only
the temporary, which :func:`sweep_temporaries` removes the next time the folder is used.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
# temporaries of earlier versions: ``.<name>-<8 random chars>`` folders and ``.<name>.<8 random chars>`` files
_LEGACY_TMP = re.compile(r"^\.[\w.-]+[.-][a-z0-9_]{8}$")


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (names created, renamed or removed) to disk; a no-op where the OS cannot
    open folders (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (bottom-up), then ``root`` itself."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(folder))


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``target``, on error it vanishes.

    An existing ``target`` is first moved aside (a temporary too), so the window without any ``target``
    is one rename long rather than a whole recursive delete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    old: Path | None = None
    try:
        yield tmp
        fsync_tree(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", suffix=TMP_SUFFIX, dir=target.parent))
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def finite_json(data: Any) -> Any:
    """``data`` with every NaN / infinite float replaced by None: an undefined score is written as ``null``
    (valid JSON, read as "not measured"), never as ``NaN`` (which strict JSON readers reject) or 0."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(finite_json(data), indent=2, allow_nan=False))


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary left by the writers above (this version's or an earlier one's)."""
    return name.startswith(".") and (name.endswith(TMP_SUFFIX) or bool(_LEGACY_TMP.match(name)))


def sweep_temporaries(folder: Path) -> list[str]:
    """Remove the temporaries a crashed write left in ``folder`` (not recursive); returns their names.

    Only call it on folders fairrl owns (run folders, ``checkpoints/``) while no write is under way in
    them: a temporary being filled right now would go too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if not is_temporary(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return sorted(removed)

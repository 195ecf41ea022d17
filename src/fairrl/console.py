"""How runs talk to the user: a ``Console`` (one line of text at a time) and a progress bar.

Every recipe takes a ``console`` callable (``print`` by default; the CLI passes its own echo; tests
pass a list's ``append``) and shows per-step progress with :func:`progress_bar`.
"""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm

Console = Callable[[str], None]


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True) -> tqdm:
    """A step progress bar (tqdm) that starts at ``initial`` (a resumed run) and fits the terminal."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)

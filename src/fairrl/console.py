"""How runs talk to the user: a ``Console`` (one line of text at a time) and progress bars.

Every recipe takes a ``console`` callable (``print`` by default; the CLI passes its own echo; tests
pass a list's ``append``) and shows per-step progress with :func:`progress_bar`.

Long inner loops (likelihood scoring, greedy generation, reward scoring) show a :func:`track` bar.
They sit deep below the recipes, so instead of threading a ``progress`` flag through every
signature, :func:`progress_scope` sets two context variables around a phase: whether bars show at all
(``run_training(progress=False)`` turns every bar below it off) and a label (``eval bbq_heldout``)
that prefixes the inner bars' descriptions. Bars go to stderr, so stdout stays clean for piping;
``TQDM_DISABLE=1`` (tqdm's own variable) turns them all off from the environment.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tqdm.auto import tqdm

Console = Callable[[str], None]

_ENABLED: ContextVar[bool] = ContextVar("fairrl_progress_enabled", default=True)
_LABEL: ContextVar[str] = ContextVar("fairrl_progress_label", default="")

INNER_DELAY_S = 2.0
"""An inner bar appears only once its loop has run this long: short phases print nothing."""


@contextmanager
def progress_scope(label: str | None = None, enabled: bool | None = None) -> Iterator[None]:
    """Within the block, bars are off when ``enabled`` is False (None keeps the outer setting) and
    inner bars are labelled ``label`` (None keeps the outer label)."""
    tokens = []
    if enabled is not None:
        tokens.append((_ENABLED, _ENABLED.set(_ENABLED.get() and enabled)))
    if label is not None:
        tokens.append((_LABEL, _LABEL.set(label)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def label_progress(label: str) -> None:
    """Relabel inner bars for the next phase of a loop; the enclosing :func:`progress_scope` restores
    the outer label when it exits (a context variable reset to its token undoes later sets too)."""
    _LABEL.set(label)


def progress_enabled() -> bool:
    """Whether bars show in the current scope."""
    return _ENABLED.get()


def progress_bar(
    total: int, initial: int = 0, desc: str = "", enabled: bool = True, leave: bool = True, delay: float = 0.0,
    unit: str = "it",
) -> tqdm:  # fmt: skip
    """A progress bar (tqdm, on stderr) that starts at ``initial`` (a resumed run) and fits the terminal;
    off when ``enabled`` is False or the current :func:`progress_scope` turned bars off."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not (enabled and _ENABLED.get()),
                dynamic_ncols=True, leave=leave, delay=delay, unit=unit, file=sys.stderr)  # fmt: skip


def track(total: int, desc: str, unit: str = "item") -> tqdm:
    """A bar for an inner loop of ``total`` items: labelled by the current scope, shown only after
    :data:`INNER_DELAY_S` seconds and removed when done (the phase's summary line stays)."""
    label = _LABEL.get()
    return progress_bar(total, 0, f"{label}: {desc}" if label else desc, leave=False, delay=INNER_DELAY_S,
                        unit=unit)  # fmt: skip

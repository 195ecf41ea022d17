"""User functions named by a dotted path (``pkg.module:fn`` or ``pkg.module.fn``): rewards, scorers."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from typing import Any

from fairrl.errors import ConfigError


def import_callable(
    name: str, kind: str, builtins: Iterable[str], expected: str, suggest: bool = False
) -> Callable[..., Any]:
    """The function ``name`` points at, or a :class:`ConfigError` naming ``kind`` and the fix.

    ``builtins`` are listed when ``name`` is not a dotted path; ``expected`` describes the function and an
    example path; ``suggest`` adds the closest built-in name to that message.
    """
    if ":" in name:
        module_name, attr = name.split(":", 1)
    elif "." in name:
        module_name, attr = name.rsplit(".", 1)
    else:
        names = sorted(builtins)
        close = difflib.get_close_matches(name, names, n=1) if suggest else []
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown {kind} {name!r}; {hint}built-ins: {', '.join(names)}, or give a dotted path "
                          f"to your own {expected}")  # fmt: skip
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or the user's module failing while it loads
        raise ConfigError(
            f"{kind} {name!r}: module {module_name!r} could not be imported ({type(err).__name__}: {err}); "
            "is it installed or on PYTHONPATH?"
        ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"{kind} {name!r} could not be imported: module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise ConfigError(f"{kind} {name!r} is not a function (got a {type(fn).__name__})")
    return fn

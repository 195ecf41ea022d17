"""User functions named by a dotted path (``pkg.module:fn`` or ``pkg.module.fn``) or by a Python file and
a name (``path/to/rewards.py:fn``, relative to the working directory): rewards, scorers."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
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
        module = _load_file(module_name, kind, name) if module_name.endswith(".py") else importlib.import_module(
            module_name)
    except ConfigError:
        raise
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


def _load_file(path: str, kind: str, name: str):
    """A Python file as a module (cached under a name derived from its resolved path)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{kind} {name!r}: the file {path} does not exist (paths are relative to the working "
                          f"directory, {Path.cwd()})")  # fmt: skip
    key = "fairrl_user_" + "".join(c if c.isalnum() else "_" for c in str(file.resolve()))
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[key]
        raise
    return module


def check_options(factory: Callable[..., Any], options: dict[str, Any], where: str) -> None:
    """A ConfigError naming ``where`` when ``options`` do not fit ``factory``'s keyword parameters (a
    configurable built-in's ``options:``), listing the ones it takes."""
    import inspect

    try:
        inspect.signature(factory).bind(**options)
    except TypeError as err:
        params = [p for p in inspect.signature(factory).parameters if p != "self"]
        raise ConfigError(f"{where}: bad options ({err}); it takes {', '.join(params) or 'no options'}") from None

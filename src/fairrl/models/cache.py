"""The KV-cache keyword of a transformers forward, whichever version is installed.

transformers up to 5.2x names the cache argument and output field ``past_key_values``; later versions name
both ``cache`` and keep the old name as a deprecated alias ("will be removed in version 5.40", with a
warning on every first use). fairrl supports the whole declared range (``pyproject.toml``), so every
cached forward goes through :func:`cache_kwargs` and every returned cache through :func:`returned_cache`:
the name is read off the called model's ``forward`` signature, once per class, never guessed from a
version number.
"""

from __future__ import annotations

import dataclasses
import inspect
from functools import lru_cache
from typing import Any

from fairrl.models.common import unwrap_peft


@lru_cache(maxsize=64)
def _keyword(cls: type) -> str:
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return "past_key_values"
    if "cache" in params and "past_key_values" not in params:
        return "cache"
    return "past_key_values"


def cache_keyword(model) -> str:
    """``cache`` when the model's forward takes it (and not the old name), else ``past_key_values``."""
    return _keyword(type(unwrap_peft(model)))


def cache_kwargs(model, cache: Any) -> dict[str, Any]:
    """``{keyword: cache}`` for a forward call of ``model`` (PEFT wrappers are looked through)."""
    return {cache_keyword(model): cache}


def returned_cache(out) -> Any:
    """The KV cache a forward returned, read under the name its output class declares."""
    names = {f.name for f in dataclasses.fields(out)} if dataclasses.is_dataclass(out) else set(out.keys())
    return getattr(out, "cache" if "cache" in names else "past_key_values", None)

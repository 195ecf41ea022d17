"""Resolve a run's reward functions at startup, before the model loads: a mistyped built-in name, a dotted
path that does not import, options a reward does not take, or a ``bias_rm`` folder without a reward
model fail in a second with a :class:`~fairrl.errors.ConfigError`, not minutes later.

Nothing heavy runs here: configurable built-ins (``bias_rm``) are only checked, not built (building one
loads its model); the run builds every function again with :func:`fairrl.rewards.base.get_reward`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fairrl.errors import ConfigError
from fairrl.plugins import check_options
from fairrl.rewards import REWARD_FACTORIES, REWARDS
from fairrl.rewards.base import get_reward


def _takes_options(fn: Callable[..., Any], options: dict[str, Any]) -> str | None:
    """Why ``fn`` cannot receive ``options`` as keyword arguments (None: it can, or its signature is hidden)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(options) - names)
    return f"it takes no option(s) {unknown}" if unknown else None


def check_rewards(functions: list[Any]) -> None:
    """Resolve every ``rewards.functions`` entry (objects with ``name`` and ``options``) without building
    configurable built-ins; a problem is a ConfigError naming the entry."""
    for k, spec in enumerate(functions):
        name, options = spec.name, dict(spec.options or {})
        where = f"rewards.functions[{k}] ({name!r})"
        if name in REWARD_FACTORIES:
            check_options(REWARD_FACTORIES[name], options, where)
            if name == "bias_rm":
                from fairrl.rewards.bias_rm import resolve_reward_model_dir

                if not isinstance(options["model"], str):
                    raise ConfigError(
                        f"{where}: options.model must be a folder path, got {options['model']!r}"
                    )
                resolve_reward_model_dir(options["model"])
            continue
        if name in REWARDS:
            get_reward(name, options)  # refuses options on a built-in that takes none
            continue
        fn = get_reward(name)  # imports a user function, or says what is wrong with the path
        problem = _takes_options(fn, options) if options else None
        if problem:
            raise ConfigError(
                f"{where}: options {sorted(options)} are passed to the function as keyword arguments, but "
                f"{problem}; add them as parameters (or **kwargs), or remove them"
            )

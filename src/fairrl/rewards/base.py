"""The reward-function contract (TRL's), a registry of built-ins, and safe evaluation.

A reward function is ``fn(prompts, completions, **columns) -> list[float | None]``: ``prompts[i]`` is a
chat conversation, ``completions[i]`` is ``[{"role": "assistant", "content": text}]`` (TRL's
conversational format) or a plain string, every dataset column arrives as a keyword list aligned with
them, and ``None`` means "not applicable to this sample". A user's TRL reward function works unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import numbers
from collections.abc import Callable
from typing import Any, Literal

import torch

from fairrl.errors import ConfigError, RewardError
from fairrl.plugins import import_callable

RewardFn = Callable[..., list[float | None]]
REWARDS: dict[str, RewardFn] = {}
log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # reward names already warned about under on_error="skip" (once per process)


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator adding a built-in reward to :data:`REWARDS` under ``name``."""

    def wrap(fn: RewardFn) -> RewardFn:
        old = REWARDS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(
                f"reward name {name!r} is already registered to {old.__module__}.{old.__qualname__}"
            )
        REWARDS[name] = fn
        return fn

    return wrap


def completion_text(completion: Any) -> str:
    """Text of a completion: a string, TRL conversational messages (the last message's content), one
    message dict, or content given as a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        completion = completion[-1]
    if isinstance(completion, dict):
        content = completion.get("content", "")
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return "" if content is None else str(content)
    if isinstance(completion, list) and not completion:
        return ""
    return str(completion)


RewardFactory = Callable[..., RewardFn]
REWARD_FACTORIES: dict[str, RewardFactory] = {}


def register_reward_factory(name: str) -> Callable[[RewardFactory], RewardFactory]:
    """Decorator adding a configurable built-in (``factory(**options) -> reward fn``) under ``name``."""

    def wrap(factory: RewardFactory) -> RewardFactory:
        REWARD_FACTORIES[name] = factory
        return factory

    return wrap


def _options_error(name: str, factory: Callable[..., Any], err: TypeError) -> ConfigError:
    params = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
    return ConfigError(f"reward {name!r}: bad options ({err}); it takes {', '.join(params) or 'none'}")


def get_reward(name: str, options: dict[str, Any] | None = None) -> RewardFn:
    """A reward function by name: a built-in, a configurable built-in built with ``options`` (e.g.
    ``bias_rm``), or a user function by dotted path (``pkg.module:fn``), to which ``options`` are bound
    as keyword arguments."""
    options = dict(options or {})
    if name in REWARD_FACTORIES:
        factory = REWARD_FACTORIES[name]
        try:
            inspect.signature(factory).bind(**options)
        except TypeError as err:
            raise _options_error(name, factory, err) from None
        return factory(**options)
    if name in REWARDS:
        if options:
            raise ConfigError(f"reward {name!r} takes no options; remove its options: {sorted(options)}")
        return REWARDS[name]
    fn = import_callable(name, "reward", [*REWARDS, *REWARD_FACTORIES], "function, like my_package.rewards:my_reward")
    return functools.partial(fn, **options) if options else fn


def _sample_text(prompts: list, completions: list, i: int) -> str:
    """A shortened sample for error messages: the prompt's tail and the completion's head."""
    prompt = prompts[i] if prompts is not None and i < len(prompts) else ""
    if isinstance(prompt, list) and prompt:
        prompt = completion_text(prompt[-1])
    p = str(prompt).replace("\n", " ")
    c = completion_text(completions[i]).replace("\n", " ")
    return f"prompt '...{p[-80:]}', completion '{c[:80]}{'...' if len(c) > 80 else ''}'"


def _invalid(value: Any) -> str | None:
    """What to say about an invalid reward value (None if it is valid: a finite real number, or None)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"a {type(value).__name__}; expected a float, or None when the reward does not apply"
    if not math.isfinite(value):
        return "not finite; return a finite float, or None when the reward does not apply"
    return None


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def _skip(name: str, message: str) -> None:
    if name not in _WARNED:
        _WARNED.add(name)
        log.warning(
            "%s; such values are skipped (NaN) - further problems with %r are not reported", message, name
        )


def _per_sample(fn: RewardFn, prompts: list, completions: list, columns: dict[str, list], i: int) -> Any:
    """``fn`` on sample ``i`` alone (used only to find which sample makes a batch call fail)."""
    cols = {k: v[i : i + 1] for k, v in columns.items()}
    values = fn(
        prompts=prompts[i : i + 1] if prompts is not None else None,
        completions=completions[i : i + 1],
        **cols,
    )
    if values is None or len(values) != 1:
        raise ValueError(f"returned {values!r} for a single sample")
    return values[0]


def _call(
    name: str, fn: RewardFn, prompts: list, completions: list, columns: dict[str, list], on_error: str
) -> list[Any]:
    """The function's values for the batch. If the batch call raises, each sample is re-run alone to
    name the one that fails; with ``on_error="skip"`` failing samples become None."""
    n = len(completions)
    try:
        values = fn(prompts=prompts, completions=completions, **columns)
    except Exception as batch_err:  # the user's function failed: find on which sample
        out: list[Any] = []
        for i in range(n):
            try:
                out.append(_per_sample(fn, prompts, completions, columns, i))
            except Exception as err:
                message = f"reward {name!r} raised {type(err).__name__}: {err} on sample {i}"
                if on_error != "skip":
                    raise RewardError(
                        f"{message} ({_sample_text(prompts, completions, i)}). Fix the function, or set "
                        "rewards.on_error: skip to drop such values"
                    ) from None
                _skip(name, message)
                out.append(None)
        if on_error != "skip" and n:  # every sample passes alone: the batch call itself is at fault
            raise RewardError(
                f"reward {name!r} raised {type(batch_err).__name__}: {batch_err} on the batch of {n}, "
                "though every sample passes on its own"
            ) from None
        return out
    if values is None or not hasattr(values, "__len__") or len(values) != n:
        got = (
            "None"
            if values is None
            else f"{len(values)} values"
            if hasattr(values, "__len__")
            else repr(values)
        )
        message = (
            f"reward {name!r} returned {got} for a batch of {n} completions; return one value per completion"
        )
        if on_error != "skip":
            raise RewardError(message)
        _skip(name, message)
        return [None] * n
    return list(values)


def evaluate_rewards(
    funcs: dict[str, RewardFn],
    prompts: list,
    completions: list,
    columns: dict[str, list],
    on_error: Literal["raise", "skip"] = "raise",
) -> torch.Tensor:
    """Call every reward function on the batch -> ``[N, K]`` float tensor, NaN where a reward is None.

    A function that raises, returns the wrong number of values, a non-number, NaN or inf stops the
    run with a :class:`RewardError` naming it, the sample index and a shortened sample
    (``on_error="raise"``), or has the affected values set to NaN with one warning per function
    (``on_error="skip"``).
    """
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"rewards.on_error must be 'raise' or 'skip', got {on_error!r}")
    n = len(completions)
    bad_cols = [k for k, v in columns.items() if len(v) != n]
    if bad_cols:
        raise RewardError(f"columns {bad_cols} do not have one value per completion ({n})")
    out = torch.full((n, len(funcs)), math.nan)  # [N, K]
    for k, (name, fn) in enumerate(funcs.items()):
        for i, value in enumerate(_call(name, fn, prompts, completions, columns, on_error)):
            problem = _invalid(value)
            if problem is None:
                out[i, k] = _as_float(value)
                continue
            message = f"reward {name!r} returned {value!r} for sample {i}: {problem}"
            if on_error != "skip":
                raise RewardError(f"{message} ({_sample_text(prompts, completions, i)})")
            _skip(name, message)
    return out

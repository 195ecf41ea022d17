"""The reward-function contract (TRL's), a registry of built-ins, and safe evaluation.

A reward function is ``fn(prompts, completions, **kwargs) -> list[float | None]``, as in TRL's
GRPOTrainer. Each sample comes in its data's format: for a prompt given as a string (TRL's *standard*
format) ``prompts[i]`` is that string and ``completions[i]`` the completion's text; for a conversation
(*conversational*: the built-in benchmarks, and user rows whose prompt is a message list) ``prompts[i]``
is the message list and ``completions[i] == [{"role": "assistant", "content": text}]``. A batch drawn
from sources of both formats holds both, each sample as its own source gives it (what TRL would pass on
each dataset alone). Every dataset column arrives as a keyword list aligned with them (a column that a
row's source lacks is None there), plus ``completion_ids``, ``trainer_state``, ``log_extra`` and
``log_metric`` (:mod:`fairrl.rewards.call`). ``None`` means "not applicable to this sample". A user's
TRL reward function, plain or ``async def``, works unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from fairrl.errors import ConfigError, RewardError
from fairrl.plugins import import_callable
from fairrl.rewards.call import (
    RewardLogs,
    RewardTimeout,
    TrainerState,
    call_async,
    call_logs,
    call_sync,
    is_async_reward,
)

RewardFn = Callable[..., list[float | None]]
REWARDS: dict[str, RewardFn] = {}
log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # reward names already warned about under on_error="skip" (once per process)
MAX_ABS_REWARD = 1e15
"""Largest reward magnitude accepted (of one value, and of a sample's weighted sum): rewards are float32,
and the squares in their group statistics overflow it well before float32's own maximum (3.4e38)."""
PASSED = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")
"""Keyword arguments fairrl passes every reward function besides the dataset columns (TRL's set)."""
NOT_PASSED = frozenset({"prompt", "completion", *PASSED})
"""Dataset columns not passed as such: the prompt and reference completion (TRL leaves them out) and
columns named like a fairrl argument (fairrl's value wins)."""


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
    fn = import_callable(
        name, "reward", [*REWARDS, *REWARD_FACTORIES], "function, like my_package.rewards:my_reward"
    )
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
    """What to say about an invalid reward value (None if it is valid: a real number within
    :data:`MAX_ABS_REWARD`, or None)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"a {type(value).__name__}; expected a float, or None when the reward does not apply"
    if not math.isfinite(value):
        return "not finite; return a finite float, or None when the reward does not apply"
    if abs(value) > MAX_ABS_REWARD:
        return (
            f"larger than {MAX_ABS_REWARD:g} in magnitude, so the weighted sum and its group statistics are "
            "not finite in float32; return a smaller value (rescale the reward)"
        )
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


def _describe(err: BaseException) -> str:
    """``Type: message`` of an error a reward function raised, with a hint for TRL's keyword arguments."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, TypeError) and "unexpected keyword argument" in str(err):
        text += (
            f" (reward functions receive every dataset column and {', '.join(PASSED)} as keyword "
            "arguments, as in TRL; end the function's parameters with **kwargs)"
        )
    return text


@dataclass
class _Inputs:
    """One call's arguments: the batch, or one sample of it (for finding the sample that fails)."""

    prompts: list | None
    completions: list
    completion_ids: list | None
    columns: dict[str, list]
    state: TrainerState

    def sample(self, i: int) -> _Inputs:
        cut = lambda v: None if v is None else v[i : i + 1]  # noqa: E731
        cols = {k: v[i : i + 1] for k, v in self.columns.items()}
        return _Inputs(
            cut(self.prompts), self.completions[i : i + 1], cut(self.completion_ids), cols, self.state
        )

    def kwargs(self, logs: Any) -> dict[str, Any]:
        return {
            **self.columns,
            "prompts": self.prompts,
            "completions": self.completions,
            "completion_ids": self.completion_ids,
            "trainer_state": self.state,
            "log_extra": logs.log_extra,
            "log_metric": logs.log_metric,
        }


def _run(calls: list[tuple[str, RewardFn]], inputs: _Inputs, timeout: float | None,
         logs: RewardLogs | None) -> dict[str, Any]:  # fmt: skip
    """Each function's return value on ``inputs`` (or the exception it raised, or RewardTimeout): plain
    functions one after another, then the ``async def`` ones concurrently (as TRL orders them)."""
    out: dict[str, Any] = {}
    pending = []
    for name, fn in calls:
        cl = call_logs(logs)
        if is_async_reward(fn):
            pending.append((name, fn, inputs.kwargs(cl), cl))
            continue
        try:
            out[name] = call_sync(name, fn, inputs.kwargs(cl), timeout)
        except Exception as err:  # the user's function failed (or timed out): reported by the caller
            out[name] = err
            cl.close()
    results = call_async([(name, fn, kw) for name, fn, kw, _ in pending], timeout)
    for (name, _, _, cl), value in zip(pending, results, strict=True):
        out[name] = value
        if isinstance(value, BaseException):
            cl.close()
    return out


def _timeout_error(name: str, err: RewardTimeout, n: int) -> str:
    return (
        f"reward {name!r} did not return within rewards.timeout = {err.timeout:g} s on a batch of {n} "
        "completions; raise rewards.timeout (null = no limit) or make the function faster (the hung call is "
        "abandoned: Python cannot stop a thread)"
    )


def _diagnose(name: str, fn: RewardFn, inputs: _Inputs, batch_err: Exception, on_error: str,
              timeout: float | None) -> list[Any]:  # fmt: skip
    """After the batch call raised: re-run each sample alone (logging nothing) to name the one that
    fails; with ``on_error="skip"`` failing samples become None."""
    n = len(inputs.completions)
    out: list[Any] = []
    for i in range(n):
        got = _run([(name, fn)], inputs.sample(i), timeout, None)[name]
        if not isinstance(got, BaseException) and (
            got is None or not hasattr(got, "__len__") or len(got) != 1
        ):
            got = ValueError(f"returned {got!r} for a single sample")
        if not isinstance(got, BaseException):
            out.append(got[0])
            continue
        message = f"reward {name!r} raised {_describe(got)} on sample {i}"
        if isinstance(got, RewardTimeout):
            message = f"{got} on sample {i} alone"
        if on_error != "skip":
            raise RewardError(
                f"{message} ({_sample_text(inputs.prompts, inputs.completions, i)}). Fix the function, or set "
                "rewards.on_error: skip to drop such values"
            ) from None
        _skip(name, message)
        out.append(None)
    if on_error != "skip" and n:  # every sample passes alone: the batch call itself is at fault
        raise RewardError(
            f"reward {name!r} raised {_describe(batch_err)} on the batch of {n}, though every sample passes "
            "on its own"
        ) from None
    return out


def _values(
    name: str, fn: RewardFn, got: Any, inputs: _Inputs, on_error: str, timeout: float | None
) -> list[Any]:
    """The function's values for the batch from what its call gave (``got``: values or an exception)."""
    n = len(inputs.completions)
    if isinstance(got, RewardTimeout):
        if on_error != "skip":
            raise RewardError(_timeout_error(name, got, n))
        _skip(name, _timeout_error(name, got, n))
        return [None] * n
    if isinstance(got, Exception):
        return _diagnose(name, fn, inputs, got, on_error, timeout)
    if got is None or not hasattr(got, "__len__") or len(got) != n:
        what = "None" if got is None else f"{len(got)} values" if hasattr(got, "__len__") else repr(got)
        message = (
            f"reward {name!r} returned {what} for a batch of {n} completions; return one value per completion"
        )
        if on_error != "skip":
            raise RewardError(message)
        _skip(name, message)
        return [None] * n
    return list(got)


def evaluate_rewards(
    funcs: dict[str, RewardFn],
    prompts: list,
    completions: list,
    columns: dict[str, list],
    on_error: Literal["raise", "skip"] = "raise",
    *,
    completion_ids: list[list[int]] | None = None,
    trainer_state: TrainerState | None = None,
    logs: RewardLogs | None = None,
    timeout: float | None = None,
) -> torch.Tensor:
    """Call every reward function on the batch -> ``[N, K]`` float tensor, NaN where a reward is None.

    Each function gets ``prompts``, ``completions``, the dataset ``columns`` (except ``prompt`` and
    ``completion``, as in TRL; a column named like one of :data:`PASSED` is replaced by fairrl's value),
    ``completion_ids`` (token ids per completion, no padding; None when the caller has none),
    ``trainer_state`` (:class:`~fairrl.rewards.call.TrainerState`; zeros when not given) and
    ``log_extra`` / ``log_metric`` (recorded in ``logs``, dropped when it is None). Plain functions run
    one after another, ``async def`` ones concurrently; each call may take at most ``timeout`` seconds
    (None = no limit; :mod:`fairrl.rewards.call`).

    A function that raises, runs past the limit, returns the wrong number of values, a non-number,
    NaN, inf or a value beyond +-:data:`MAX_ABS_REWARD` stops the run with a :class:`RewardError`
    naming it, the sample index and a shortened sample (``on_error="raise"``), or has the affected
    values set to NaN with one warning per function (``on_error="skip"``).
    """
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"rewards.on_error must be 'raise' or 'skip', got {on_error!r}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"rewards.timeout must be a positive number of seconds or null, got {timeout!r}")
    n = len(completions)
    bad_cols = [k for k, v in columns.items() if len(v) != n]
    if completion_ids is not None and len(completion_ids) != n:
        bad_cols.append("completion_ids")
    if bad_cols:
        raise RewardError(f"columns {bad_cols} do not have one value per completion ({n})")
    cols = {k: v for k, v in columns.items() if k not in NOT_PASSED}
    inputs = _Inputs(prompts, completions, completion_ids, cols, trainer_state or TrainerState())
    got = _run(list(funcs.items()), inputs, timeout, logs)
    out = torch.full((n, len(funcs)), math.nan)  # [N, K]
    for k, (name, fn) in enumerate(funcs.items()):
        for i, value in enumerate(_values(name, fn, got[name], inputs, on_error, timeout)):
            problem = _invalid(value)
            if problem is None:
                out[i, k] = _as_float(value)
                continue
            message = f"reward {name!r} returned {value!r} for sample {i}: {problem}"
            if on_error != "skip":
                raise RewardError(f"{message} ({_sample_text(prompts, completions, i)})")
            _skip(name, message)
    return out


def check_weighted_sum(per_fn: torch.Tensor, weights: Sequence[float], names: Sequence[str]) -> None:
    """Raise a :class:`RewardError` if a sample's weighted reward sum_k |w_k r_k| (over the functions
    that apply, ``per_fn`` ``[..., K]``) is not finite or exceeds :data:`MAX_ABS_REWARD`, naming the
    functions, their values and weights (a huge weight on a valid reward)."""
    w = torch.tensor(list(weights), dtype=torch.float64)
    x = per_fn.detach().to(torch.float64).reshape(-1, per_fn.shape[-1])  # [N, K]
    parts = torch.where(torch.isnan(x), 0.0, (x * w).abs())  # [N, K]
    total = parts.sum(-1)  # [N]
    bad = ~(total <= MAX_ABS_REWARD)  # also true for inf and NaN
    if not bad.any():
        return
    i = int(bad.nonzero()[0, 0])
    terms = ", ".join(
        f"{names[k]!r} returned {float(x[i, k]):g} x weight {float(w[k]):g}"
        for k in parts[i].argsort(descending=True).tolist()
        if parts[i, k] > 0 or not math.isfinite(float(parts[i, k]))
    )
    raise RewardError(
        f"the weighted reward of sample {i} is {float(total[i]):g} in magnitude, beyond {MAX_ABS_REWARD:g} "
        f"(its weighted sum is not finite in float32): {terms}; lower the weight or rescale the reward"
    )

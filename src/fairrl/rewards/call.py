"""How reward functions are called: TRL's extra keyword arguments, time limits and ``async def`` rewards.

Besides ``prompts``, ``completions`` and the dataset columns, TRL's GRPOTrainer passes every reward
function ``completion_ids`` (the token ids of each completion, no padding), ``trainer_state`` (the
training progress) and two logging callbacks, ``log_extra(column, values)`` and ``log_metric(name,
value)``. This module provides them (:class:`TrainerState`, :class:`RewardLogs`) and runs the calls:

- a plain function runs in a daemon worker thread and is waited for at most ``timeout`` seconds
  (``rewards.timeout``; None = no limit, and then it runs in the calling thread, as in TRL). Python cannot
  stop a thread, so a call that runs past the limit is abandoned: it keeps running in the background
  (a daemon thread does not hold up the process's exit) and whatever it logs afterwards is dropped. A
  function that needs the main thread (``signal.signal`` / ``signal.alarm`` timeouts) and fails in the
  worker with "signal only works in main thread" is re-run once in the calling thread without the
  limit, with a warning, and from then on always runs there;
- ``async def`` functions (also callables whose ``__call__`` is ``async def``) of one batch run
  concurrently (``asyncio.gather``) on one event loop that lives in a daemon thread for the whole process,
  as TRL's does, so clients bound to a loop (an ``httpx.AsyncClient`` kept between calls) keep working.
  The caller needs no event loop of its own, and a caller inside a running loop (a notebook) works too.
  A coroutine past the limit is cancelled; one that blocks the loop (synchronous sleep inside ``async
  def``) is abandoned with its loop, and the next batch gets a fresh loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
import numbers
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)
ASYNC_GRACE_S = 2.0
"""Extra seconds given to the event loop, past the limit, to cancel coroutines before it is abandoned."""
_MAIN_THREAD_ONLY: set[str] = set()  # rewards that failed in a worker thread for using signals


@dataclass
class TrainerState:
    """Training progress passed to reward functions as ``trainer_state`` (the attributes TRL users read
    on ``transformers.TrainerState``).

    fairrl counts GRPO steps (generated batches, each followed by ``num_iterations`` optimiser steps)
    where TRL counts optimiser steps; ``global_step / max_steps`` is the same fraction of the run in both.
    """

    global_step: int = 0
    """Steps completed so far (0 while the first batch is scored)."""
    max_steps: int = 0
    """Steps of the whole run (``max_steps``)."""
    epoch: float = 0.0
    """Passes over the training prompts so far, fractional (prompts drawn / training prompts)."""


def _metric_value(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"log_metric({name!r}, {value!r}): the value must be a number")
    return float(value)


def _extra_values(column: str, values: Any) -> list[Any]:
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise TypeError(f"log_extra({column!r}, ...): pass a list of values, one per sample")
    return list(values)


class RewardLogs:
    """What reward functions log through ``log_metric`` and ``log_extra`` during one step (thread-safe).

    ``log_metric(name, value)``: a scalar; the values logged during a step are averaged and logged under
    ``name`` with the step's metrics, as TRL does. ``log_extra(column, values)``: one value per sample of
    the call's batch, a column of TRL's completions table: the training loop keeps them with the batch
    (``Batch.extra``, for the sample-completions table) and :meth:`flush` also logs the mean of a
    column's numeric values as the metric ``extra/<column>/mean``.
    """

    def __init__(self) -> None:
        self.metrics: dict[str, list[float]] = defaultdict(list)
        self.extra: dict[str, list[Any]] = defaultdict(list)
        self._lock = threading.Lock()

    def log_metric(self, name: str, value: float) -> None:
        """Record a scalar ``value`` under the metric ``name`` (TRL's ``log_metric``)."""
        value = _metric_value(name, value)
        with self._lock:
            self.metrics[str(name)].append(value)

    def log_extra(self, column: str, values: list) -> None:
        """Record per-sample ``values`` under ``column`` (TRL's ``log_extra``)."""
        values = _extra_values(column, values)
        with self._lock:
            self.extra[str(column)].extend(values)

    def merge(self, other: RewardLogs) -> None:
        """Add what ``other`` recorded to this one."""
        with other._lock:
            metrics = {k: list(v) for k, v in other.metrics.items()}
            extra = {k: list(v) for k, v in other.extra.items()}
        with self._lock:
            for k, v in metrics.items():
                self.metrics[k].extend(v)
            for k, v in extra.items():
                self.extra[k].extend(v)

    def extra_columns(self, n: int) -> dict[str, list[Any]]:
        """The ``log_extra`` values as columns of exactly ``n`` values (cut, or padded with None)."""
        with self._lock:
            return {k: (list(v) + [None] * n)[:n] for k, v in self.extra.items()}

    def flush(self) -> dict[str, float]:
        """The step's logged metrics (means) and ``extra/<column>/mean`` of numeric extras; then clears."""
        with self._lock:
            out = {name: sum(v) / len(v) for name, v in self.metrics.items() if v}
            for column, values in self.extra.items():
                nums = [float(x) for x in values if isinstance(x, numbers.Real) and not isinstance(x, bool)]
                nums = [x for x in nums if math.isfinite(x)]
                if nums:
                    out[f"extra/{column}/mean"] = sum(nums) / len(nums)
            self.metrics.clear()
            self.extra.clear()
        return out


class _CallLogs:
    """The callbacks handed to one call: forward to ``target`` until closed (a timed-out or diagnostic
    call logs nothing)."""

    def __init__(self, target: RewardLogs | None):
        self.target = target

    def close(self) -> None:
        self.target = None

    def log_metric(self, name: str, value: float) -> None:
        value = _metric_value(name, value)  # checked even when dropped, so a mistake shows at once
        target = self.target
        if target is not None:
            target.log_metric(name, value)

    def log_extra(self, column: str, values: list) -> None:
        values = _extra_values(column, values)
        target = self.target
        if target is not None:
            target.log_extra(column, values)


def call_logs(target: RewardLogs | None) -> _CallLogs:
    """Fresh ``log_metric`` / ``log_extra`` callbacks for one call, writing to ``target`` (None: dropped)."""
    return _CallLogs(target)


class RewardTimeout(Exception):
    """A reward call ran past its time limit (internal; turned into a RewardError by the caller)."""

    def __init__(self, name: str, timeout: float):
        super().__init__(f"reward {name!r} did not return within rewards.timeout = {timeout:g} s")
        self.name, self.timeout = name, timeout


def is_async_reward(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an ``async def`` function (or a partial of one, or has an ``async def __call__``)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 (a callable object's own method)
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def _signal_error(err: BaseException) -> bool:
    return isinstance(err, ValueError) and "signal only works in main thread" in str(err)


async def _awaited(value: Any) -> Any:
    return await value


def _in_thread(fn: Callable[..., Any], kwargs: dict[str, Any], name: str) -> concurrent.futures.Future:
    """Start ``fn(**kwargs)`` in a daemon thread (grad mode of the caller); its future."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    grad = torch.is_grad_enabled()

    def work() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            with torch.set_grad_enabled(grad):
                value = fn(**kwargs)
                if inspect.isawaitable(value):  # a plain callable that returned a coroutine
                    value = asyncio.run(_awaited(value))
        except BaseException as err:  # noqa: BLE001 (handed to the caller, which re-raises it)
            future.set_exception(err)
        else:
            future.set_result(value)

    threading.Thread(target=work, name=f"fairrl-reward-{name}", daemon=True).start()
    return future


def call_sync(name: str, fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None) -> Any:
    """``fn(**kwargs)`` within ``timeout`` seconds (None = no limit: called in this thread).

    Raises :class:`RewardTimeout` past the limit (the call is abandoned, see the module docstring) and
    re-raises whatever ``fn`` raises.
    """
    if timeout is None or name in _MAIN_THREAD_ONLY:
        value = fn(**kwargs)
        return asyncio.run(_awaited(value)) if inspect.isawaitable(value) else value
    future = _in_thread(fn, kwargs, name)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise RewardTimeout(name, timeout) from None
    except ValueError as err:
        if not _signal_error(err):
            raise
        _MAIN_THREAD_ONLY.add(name)
        log.warning(
            "reward %r uses signals, which work only in the main thread, so it runs there from now on, "
            "without rewards.timeout", name,
        )  # fmt: skip
        return call_sync(name, fn, kwargs, None)


# -- async rewards: one event loop in a daemon thread -----------------------------------------


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fairrl-reward-loop", daemon=True)
        self.thread.start()


_LOOP: _Loop | None = None
_LOOP_LOCK = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or not _LOOP.thread.is_alive():
            _LOOP = _Loop()
        return _LOOP.loop


def _abandon_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Stop using ``loop`` (blocked by a coroutine); the next call starts a fresh one."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is not None and _LOOP.loop is loop:
            _LOOP = None
    loop.call_soon_threadsafe(loop.stop)  # takes effect if the blocking coroutine ever returns


async def _gather(calls: list[tuple[str, Callable[..., Any], dict[str, Any]]], timeout: float | None,
                  results: dict[int, Any]) -> None:  # fmt: skip
    """Run the calls concurrently; ``results[k]`` gets call k's value, exception or RewardTimeout."""

    async def one(k: int, name: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        try:
            task = asyncio.ensure_future(fn(**kwargs))
            finished, _ = await asyncio.wait({task}, timeout=timeout)
            if not finished:
                task.cancel()
                results[k] = RewardTimeout(name, timeout)
            else:
                results[k] = task.result()
        except Exception as err:  # noqa: BLE001 (reported by the caller, per function)
            results[k] = err

    await asyncio.gather(*(one(k, name, fn, kw) for k, (name, fn, kw) in enumerate(calls)))


def call_async(
    calls: list[tuple[str, Callable[..., Any], dict[str, Any]]], timeout: float | None
) -> list[Any]:
    """Run ``async def`` rewards ``(name, fn, kwargs)`` concurrently; per call its value, or the exception
    it raised, or :class:`RewardTimeout` (module docstring). Works from any thread."""
    if not calls:
        return []
    loop = _event_loop()
    results: dict[int, Any] = {}
    t0 = time.perf_counter()
    future = asyncio.run_coroutine_threadsafe(_gather(calls, timeout, results), loop)
    try:
        future.result(None if timeout is None else timeout + ASYNC_GRACE_S)
    except concurrent.futures.TimeoutError:  # a coroutine blocks the loop: give up on it and the loop
        future.cancel()
        _abandon_loop(loop)
        log.warning(
            "the reward event loop was blocked for %.0f s; a fresh one is used", time.perf_counter() - t0
        )
    got = dict(results)
    return [got.get(k, RewardTimeout(name, timeout or 0.0)) for k, (name, _, _) in enumerate(calls)]

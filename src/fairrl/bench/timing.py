"""Phase clocks and peak memory per phase for the benchmark.

Times are wall-clock (``time.perf_counter``). On CUDA every phase boundary synchronises the device, so
a phase is charged for the kernels it launched rather than the ones that happen to finish inside it;
both sides pay the same few synchronisations.

Memory comes from a resettable high-water mark, read and reset at every phase boundary, so it costs
nothing between boundaries (no sampling thread) and misses no peak however short:

- CUDA: ``torch.cuda.max_memory_allocated`` / ``reset_peak_memory_stats`` (tensors only, not the
  allocator's cached blocks);
- CPU (Linux): the process's peak resident set ``VmHWM`` from ``/proc/self/status``, reset by writing
  ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). Resident memory is what runs a machine out of
  memory; it also counts memory malloc keeps after a free, so a side that runs after the other has
  grown the heap may look cheaper than it is. So on the CPU the benchmark runs one extra step per side
  for memory, which starts with glibc's ``malloc_trim(0)`` (memory freed earlier goes back to the
  system, and the step's growth above its start is its own); its time is not counted, because a
  trimmed heap has to fault its pages in again, which steady-state training does not. Elsewhere CPU
  memory is not reported (None).

The interval between two boundaries is charged to the innermost open phase (``other`` when none is
open), so nested phases (the reference pass inside the update) keep their own peaks. A step reports
its absolute peak and the peak above its starting level (``step_bytes``): the step's own working
memory (activations, KV cache, logits, gradients), comparable between sides even though one process
holds both sides' models.

An earlier version sampled glibc's ``mallinfo2`` every 5 ms from a thread; that walked malloc's bins
under its lock and slowed the decode loop it was measuring by up to 2x (both sides alike).
"""

from __future__ import annotations

import ctypes
import functools
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

PHASES = ("generate", "reference", "forward_backward", "optimizer", "other")


_STATUS = Path("/proc/self/status")


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field_name: str) -> int:
    match = re.search(rf"^{field_name}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"{field_name} not in {_STATUS}")
    return int(match.group(1)) * 1024


class PeakMeter:
    """A resettable memory high-water mark of one device (module docstring); ``kind`` None: unavailable."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.kind: str | None = "cuda_allocated" if self.cuda else None
        if not self.cuda:
            try:
                _CLEAR_REFS.write_text("5")
                _status_kib("VmHWM")
                self.kind = "cpu_resident"
            except OSError:
                self.kind = None

    def release(self) -> None:
        """Hand memory malloc keeps after frees back to the system (glibc), so resident = in use."""
        if not self.cuda and self.kind and _TRIM is not None:
            _TRIM(0)

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind:
            _CLEAR_REFS.write_text("5")

    def peak(self) -> int | None:
        """Highest level since the last reset (bytes)."""
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device)
        return _status_kib("VmHWM") if self.kind else None

    def current(self) -> int | None:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        return _status_kib("VmRSS") if self.kind else None


@dataclass
class StepRecord:
    """One timed step of one side."""

    seconds: float  # whole step, wall clock
    phases: dict[str, float]  # seconds per phase in PHASES (``other`` = the rest of the step)
    completion_tokens: int  # generated tokens that entered the loss
    prompt_tokens: list[int]  # real prompt tokens per prompt
    peak_bytes: int | None  # highest memory level during the step
    step_bytes: int | None  # peak_bytes minus the level at the step's start
    phase_peak_bytes: dict[str, int] = field(default_factory=dict)  # peak per phase (those that ran)
    memory_step: bool = False  # began with a trimmed heap: its memory counts, its time does not


class PhaseClock:
    """Seconds and peak memory per named phase within one step.

    ``start_step`` / ``end_step`` bracket a step; ``phase`` (or ``enter`` / ``exit``) brackets a phase
    inside it. At each boundary the time and the meter's peak since the last boundary are charged to
    the innermost open phase (``other`` when none is open; the peak also to the step), then the meter
    is reset: a phase's time excludes the phases nested in it.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.meter = PeakMeter(device)
        self.times: dict[str, float] = defaultdict(float)
        self.peaks: dict[str, int] = {}
        self._open: list[str] = []
        self._t0 = self._last = 0.0
        self._base: int | None = None
        self._released = False

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _mark(self) -> None:
        """Charge the time and peak memory since the last boundary to the innermost open phase."""
        t = self.now()
        name = self._open[-1] if self._open else "other"
        self.times[name] += t - self._last
        self._last = t
        if self.meter.kind is None:
            return
        level = self.meter.peak()
        for key in (name, "step"):
            self.peaks[key] = max(self.peaks.get(key, 0), level)
        self.meter.reset()

    def enter(self, name: str) -> None:
        self._mark()
        self._open.append(name)

    def exit(self, name: str) -> None:
        self._mark()
        opened = self._open.pop()
        if opened != name:
            raise RuntimeError(f"phase {name!r} closed while {opened!r} was open")

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.enter(name)
        try:
            yield
        finally:
            self.exit(name)

    def wrap(self, fn: Callable, name: str, when: Callable[[], bool] | None = None) -> Callable:
        """``fn`` timed into phase ``name`` (only on calls where ``when()`` is true, if given)."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if when is not None and not when():
                return fn(*args, **kwargs)
            with self.phase(name):
                return fn(*args, **kwargs)

        return timed

    def start_step(self, release: bool = False) -> None:
        """Forget what came before; the step starts now (``release``: after trimming the heap)."""
        self.times, self.peaks, self._open = defaultdict(float), {}, []
        self._released = release
        if release:
            self.meter.release()
        self._t0 = self._last = self.now()
        self.meter.reset()
        self._base = self.meter.current()

    def end_step(self, completion_tokens: int, prompt_tokens: list[int], rename: dict | None = None) -> StepRecord:
        """The step's record; ``rename`` maps measured phase names to names in PHASES."""
        self._mark()
        total = self._last - self._t0
        rename = rename or {}
        times: dict[str, float] = defaultdict(float)
        for k, v in self.times.items():
            times[rename.get(k, k)] += v
        peaks: dict[str, int] = {}
        for k, v in self.peaks.items():
            peaks[rename.get(k, k)] = max(peaks.get(rename.get(k, k), 0), v)
        step_peak = peaks.pop("step", None)
        return StepRecord(
            seconds=total,
            phases=close_phases(total, times),
            completion_tokens=completion_tokens,
            prompt_tokens=prompt_tokens,
            peak_bytes=step_peak,
            step_bytes=None if step_peak is None or self._base is None else step_peak - self._base,
            phase_peak_bytes=peaks,
            memory_step=self._released,
        )


def time_optimizer(optimizer: torch.optim.Optimizer, clock: PhaseClock, name: str = "optimizer") -> None:
    """Charge every ``optimizer.step()`` to phase ``name`` through torch's step pre/post hooks."""
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: clock.enter(name))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: clock.exit(name))


def close_phases(total: float, measured: dict[str, float]) -> dict[str, float]:
    """Every phase of :data:`PHASES` (0 when absent) with ``other = total - sum(measured phases)``."""
    out = {k: measured.get(k, 0.0) for k in PHASES if k != "other"}
    out["other"] = total - sum(out.values())
    return out


def rank_sums(per_rank: list[list[int]]) -> list[int]:
    """Per-step sums over the ranks of per-rank, per-step counts."""
    return [sum(step) for step in zip(*per_rank, strict=True)]

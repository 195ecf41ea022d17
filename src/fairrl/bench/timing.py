"""Phase clocks and per-step memory for the benchmark.

Times are wall-clock (``time.perf_counter``). On CUDA every phase boundary synchronises the device, so
a phase is charged for the kernels it launched rather than the ones that happen to finish inside it;
both sides pay the same few synchronisations.

Memory per step:

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the step's start
  (tensors only, not the allocator's cached blocks);
- CPU: the live heap, sampled every 5 ms by a background thread: with glibc, ``mallinfo2()``'s bytes in
  use (``uordblks`` + ``hblkhd``; torch's CPU tensors come from malloc). The resident set size is a poor
  per-step measure, because malloc keeps freed memory mapped: once one side has grown the heap, the
  other's step reuses it without any change in RSS; it is the fallback (``psutil``) off glibc. The
  lifetime peak of ``resource.getrusage`` cannot be reset per step, so without either CPU memory is
  not reported (None). Sampling misses peaks shorter than the interval; a training step's peak (all
  activations alive at the start of backward) lasts far longer.

Both report the absolute peak and the peak above the step's starting level (``step_bytes``): the step's
own working memory (activations, KV cache, logits, gradients), comparable between sides even though
one process holds both sides' models.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

PHASES = ("generate", "reference", "forward_backward", "optimizer", "other")


class PhaseClock:
    """Accumulates seconds per named phase within one step."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.times: dict[str, float] = defaultdict(float)

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = self.now()
        try:
            yield
        finally:
            self.times[name] += self.now() - t0

    def wrap(self, fn: Callable, name: str, when: Callable[[], bool] | None = None) -> Callable:
        """``fn`` timed into phase ``name`` (only on calls where ``when()`` is true, if given)."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if when is not None and not when():
                return fn(*args, **kwargs)
            with self.phase(name):
                return fn(*args, **kwargs)

        return timed

    def take(self) -> dict[str, float]:
        """The accumulated times, then start over."""
        out, self.times = dict(self.times), defaultdict(float)
        return out


def time_optimizer(optimizer: torch.optim.Optimizer, clock: PhaseClock, name: str = "optimizer") -> None:
    """Charge every ``optimizer.step()`` to phase ``name`` through torch's step pre/post hooks."""
    start: list[float] = []

    def pre(opt, args, kwargs):
        start.append(clock.now())

    def post(opt, args, kwargs):
        clock.times[name] += clock.now() - start.pop()

    optimizer.register_step_pre_hook(pre)
    optimizer.register_step_post_hook(post)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]  # fmt: skip


def _heap_reader() -> Callable[[], int] | None:
    """Bytes malloc has handed out and not taken back (glibc >= 2.33), or None elsewhere."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2

    def read() -> int:
        info = fn()
        return info.uordblks + info.hblkhd

    return read


def _rss_reader() -> Callable[[], int] | None:
    try:
        import psutil
    except ImportError:
        return None
    proc = psutil.Process()
    return lambda: proc.memory_info().rss


def cpu_memory_reader() -> tuple[str | None, Callable[[], int] | None]:
    """(kind, reader) of the best available CPU memory measure (module docstring)."""
    if platform.system() == "Linux" and (read := _heap_reader()) is not None:
        return "cpu_heap", read
    if (read := _rss_reader()) is not None:
        return "cpu_rss", read
    return None, None


class MemoryProbe:
    """Peak memory during a ``with`` block (see the module docstring); fields are None when unavailable."""

    def __init__(self, device: torch.device, interval_s: float = 0.005):
        self.device = device
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self.step_bytes: int | None = None
        self.kind, self._read = ("cuda_allocated", None) if device.type == "cuda" else cpu_memory_reader()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes or 0, self._read())

    def __enter__(self) -> MemoryProbe:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self._read is not None:
            self._base = self.peak_bytes = self._read()
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes or 0, self._read())
        else:
            return
        self.step_bytes = self.peak_bytes - self._base


@dataclass
class StepRecord:
    """One timed step of one side."""

    seconds: float  # whole step, wall clock
    phases: dict[str, float]  # seconds per phase in PHASES (``other`` = the rest of the step)
    completion_tokens: int  # generated tokens that entered the loss
    prompt_tokens: list[int]  # real prompt tokens per prompt
    peak_bytes: int | None
    step_bytes: int | None


def close_phases(total: float, measured: dict[str, float]) -> dict[str, float]:
    """Every phase of :data:`PHASES` (0 when absent) with ``other = total - sum(measured phases)``."""
    out = {k: measured.get(k, 0.0) for k in PHASES if k != "other"}
    out["other"] = total - sum(out.values())
    return out

"""Mix data sources at a ratio (e.g. FairReason's debias:reasoning = 1:4, arXiv 2507.23067)."""

from __future__ import annotations

import random

from fairrl.data.records import Example, units
from fairrl.errors import DataError


def _check(sources: dict[str, list[Example]], ratio: dict[str, float], n: int | None) -> None:
    if not sources:
        raise DataError("no data sources to mix")
    unknown = sorted(set(ratio) - set(sources))
    if unknown:
        raise DataError(f"data.ratio names unknown source(s) {unknown}; sources: {sorted(sources)}")
    unweighted = sorted(set(sources) - set(ratio))
    if unweighted:
        raise DataError(
            f"data source(s) {unweighted} have no entry in data.ratio; add one, or drop the source"
        )
    for name, w in ratio.items():
        if not (isinstance(w, (int, float)) and w > 0 and w != float("inf")):
            raise DataError(f"data.ratio.{name} must be positive (a finite number > 0), got {w!r}")
    empty = sorted(k for k, v in sources.items() if not v)
    if empty:
        raise DataError(
            f"data source(s) {empty} are empty; check their settings or drop them from data.ratio"
        )
    if n is not None and n < 0:
        raise DataError(f"the mixture size must be >= 0 or None, got {n}")


def mix_sources(
    sources: dict[str, list[Example]], ratio: dict[str, float], n: int | None = None, seed: int = 0
) -> list[Example]:
    """Interleave shuffled sources so that every prefix follows ``ratio`` as closely as possible.

    Schedule (deterministic "largest deficit"): item t (1-based) comes from the source k maximising
    ``w_k / sum(w) * t - taken_k``, ties to the alphabetically first name; with {bbq: 1, reasoning: 4}
    every block of 5 items holds one BBQ item. Each source is shuffled with ``seed``.
    ``n=None``: every item is used at most once and the stream stops when the source scheduled next is
    exhausted (the limiting source at that ratio). ``n`` given: exhausted sources are reshuffled and
    cycled until ``n`` items. Prompts that share a :attr:`~fairrl.data.records.Example.unit` are one
    draw: taken together, each counting toward its source's share.
    """
    _check(sources, ratio, n)
    rng = random.Random(seed)
    order = sorted(ratio)
    groups = {k: [[sources[k][i] for i in u] for u in units(sources[k])] for k in order}
    pools = {k: rng.sample(groups[k], len(groups[k])) for k in order}
    taken = dict.fromkeys(order, 0)  # items drawn so far (drives the schedule)
    cursor = dict.fromkeys(order, 0)  # position in the current shuffled pool
    total = sum(ratio.values())
    out: list[Example] = []
    while n is None or len(out) < n:
        t = len(out) + 1
        name = max(order, key=lambda k: (ratio[k] / total * t - taken[k], -order.index(k)))
        if cursor[name] >= len(pools[name]):
            if n is None:
                break
            pools[name] = rng.sample(groups[name], len(groups[name]))
            cursor[name] = 0
        unit = pools[name][cursor[name]]
        out.extend(unit if n is None else unit[: n - len(out)])
        cursor[name] += 1
        taken[name] += len(unit)
    return out

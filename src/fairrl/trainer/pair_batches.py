"""Training batches of preference pairs: plain shuffles, or batches balanced over groups and sources.

Every batch is a pure function of (pairs, step, batch size, seed, balance), so a resumed run draws the
same batches as an uninterrupted one without saving any sampler state.

- ``none``: each epoch is a shuffle of the pairs (drawn from (seed, epoch)), cut into consecutive batches.
- ``group`` / ``source`` / ``group_source``: the pairs are split into strata (their group, their source,
  or the (group, source) cell). An epoch still holds n pairs, ``ceil(n / K)`` from each of the K strata: a
  stratum larger than that contributes a fresh random subset each epoch, a smaller one is cycled
  (reshuffled each time round). The strata's streams are interleaved round by round, each round in a
  random stratum order, so a batch of B >= K pairs holds every stratum, about B / K pairs each.

Why: with the packaged data a group's pairs come mostly from one benchmark (profession is StereoSet only)
and group sizes differ several-fold; group-level objectives (:mod:`fairrl.losses.group_fairness`) need every
group in the batch, and balancing is the data-side lever next to the loss-side one (group-balanced BT
reweights the loss instead of the draw). It is the stratified sampler of group DRO's experiments (Sagawa
et al., ICLR 2020, "upweighting" by resampling) applied per batch. Deviation: equal shares, no option for
other target shares.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from fairrl.data.pair_records import PreferencePair

BALANCE_KEYS = {
    "group": lambda p: p.group,
    "source": lambda p: p.source,
    "group_source": lambda p: f"{p.group} | {p.source}",
}


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """Pair order of one epoch: a permutation drawn from (seed, epoch), so a resumed run sees the same."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def balanced_order(keys: Sequence[str], seed: int, epoch: int) -> list[int]:
    """Indices of one balanced epoch (module docstring): ``len(keys)`` indices, every stratum's
    ``ceil(n / K)`` interleaved round by round."""
    strata: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        strata.setdefault(key, []).append(i)
    names = sorted(strata)
    per = math.ceil(len(keys) / max(1, len(names)))
    streams = {}
    for name in names:
        stream: list[int] = []
        cycle = 0
        while len(stream) < per:
            members = list(strata[name])
            random.Random(f"{seed}/{epoch}/{name}/{cycle}").shuffle(members)
            stream += members
            cycle += 1
        streams[name] = stream[:per]
    rng = random.Random(f"{seed}/{epoch}/rounds")
    order: list[int] = []
    for j in range(per):
        rnd = list(names)
        rng.shuffle(rnd)
        order += [streams[name][j] for name in rnd]
    return order[: len(keys)]


def batch_at(
    pairs: Sequence[PreferencePair], step: int, batch_size: int, seed: int, balance: str = "none"
) -> list[PreferencePair]:
    """Training batch number ``step`` (0-based): consecutive slices of each epoch's order; the last slice
    of an epoch is short rather than mixed with the next epoch."""
    per_epoch = math.ceil(len(pairs) / batch_size)
    epoch, k = divmod(step, per_epoch)
    if balance == "none":
        order = epoch_order(len(pairs), seed, epoch)
    else:
        order = balanced_order([BALANCE_KEYS[balance](p) for p in pairs], seed, epoch)
    return [pairs[i] for i in order[k * batch_size : (k + 1) * batch_size]]

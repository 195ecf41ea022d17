"""The order in which a run visits its training prompts: deterministic in the seed and resumable."""

from __future__ import annotations

import torch

from fairrl.data.records import Example, units


class PromptStream:
    """Deterministic, resumable walk over the training mixture (cycles with a fresh order each epoch).

    Each epoch shuffles the *units* (:func:`units`) and walks them in turn, so prompts of one unit come
    one after the other and usually land in the same step. Without units this is a plain permutation.
    """

    def __init__(self, examples: list[Example], seed: int, position: int = 0):
        self.examples = examples
        self.seed = seed
        self.position = position
        self._units = units(examples)
        self._epoch, self._perm = -1, []

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self._units), generator=g).tolist()
        return [i for u in perm for i in self._units[u]]

    def take(self, n: int) -> list[Example]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.position, len(self.examples))
            if self._epoch != epoch:
                self._epoch, self._perm = epoch, self._order(epoch)
            out.append(self.examples[self._perm[i]])
            self.position += 1
        return out

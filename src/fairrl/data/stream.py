"""The order in which a run visits its training prompts: deterministic in the seed and resumable."""

from __future__ import annotations

import torch

from fairrl.data.records import Example


class PromptStream:
    """Deterministic, resumable walk over the training mixture (cycles with a fresh order each epoch)."""

    def __init__(self, examples: list[Example], seed: int, position: int = 0):
        self.examples = examples
        self.seed = seed
        self.position = position
        self._epoch, self._perm = -1, []

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.examples), generator=g).tolist()

    def take(self, n: int) -> list[Example]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.position, len(self.examples))
            if self._epoch != epoch:
                self._epoch, self._perm = epoch, self._order(epoch)
            out.append(self.examples[self._perm[i]])
            self.position += 1
        return out

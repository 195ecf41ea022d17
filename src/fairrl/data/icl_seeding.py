"""XRPO's in-context seeding (Bamba et al., arXiv 2510.06672, sec. 3.2): a prompt on which every rollout
failed is rolled out next time with a solved exemplar in its context (``algorithm.icl_seeding``).

A group whose G rewards all stay below ``sampler_success`` gives GRPO no signal, and sampling it again
from the same context usually fails again. :class:`IclSeeding` wraps any prompt sampler
(:mod:`fairrl.data.samplers`): after such a group the prompt is marked *stuck*; whenever a stuck prompt is
drawn again, the policy sees one worked example first, a user turn with another prompt of the same source
and an assistant turn with that prompt's reference reply (:func:`fairrl.data.sft_targets.sft_target`:
BBQ's gold answer with its rationale, a reasoning task's answer, GSM8K's worked solution, a user row's
``completion``), then the prompt itself. A seeded group that earns a success unmarks the prompt. Reward
functions still receive the original prompt (the answer is judged against the original question).

Deviations / unverified: the authors' code could not be read here. Their exemplars are curated per task;
fairrl takes them from the run's own training data (no extra files), one fixed exemplar per stuck prompt
(chosen with the run seed), and trains on the seeded context as rolled out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from fairrl.data.records import Example
from fairrl.data.sft_targets import sft_target


def seeded_prompt(example: Example, exemplar: Example, reply: str) -> list[dict[str, Any]]:
    """``example``'s messages with the exemplar's question and ``reply`` as one turn before its last
    user message."""
    question = next(m for m in reversed(exemplar.prompt) if m["role"] == "user")
    last = max(i for i, m in enumerate(example.prompt) if m["role"] == "user")
    turn = [{"role": "user", "content": question["content"]}, {"role": "assistant", "content": reply}]
    return [*example.prompt[:last], *turn, *example.prompt[last:]]


class IclSeeding:
    """Wraps a prompt sampler: stuck prompts (every completion below ``success``) come back seeded."""

    def __init__(self, inner, examples: list[Example], seed: int, success: float,
                 state: dict[str, Any] | None = None):  # fmt: skip
        self.inner, self.examples, self.seed, self.success = inner, examples, seed, success
        self.stuck: set[int] = set((state or {}).get("stuck", []))
        self._index = {id(e): i for i, e in enumerate(examples)}
        self._targets = {i: t for i, e in enumerate(examples) if (t := sft_target(e)) is not None}
        self._by_source: dict[str, list[int]] = {}
        for i in self._targets:
            self._by_source.setdefault(examples[i].source, []).append(i)
        self._origin: dict[int, Example] = {}  # id(seeded copy) -> the training example it stands for
        self._seeded = 0

    @property
    def position(self) -> int:
        return self.inner.position

    def exemplar(self, i: int) -> int | None:
        """The fixed exemplar of prompt ``i``: another prompt of its source that has a reference reply."""
        pool = [j for j in self._by_source.get(self.examples[i].source, []) if j != i]
        if not pool:
            return None
        return pool[int(np.random.default_rng([self.seed, i]).integers(len(pool)))]

    def take(self, n: int) -> list[Example]:
        out, self._seeded = [], 0
        for e in self.inner.take(n):
            i = self._index[id(e)]
            j = self.exemplar(i) if i in self.stuck else None
            if j is not None:
                copy = dataclasses.replace(e, prompt=seeded_prompt(e, self.examples[j], self._targets[j]))
                self._origin[id(copy)] = e
                self._seeded += 1
                e = copy
            out.append(e)
        return out

    def observe(self, examples: list[Example], rewards: torch.Tensor) -> None:
        """``rewards`` [P, G]: a group with no success marks its prompt stuck, one with a success frees it."""
        originals = [self._origin.pop(id(e), e) for e in examples]
        self.inner.observe(originals, rewards)
        best = rewards.detach().float().cpu().nan_to_num(nan=-torch.inf).amax(dim=1).tolist()  # [P]; NaN = no reward
        for e, b in zip(originals, best, strict=True):
            (self.stuck.add if b < self.success else self.stuck.discard)(self._index[id(e)])

    def state(self) -> dict[str, Any]:
        return {**self.inner.state(), "stuck": sorted(self.stuck)}

    def stats(self) -> dict[str, float]:
        return {**self.inner.stats(), "seeding/stuck": float(len(self.stuck)), "seeding/seeded": float(self._seeded)}

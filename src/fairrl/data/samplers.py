"""Prompt samplers: which training prompts a GRPO step rolls out (``algorithm.prompt_sampler``).

- ``uniform``: the plain :class:`~fairrl.data.stream.PromptStream` walk (every prompt once per epoch).
- ``vade``: VADE (Hu et al., arXiv 2511.18902), variance-aware prompt selection from an online Beta
  posterior over each prompt's success rate, so that fewer groups have identical rewards (zero advantage).

A sampler has the stream's interface (``take(n)``, ``position``, ``examples``) plus ``observe(examples,
rewards)``, called with every scored rollout (the GRPO step calls it, dynamic-sampling refills included),
``state()`` for checkpoints and ``stats()`` for the step's metrics. Its randomness is a function of the run
seed and the number of draws so far, and its state is saved in each checkpoint, so a resumed run draws
exactly what the uninterrupted one would. Under multi-rank training every rank observes the gathered
(global) rewards, so every rank holds the same state and selects the same prompts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fairrl.data.icl_seeding import IclSeeding
from fairrl.data.records import Example
from fairrl.data.stream import PromptStream

SAMPLERS: dict[str, Any] = {}
"""name -> sampler class (with a ``from_config(alg, examples, seed, state)`` constructor)."""


def register_sampler(name: str):
    def wrap(cls):
        SAMPLERS[name] = cls
        return cls

    return wrap


@register_sampler("uniform")
class UniformSampler(PromptStream):
    """The deterministic epoch walk of :class:`PromptStream`; observes nothing."""

    def __init__(self, examples: list[Example], seed: int, state: dict[str, Any] | None = None):
        super().__init__(examples, seed, int((state or {}).get("position", 0)))

    @classmethod
    def from_config(cls, alg, examples: list[Example], seed: int, state: dict[str, Any] | None):
        return cls(examples, seed, state)

    def observe(self, examples: list[Example], rewards: torch.Tensor) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"position": self.position}

    def stats(self) -> dict[str, float]:
        return {}


def beta_update(alpha: float, beta: float, successes: float, failures: float, keep: float,
                prior: tuple[float, float]) -> tuple[float, float]:  # fmt: skip
    """One observation of a prompt: old evidence shrunk toward the prior, then the new counts added.

    alpha' = a0 + keep * (alpha - a0) + k,   beta' = b0 + keep * (beta - b0) + (n - k)

    (VADE's short-scale prior decay; the same form as verl's MoPPS recipe, alpha*lambda + a0*(1 - lambda) + k.)
    """
    a0, b0 = prior
    return a0 + keep * (alpha - a0) + successes, b0 + keep * (beta - b0) + failures


def variance_scores(alpha: np.ndarray, beta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thompson draw p ~ Beta(alpha, beta) per prompt and its reward variance p(1 - p) (a Bernoulli's)."""
    p = rng.beta(alpha, beta)
    return p * (1.0 - p)


@register_sampler("vade")
class VadeSampler:
    """VADE prompt selection (arXiv 2511.18902).

    Each call to ``take(n)`` draws ``ceil(candidates * n)`` candidate prompts from the uniform epoch walk,
    Thompson-samples each candidate's success rate p from its Beta(alpha, beta) posterior and keeps the n
    with the largest p(1 - p): the prompts whose groups are most likely to disagree. Prompts that share a
    unit (e.g. a BBQ question under both contexts) are scored by their mean and kept or dropped together.
    Each rollout updates the observed prompts' posteriors with :func:`beta_update` (a completion whose
    combined reward reaches ``success`` is a success), and every ``observe`` also shrinks all stored
    evidence toward the prior by ``forget`` (the slow scale of the two-scale decay: evidence of prompts not
    seen for a while fades as the policy drifts).

    Deviations / unverified: the authors' code was not available to read; the selection score p(1 - p)
    (expected Bernoulli reward variance), the MoPPS-style decay and the candidate pool drawn from the epoch
    walk (so every prompt keeps its chance each epoch) are this implementation's reading of the paper's
    description. Candidates not kept are skipped for the epoch; they come back as candidates in the next.
    In a run shorter than an epoch no prompt is seen twice, so per-prompt posteriors never leave the prior;
    ``group_prior`` (an extension, off by default) lets an unseen prompt borrow its group's success rate.
    """

    def __init__(self, examples: list[Example], seed: int, state: dict[str, Any] | None = None, *,
                 candidates: float = 4.0, success: float = 0.5, prior: tuple[float, float] = (1.0, 1.0),
                 keep: float = 0.9, forget: float = 0.99, group_prior: float = 0.0):  # fmt: skip
        state = state or {}
        self.stream = PromptStream(examples, seed, int(state.get("position", 0)))
        self.examples, self.seed = examples, seed
        self.candidates, self.success, self.prior, self.keep, self.forget = candidates, success, prior, keep, forget
        self.draws = int(state.get("draws", 0))
        self.evidence: dict[int, list[float]] = {int(k): list(v) for k, v in state.get("evidence", {}).items()}
        self.group_prior = group_prior
        self.groups: dict[str, list[float]] = {g: list(v) for g, v in state.get("groups", {}).items()}
        """Per ``Example.group``: decayed successes and failures of all its prompts (for ``group_prior``)."""
        self._index = {id(e): i for i, e in enumerate(examples)}
        self._last: dict[str, float] = {}

    @classmethod
    def from_config(cls, alg, examples: list[Example], seed: int, state: dict[str, Any] | None):
        return cls(examples, seed, state, candidates=alg.sampler_candidates, success=alg.sampler_success,
                   prior=(alg.vade_prior_alpha, alg.vade_prior_beta), keep=alg.vade_keep, forget=alg.vade_forget,
                   group_prior=alg.vade_group_prior)  # fmt: skip

    @property
    def position(self) -> int:
        return self.stream.position

    def posterior(self, i: int) -> tuple[float, float]:
        """Prompt ``i``'s Beta; an unseen prompt's is the prior, plus with ``group_prior`` = w > 0 w pseudo-rollouts
        at its group's smoothed success rate m = (s_g + a0) / (s_g + f_g + a0 + b0): (a0 + w m, b0 + w (1 - m))."""
        if i in self.evidence:
            return tuple(self.evidence[i])  # type: ignore[return-value]
        a0, b0 = self.prior
        if not self.group_prior or self.examples[i].group not in self.groups:
            return a0, b0
        s_g, f_g = self.groups[self.examples[i].group]
        m = (s_g + a0) / (s_g + f_g + a0 + b0)
        return a0 + self.group_prior * m, b0 + self.group_prior * (1.0 - m)

    def take(self, n: int) -> list[Example]:
        pool = self.stream.take(max(n, math.ceil(self.candidates * n)))
        rng = np.random.default_rng([self.seed, self.draws])
        self.draws += 1
        idx = [self._index[id(e)] for e in pool]
        a, b = np.array([[*self.posterior(i)] for i in idx]).T
        scores = variance_scores(a, b, rng)
        units: dict[str, list[int]] = {}
        for k, e in enumerate(pool):
            units.setdefault(e.unit if e.unit is not None else f"#{k}", []).append(k)
        ranked = sorted(units.values(), key=lambda ks: -float(np.mean(scores[ks])))  # stable: ties keep pool order
        chosen: list[int] = []
        for ks in ranked:
            chosen.extend(ks[: n - len(chosen)])
            if len(chosen) == n:
                break
        self._last = {"sampler/candidates": float(len(pool)), "sampler/selected_score": float(np.mean(scores[chosen])),
                      "sampler/candidate_score": float(np.mean(scores))}  # fmt: skip
        return [pool[k] for k in chosen]

    def observe(self, examples: list[Example], rewards: torch.Tensor) -> None:
        """Update the posteriors with one scored rollout: ``rewards`` [P, G] for ``examples`` [P]."""
        a0, b0 = self.prior
        for v in self.evidence.values():  # the slow scale: all evidence fades a little per observation
            v[0], v[1] = a0 + self.forget * (v[0] - a0), b0 + self.forget * (v[1] - b0)
        for v in self.groups.values():
            v[0], v[1] = self.forget * v[0], self.forget * v[1]
        r = rewards.detach().float().cpu()  # NaN: no reward (a skipped one, or an empty row of a smaller group)
        wins, seen = (r >= self.success).sum(dim=1).tolist(), (~torch.isnan(r)).sum(dim=1).tolist()  # [P]
        for e, k, n in zip(examples, wins, seen, strict=True):
            i = self._index[id(e)]
            self.evidence[i] = list(beta_update(*self.posterior(i), float(k), float(n - k), self.keep, self.prior))
            g = self.groups.setdefault(e.group, [0.0, 0.0])
            g[0], g[1] = g[0] + k, g[1] + (n - k)

    def state(self) -> dict[str, Any]:
        return {"position": self.position, "draws": self.draws, "groups": dict(sorted(self.groups.items())),
                "evidence": {str(i): v for i, v in sorted(self.evidence.items())}}  # fmt: skip

    def stats(self) -> dict[str, float]:
        """The last draw's candidate and selected mean scores, and the share of prompts with evidence."""
        return {**self._last, "sampler/seen": len(self.evidence) / max(len(self.examples), 1)}


def make_sampler(alg, examples: list[Example], seed: int, state: dict[str, Any] | None = None):
    """The sampler ``alg.prompt_sampler`` names (``alg``: the GRPO ``algorithm`` config), restored from a
    checkpoint's ``state`` (a checkpoint of a run from before samplers holds only ``position``)."""
    sampler = SAMPLERS[alg.prompt_sampler].from_config(alg, examples, seed, state)
    if alg.icl_seeding:  # XRPO: prompts on which every rollout failed come back with a solved exemplar
        sampler = IclSeeding(sampler, examples, seed, alg.sampler_success, state)
    return sampler

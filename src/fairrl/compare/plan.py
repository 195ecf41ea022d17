"""What ``fairrl compare`` runs: one arm per (method, debiasing share), each sized to the same budget.

Budget unit: **training sequences**, the (prompt, reply) sequences the loss is computed on. One step of

- grpo / ppo: ``algorithm.prompts_per_step * algorithm.num_generations`` sampled completions (each scored
  by the rewards; with ``num_iterations > 1`` the same batch is reused, not counted again);
- sft: ``sft.batch_size`` targets; kd: ``kd.batch_size`` replies (student's, teacher's or the data's);
- dpo: ``dpo.batch_size`` pairs = ``2 * dpo.batch_size`` sequences (chosen and rejected).

Each arm gets ``max_steps = ceil(budget / sequences per step)``, so every method sees about as many
sequences from the same data mixture. Sequences are the unit because they are what the data supplies and
what each objective consumes; the compare report also gives each run's optimiser steps, tokens in its
training forwards and training wall time, which equal-sequence budgets do *not* equalise (an RL sequence
must first be generated; a DPO pair costs a reference forward).

Everything else comes from the one config: the same model, LoRA, learning rate and schedule, rewards and
evaluation. ``max_minutes`` is lifted (a wall-clock cap would stop the slower methods short of the budget;
the report gives each run's minutes instead) and a ``warm_start`` is dropped (its SFT steps would be a second
strategy, outside the budget). One exception: ppo runs with ``algorithm.beta=0``, its KL being the
per-token penalty in the reward (``ppo.kl_coef``), as in TRL's PPO.

Debiasing share (FairReason's ratio, arXiv 2507.23067): ``r`` sets the weight of every BBQ source to
``r`` and the other sources' weights to ``1 - r`` in proportion to their configured weights, so a share
of ``r`` of the training stream is debiasing data (FairReason's 1:4 is ``r = 0.2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fairrl.config.grpo import TrainConfig
from fairrl.errors import ConfigError

METHODS = ("grpo", "ppo", "dpo", "sft", "kd")


def sequences_per_step(cfg: TrainConfig, method: str) -> int:
    """Training sequences one step of ``method`` computes its loss on (module docstring)."""
    if method in ("grpo", "ppo"):
        return cfg.algorithm.prompts_per_step * cfg.algorithm.num_generations
    if method == "sft":
        return cfg.sft.batch_size
    if method == "kd":
        return cfg.kd.batch_size
    if method == "dpo":
        return 2 * cfg.dpo.batch_size
    raise ConfigError(f"unknown method {method!r}; compare runs {', '.join(METHODS)}")


@dataclass(frozen=True)
class Arm:
    """One configuration compared: a method at a debiasing share (None = the config's mixture)."""

    method: str
    ratio: float | None
    steps: int
    sequences_per_step: int

    @property
    def name(self) -> str:
        return self.method if self.ratio is None else f"{self.method}-debias{round(100 * self.ratio)}"

    def overrides(self, cfg: TrainConfig) -> list[str]:
        """``--set`` overrides that turn the base config into this arm."""
        out = [f"method={self.method}", f"max_steps={self.steps}", f"run_name={self.name}", "logging_steps=1",
               "max_minutes=null",  # a wall-clock cap would cut slow methods short of the equal budget
               "warm_start.steps=0"]  # each arm one strategy, on the same budget (a warm start is sft steps)
        if self.method == "ppo":  # PPO's KL is the per-token penalty in its reward (ppo.kl_coef), not a loss term
            out.append("algorithm.beta=0")
        if self.ratio is not None:
            out += mixture_overrides(cfg, self.ratio)
        return out


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ConfigError(f"--methods takes a comma list of {', '.join(METHODS)}; got {text!r}")
    return list(dict.fromkeys(methods))


def parse_ratios(text: str | None) -> list[float | None]:
    """``"0.2,0.5"`` -> [0.2, 0.5]; None -> [None] (the config's own mixture)."""
    if not text:
        return [None]
    try:
        ratios = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(f"--ratios takes debiasing shares like 0.2,0.5, got {text!r}") from None
    bad = [r for r in ratios if not 0.0 < r < 1.0]
    if not ratios or bad:
        raise ConfigError(f"--ratios: each share must lie strictly between 0 and 1, got {text!r}")
    return list(dict.fromkeys(ratios))


def mixture_overrides(cfg: TrainConfig, ratio: float) -> list[str]:
    """Source weights that give BBQ sources a share ``ratio`` of the stream (module docstring)."""
    sources = cfg.data.sources
    bbq = [i for i, s in enumerate(sources) if s.kind == "bbq"]
    rest = [i for i, s in enumerate(sources) if s.kind != "bbq"]
    if not bbq or not rest:
        raise ConfigError("--ratios needs both a bbq source and another source (e.g. reasoning) in data.sources")
    bbq_total = sum(sources[i].weight for i in bbq)
    rest_total = sum(sources[i].weight for i in rest)
    weights = {i: ratio * sources[i].weight / bbq_total for i in bbq}
    weights.update({i: (1.0 - ratio) * sources[i].weight / rest_total for i in rest})
    return [f"data.sources.{i}.weight={w:.6g}" for i, w in sorted(weights.items())]


def plan_arms(cfg: TrainConfig, methods: list[str], ratios: list[float | None], budget: int) -> list[Arm]:
    """Every (method, ratio) arm with its step count for ``budget`` training sequences."""
    if budget < 1:
        raise ConfigError(f"--budget must be at least 1 training sequence, got {budget}")
    arms = []
    for ratio in ratios:
        for m in methods:
            per = sequences_per_step(cfg, m)
            arms.append(Arm(m, ratio, max(1, math.ceil(budget / per)), per))
    return arms

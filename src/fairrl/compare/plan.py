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
import re
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
class Variant:
    """A named set of config overrides applied to every method's arm (``--variant NAME: KEY=VALUE; ...``),
    e.g. GRPO with the VADE prompt sampler next to plain GRPO at the same budget."""

    name: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Arm:
    """One configuration compared: a method at a debiasing share (None = the config's mixture), optionally
    in a named variant."""

    method: str
    ratio: float | None
    steps: int
    sequences_per_step: int
    variant: Variant | None = None

    @property
    def name(self) -> str:
        name = self.method if self.variant is None else f"{self.method}-{self.variant.name}"
        return name if self.ratio is None else f"{name}-debias{round(100 * self.ratio)}"

    def overrides(self, cfg: TrainConfig) -> list[str]:
        """``--set`` overrides that turn the base config into this arm."""
        out = [f"method={self.method}", f"max_steps={self.steps}", f"run_name={self.name}", "logging_steps=1",
               "max_minutes=null",  # a wall-clock cap would cut slow methods short of the equal budget
               "warm_start.steps=0"]  # each arm one strategy, on the same budget (a warm start is sft steps)
        if self.method == "ppo":  # PPO's KL is the per-token penalty in its reward (ppo.kl_coef), not a loss term
            out.append("algorithm.beta=0")
        if self.ratio is not None:
            out += mixture_overrides(cfg, self.ratio)
        if self.variant is not None:
            out += list(self.variant.overrides)
        return out


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ConfigError(f"--methods takes a comma list of {', '.join(METHODS)}; got {text!r}")
    return list(dict.fromkeys(methods))


def parse_ratios(text: str | None) -> list[float | None]:
    """``"0.2,0.5"`` -> [0.2, 0.5]; None -> [None] (the config's own mixture); the word ``config`` in the list
    is that mixture too, so ``"config,0.2"`` puts the config's arm and a 20 % arm in one table."""
    if not text:
        return [None]
    try:
        ratios = [None if r.strip() == "config" else float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(f"--ratios takes debiasing shares like 0.2,0.5 (or config), got {text!r}") from None
    bad = [r for r in ratios if r is not None and not 0.0 < r < 1.0]
    if not ratios or bad:
        raise ConfigError(f"--ratios: each share must lie strictly between 0 and 1, got {text!r}")
    return list(dict.fromkeys(ratios))


def parse_variants(texts: list[str] | None) -> list[Variant | None]:
    """``["vade: algorithm.prompt_sampler=vade", "plain:"]`` -> variants; none given -> [None] (no variant)."""
    if not texts:
        return [None]
    out: dict[str, Variant] = {}
    for text in texts:
        name, sep, rest = text.partition(":")
        name = name.strip()
        sets = tuple(o.strip() for o in rest.split(";") if o.strip())
        if not sep or not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name) or any("=" not in o for o in sets):
            raise ConfigError(f"--variant takes NAME: KEY=VALUE; KEY=VALUE (NAME in lower-case letters, digits and _; "
                              f"no overrides = the config as it is), got {text!r}")  # fmt: skip
        if {"method", "max_steps"} & {o.split("=", 1)[0].strip() for o in sets}:
            raise ConfigError(f"--variant {name}: compare sets method and max_steps itself (--methods, --budget)")
        if name in out:
            raise ConfigError(f"--variant {name} is given twice; give each variant its own name")
        out[name] = Variant(name, sets)
    return list(out.values())


def bbq_share(cfg: TrainConfig) -> float | None:
    """The BBQ sources' share of the config's training stream (None without both BBQ and other sources)."""
    bbq = sum(s.weight for s in cfg.data.sources if s.kind == "bbq")
    rest = sum(s.weight for s in cfg.data.sources if s.kind != "bbq")
    return bbq / (bbq + rest) if bbq and rest else None


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


def plan_arms(cfg: TrainConfig, methods: list[str], ratios: list[float | None], budget: int,
              variants: dict[Variant, TrainConfig] | None = None) -> list[Arm]:  # fmt: skip
    """Every (method, ratio, variant) arm with its step count for ``budget`` training sequences; ``variants``
    maps each variant to the config with its overrides (its own batch settings set its steps)."""
    if budget < 1:
        raise ConfigError(f"--budget must be at least 1 training sequence, got {budget}")
    arms = []
    for ratio in ratios:
        for m in methods:
            for v, arm_cfg in (variants or {None: cfg}).items():
                per = sequences_per_step(arm_cfg, m)
                arms.append(Arm(m, ratio, max(1, math.ceil(budget / per)), per, v))
    return arms

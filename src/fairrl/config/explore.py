"""The study file of ``fairrl explore STUDY.yaml``: search space, objectives, constraints, sampler.

Example (the packaged ``explore_demo``)::

    study_name: fairreason
    base: demo                       # the training config every trial starts from
    set: [eval.bbq_items_per_condition=32]
    budget: 640                      # training sequences per trial (fairrl compare's unit)
    seeds: [0]
    space:
      debias_share: {low: 0.1, high: 0.9, step: 0.1}
      method: {choices: [grpo, sft, dpo]}
      params:
        learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}
        algorithm.beta: {low: 0.0, high: 0.1, methods: [grpo]}
    objectives:
      - {metric: "reasoning: accuracy", direction: maximize}
      - {metric: "bbq_templates: bias rate", direction: minimize}
    constraints:
      - {metric: "reasoning: retained %", op: ">=", value: 88}
    sampler: nsga2
    n_trials: 12
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fairrl.config.base import Strict

METHOD_NAMES = ("grpo", "ppo", "sft", "kd", "dpo")


class Range(Strict):
    """A searched value: ``choices`` (categorical), or ``low``/``high`` (with ``step``: a grid of that
    step; ``log``: sampled on a log scale). ``methods``: searched only in trials of these methods."""

    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0)
    log: bool = False
    int_: bool = Field(False, alias="int")
    """Integer values (e.g. LoRA rank)."""
    methods: list[Literal["grpo", "ppo", "sft", "kd", "dpo"]] | None = None

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either a non-empty choices list or low/high, not both")
            return self
        if self.low is None or self.high is None or not self.low <= self.high:
            raise ValueError(f"need low <= high (or a choices list), got low={self.low}, high={self.high}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log: true needs low > 0 and no step")
        return self

    def grid(self) -> list[Any]:
        """Every value of this range for grid search (choices, or low..high by step)."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None:
            raise ValueError("grid search needs a step (or choices) for every searched value")
        n = int(round((self.high - self.low) / self.step))
        vals = [self.low + i * self.step for i in range(n + 1)]
        return [int(round(v)) for v in vals] if self.int_ else [round(v, 10) for v in vals]


class SpaceConfig(Strict):
    debias_share: Range | None = None
    """Share of the training stream drawn from BBQ sources (FairReason's debiasing ratio; the other sources
    share the rest in their configured proportions). Strictly between 0 and 1."""
    method: Range | None = None
    """Training method(s) searched (choices among grpo, ppo, sft, kd, dpo); unset = the base config's."""
    params: dict[str, Range] = Field(default_factory=dict)
    """Any other training config key (``learning_rate``, ``algorithm.beta``, ``model.lora.r``, ...)."""

    @model_validator(mode="after")
    def _check(self) -> SpaceConfig:
        d = self.debias_share
        if d is not None:
            vals = d.choices if d.choices is not None else [d.low, d.high]
            if any(not isinstance(v, (int, float)) or not 0 < v < 1 for v in vals):
                raise ValueError("debias_share must lie strictly between 0 and 1 (every source keeps some weight)")
        m = self.method
        if m is not None and (m.choices is None or any(c not in METHOD_NAMES for c in m.choices)):
            raise ValueError(f"method needs choices among {', '.join(METHOD_NAMES)}")
        for key in ("method", "seed", "max_steps", "data.sources"):
            if key in self.params:
                raise ValueError(f"space.params may not set {key!r}: the study sets it (method, seeds, budget, debias_share)")
        return self


class Objective(Strict):
    metric: str = Field(min_length=1)
    """A headline of the trial's evaluation after training, as ``fairrl compare`` names them
    (``reasoning: accuracy``, ``bbq_templates: bias rate``, ``bbq_templates: mean accuracy``,
    ``reasoning: retained %``, ...), or a dotted path into ``summary.json``'s ``after``."""
    direction: Literal["maximize", "minimize"]
    name: str | None = None
    """Short label in tables and plots (default: the metric)."""

    @property
    def label(self) -> str:
        return self.name or self.metric


class Constraint(Strict):
    metric: str = Field(min_length=1)
    op: Literal[">=", "<="]
    value: float


class StudyConfig(Strict):
    study_name: str = Field("fairrl", min_length=1)
    base: str = "demo"
    """The training config each trial starts from (a file or packaged name)."""
    set_: list[str] = Field(default_factory=list, alias="set")
    """Overrides applied to every trial's config (``key=value``)."""
    budget: int | None = Field(None, ge=1)
    """Training sequences per trial (fairrl compare's unit: each method runs ceil(budget / sequences per step)
    steps); null = the base config's max_steps."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Every trial trains once per seed; its objective values are the means over seeds."""
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    objectives: list[Objective] = Field(min_length=1)
    constraints: list[Constraint] = Field(default_factory=list)
    """Feasibility constraints on evaluation headlines (given to the sampler; infeasible trials are kept
    off the Pareto front)."""
    sampler: Literal["nsga2", "nsga3", "tpe", "random", "grid"] = "nsga2"
    n_trials: int = Field(12, ge=1)
    """Finished trials wanted, all workers together (the study also stops after this many failures). Workers
    that start trials at the same moment may finish one more each, as in any Optuna distributed study."""
    sampler_seed: int = 0
    heartbeat_seconds: int = Field(60, ge=1)
    """A running trial's heartbeat period; a trial silent for 3 periods (its worker was killed) is marked
    failed and retried once, with the same values, by the next worker that starts a trial."""

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        if self.sampler == "grid":
            for name, r in {"debias_share": self.space.debias_share, "method": self.space.method,
                            **self.space.params}.items():  # fmt: skip
                if r is not None:
                    try:
                        r.grid()
                    except ValueError as err:
                        raise ValueError(f"space.{name}: {err}") from None
        return self

    def ranges(self) -> dict[str, Range]:
        """Every searched value by name (``debias_share``, ``method``, then the params)."""
        named = {"debias_share": self.space.debias_share, "method": self.space.method}
        return {**{k: v for k, v in named.items() if v is not None}, **self.space.params}

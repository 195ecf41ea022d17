"""Where a training run's prompts come from: ``data.sources``, a list of sources mixed by weight.

Each source has a ``kind`` and that kind's options, a mixture ``weight`` (e.g. FairReason's
debiasing : reasoning = 1 : 4 is weights 1 and 4), a ``name`` (used in metrics, prompt ids and held-out
split names; default: the kind) and a ``group_column`` that defines the groups of the per-group metrics.

- ``bbq``: BBQ items (packaged copy, a local file/folder or a hub id); question templates split into
  training and held-out ones, plus whole held-out categories;
- ``reasoning``: reasoning-gym tasks, generated (held-out items with another seed);
- ``gsm8k``: GSM8K word problems from a local JSONL/JSON file or a hub id (held out: another split);
- ``jsonl``: the user's own prompts in a local .jsonl/.json/.csv file, in TRL's dataset formats: a
  ``prompt`` column that is a string (standard) or a list of messages (conversational), optional
  ``completion``, any other columns (``answer``, ``solution``, ...) passed to the reward functions;
- ``hub``: the same from a Hugging Face hub dataset id.

The old layout (``data.bbq``, ``data.reasoning``, ``data.ratio``, ``data.group_column``) is still read,
with a deprecation message, for one release.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from fairrl.config.base import ConfigDeprecationWarning, Strict


class _Source(Strict):
    weight: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    """Mixture weight: this source's share of the training stream is weight / sum of weights."""
    name: str | None = None
    """Name in metrics, prompt ids and held-out split names (null = the kind); unique across sources."""
    group_column: str | None = None
    """Column whose value is each prompt's group in per-group metrics (null = the source's own: BBQ
    category, reasoning task; ``group`` for jsonl/hub, or the source name where that column is absent)."""

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]


class BBQSource(_Source):
    kind: Literal["bbq"] = "bbq"
    source: str | None = None
    """null = packaged BBQ; else a .jsonl file, a folder of <Category>.jsonl files, or a hub id."""
    categories: list[str] = Field(default_factory=lambda: ["Age", "Gender_identity", "Nationality", "Religion"])
    """Training categories (held-out templates of these are evaluated too)."""
    heldout_categories: list[str] = Field(default_factory=lambda: ["Disability_status", "Physical_appearance"])
    """Categories never trained on, evaluated before and after."""
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Share of question templates (per category) kept out of training for evaluation."""
    instruction: str | None = None
    """System instruction for BBQ prompts (null = the built-in one)."""
    ambig_fraction: float | None = Field(None, ge=0.0, le=1.0)
    """Share of ambiguous-context items in training (null = as in the data, 0.5)."""
    pair_conditions: bool = False
    """Draw each training question under its ambiguous and its disambiguated context in the same step
    (``fairrl.data.bbq_pairs``), so each step contrasts a context that answers with one that does not."""

    @model_validator(mode="after")
    def _check(self) -> BBQSource:
        overlap = sorted(set(self.categories) & set(self.heldout_categories))
        if overlap:
            raise ValueError(f"bbq categories {overlap} are both trained on and held out")
        return self


class ReasoningSource(_Source):
    kind: Literal["reasoning"] = "reasoning"
    tasks: list[str] = Field(default_factory=lambda: ["basic_arithmetic"])
    """reasoning-gym task names."""
    n_train: int = Field(2000, ge=1)
    """Generated training items per task."""
    n_eval: int = Field(50, ge=0)
    """Held-out items per task (another seed)."""
    task_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-task generator options, e.g. {basic_arithmetic: {max_terms: 2}}."""


class GSM8KSource(_Source):
    kind: Literal["gsm8k"] = "gsm8k"
    source: str = "openai/gsm8k"
    """Hub id (config ``main``) or a local JSONL / JSON file of {question, answer} rows."""
    split: str = "train"
    """Hub split trained on (ignored for a local file)."""
    eval_source: str | None = None
    """Held-out items: a hub split name of ``source`` (e.g. ``test``) or another local file; null = none."""
    n_train: int | None = Field(None, ge=1)
    """At most this many training problems (null = all)."""
    n_eval: int = Field(50, ge=0)
    """Held-out problems evaluated before and after."""


class _UserSource(_Source):
    path: str
    """The data: a local .jsonl/.json/.csv file (kind jsonl) or a hub dataset id (kind hub)."""
    prompt_column: str = "prompt"
    """Column holding the prompt: a string, or a list of {role, content} messages."""
    group_column: str | None = "group"
    """Column whose value is each prompt's group (absent from the data: one group named after the source)."""
    system_prompt: str | None = None
    """System message put before string prompts (null = none)."""
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of the rows held out and scored by the run's reward functions before and after training."""
    max_eval: int = Field(64, ge=0)
    """At most this many held-out rows are scored (generation is the cost)."""


class JsonlSource(_UserSource):
    kind: Literal["jsonl"] = "jsonl"


class HubSource(_UserSource):
    kind: Literal["hub"] = "hub"
    split: str = "train"
    """Hub split read."""


Source = Annotated[
    BBQSource | ReasoningSource | GSM8KSource | JsonlSource | HubSource, Field(discriminator="kind")
]


def _legacy_sources(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The old ``data.bbq`` / ``data.reasoning`` / ``data.ratio`` layout as a list of sources."""
    ratio = data.pop("ratio", None)
    ratio = {"bbq": 1.0, "reasoning": 1.0} if ratio is None else ratio
    if not isinstance(ratio, dict):
        raise ValueError(f"data.ratio must be a mapping such as {{bbq: 1, reasoning: 4}}, got {ratio!r}")
    unknown = sorted(set(ratio) - {"bbq", "reasoning"})
    if unknown:
        raise ValueError(f"data.ratio has unknown sources {unknown}; use bbq and/or reasoning")
    sources = []
    for kind in ("bbq", "reasoning"):
        options = data.pop(kind, {})
        if options is None:
            continue
        if not isinstance(options, dict):
            raise ValueError(f"data.{kind} must be a mapping of options or null, got {options!r}")
        if kind not in ratio:
            raise ValueError(f"data.ratio gives no share to configured source(s) ['{kind}']")
        sources.append({"kind": kind, "weight": ratio[kind], **options})
    return sources


class DataConfig(Strict):
    sources: list[Source] = Field(default_factory=lambda: [BBQSource(), ReasoningSource()])
    """Data sources mixed into the training stream (see the module docstring for the kinds)."""

    @model_validator(mode="before")
    @classmethod
    def _old_layout(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not ({"bbq", "reasoning", "ratio", "group_column"} & set(data)):
            return data
        if "sources" in data:
            raise ValueError("data mixes data.sources with the old data.bbq / data.reasoning / data.ratio keys; "
                             "keep only data.sources")
        data = dict(data)
        group_column = data.pop("group_column", None)
        sources = _legacy_sources(data)
        if group_column not in (None, "group"):
            for s in sources:
                s.setdefault("group_column", group_column)
        warnings.warn(
            "data.bbq / data.reasoning / data.ratio / data.group_column are deprecated and will be removed in "
            "the next release; use data.sources: [{kind: bbq, weight: ...}, {kind: reasoning, weight: ...}]",
            ConfigDeprecationWarning, stacklevel=2,
        )  # fmt: skip
        return {**data, "sources": sources}

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if not self.sources:
            raise ValueError("data.sources is empty: add at least one source (kind bbq, reasoning, gsm8k, jsonl or hub)")
        labels = [s.label for s in self.sources]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"data.sources has several sources named {dup}; give each a distinct `name`")
        return self

"""Typed configs of every fairrl run: the shared base and vocabulary, and one schema per method.

- :mod:`fairrl.config.base`: strict base model, YAML loading, ``--set`` overrides, did-you-mean
  messages, renamed keys, the reader of a run folder's ``config.yaml``;
- :mod:`fairrl.config.common`: model, LoRA and run / optimiser keys shared by all methods;
- :mod:`fairrl.config.data`: ``data.sources`` of a policy-training run;
- :mod:`fairrl.config.grpo`: GRPO-family runs (``fairrl train``);
- :mod:`fairrl.config.preference`: reward-model and DPO runs (``fairrl rm train``, ``fairrl dpo train``).
"""

from fairrl.config.base import (
    ConfigDeprecationWarning,
    Strict,
    apply_overrides,
    dump_config,
    packaged_config,
    packaged_config_names,
    parse_override,
    run_config,
)
from fairrl.config.common import LoraConfig, ModelConfig, RunConfig
from fairrl.config.data import BBQSource, DataConfig, GSM8KSource, HubSource, JsonlSource, ReasoningSource
from fairrl.config.grpo import (
    AlgorithmConfig,
    EvalConfig,
    RewardsConfig,
    RewardSpec,
    TrainConfig,
    keeps_groups,
)
from fairrl.config.preference import (
    DPOTrainConfig,
    FairnessConfig,
    PreferenceDataConfig,
    RewardModelConfig,
    RMTrainConfig,
)


def load_config(path=None, overrides: list[str] | None = None, schema: type[Strict] | None = None):
    """A validated config from YAML (a file or packaged name; None = defaults) and ``--set`` overrides;
    ``schema`` defaults to the GRPO :class:`TrainConfig` (see :func:`fairrl.config.base.load_config`)."""
    from fairrl.config import base

    return base.load_config(path, overrides, schema or TrainConfig)


SCHEMAS = {"train": TrainConfig, "rm": RMTrainConfig, "dpo": DPOTrainConfig}
"""The config schema of each kind of run, by CLI name."""

__all__ = [
    "SCHEMAS", "AlgorithmConfig", "BBQSource", "ConfigDeprecationWarning", "DPOTrainConfig", "DataConfig",
    "EvalConfig", "FairnessConfig", "GSM8KSource", "HubSource", "JsonlSource", "LoraConfig", "ModelConfig",
    "PreferenceDataConfig", "RMTrainConfig", "ReasoningSource", "RewardModelConfig", "RewardSpec",
    "RewardsConfig", "RunConfig", "Strict", "TrainConfig", "apply_overrides", "dump_config", "keeps_groups",
    "load_config", "packaged_config", "packaged_config_names", "parse_override", "run_config",
]

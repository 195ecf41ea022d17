"""Typed run configuration: YAML in, validated pydantic models out.

Names follow TRL's ``GRPOConfig`` where the meaning is the same (``num_generations``, ``beta``,
``epsilon``, ``epsilon_high``, ``loss_type``, ``scale_rewards``, ``multi_objective_aggregation``,
``importance_sampling_level``, ``num_iterations``, ``mask_truncated_completions``).

Batch-size semantics, defined once: one optimiser step uses ``prompts_per_step`` prompts x
``num_generations`` completions each; ``num_iterations`` optimiser steps are taken on every such batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fairrl.errors import ConfigError
from fairrl.recipes.microbatch import keeps_groups


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class LoraConfig(_Strict):
    r: int = Field(16, ge=1)
    """LoRA rank."""
    alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (PEFT ``lora_alpha``)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch."""
    target_modules: str | list[str] = "all-linear"
    """Modules to adapt (PEFT syntax)."""


class ModelConfig(_Strict):
    name_or_path: str = "smollm2-135m-instruct"
    """Built-in name, local folder or Hugging Face hub id of a causal LM."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype (float32 on CPU)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``..."""
    trust_remote_code: bool = False
    """Run model code from the hub. Off unless you trust the repository."""
    revision: str | None = None
    """Hub revision (branch, tag or commit)."""
    lora: LoraConfig | None = Field(default_factory=LoraConfig)
    """LoRA adapters (null = full fine-tuning, with a frozen copy as KL reference when beta > 0)."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of keeping them (less memory, one
    more forward). The training forward then packs each prompt with its completions where that pays, else
    encodes the prompt with each completion (transformers drops the KV cache inside checkpointed layers)."""


class BBQSourceConfig(_Strict):
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


class ReasoningSourceConfig(_Strict):
    tasks: list[str] = Field(default_factory=lambda: ["basic_arithmetic"])
    """reasoning-gym task names."""
    n_train: int = Field(2000, ge=1)
    """Generated training items per task."""
    n_eval: int = Field(50, ge=0)
    """Held-out items per task (another seed)."""
    task_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-task generator options, e.g. {basic_arithmetic: {max_terms: 2}}."""


class DataConfig(_Strict):
    bbq: BBQSourceConfig | None = Field(default_factory=BBQSourceConfig)
    """BBQ source (null = none)."""
    reasoning: ReasoningSourceConfig | None = Field(default_factory=ReasoningSourceConfig)
    """reasoning-gym source (null = none)."""
    ratio: dict[str, float] = Field(default_factory=lambda: {"bbq": 1.0, "reasoning": 1.0})
    """Mixture ratio between sources, e.g. {bbq: 1, reasoning: 4} (FairReason's 1:4)."""
    group_column: str = "group"
    """Dataset column whose values define groups for per-group metrics (``group`` = BBQ category / task)."""


class RewardSpec(_Strict):
    name: str
    """Built-in reward name or a dotted path ``package.module:function`` to a TRL-style reward function."""
    weight: float = 1.0
    """Weight in the combination."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of a configurable reward, e.g. bias_rm: {model: runs/bias_rm}; a user function
    receives them as keyword arguments on every call."""


class AlgorithmConfig(_Strict):
    advantage_estimator: Literal["grpo", "dr_grpo", "rloo", "ngrpo", "unlikeliness"] = "grpo"
    """How rewards become advantages (see fairrl.advantages)."""
    num_generations: int = Field(8, ge=2)
    """Completions per prompt (G); at least 2, since a group of one has no baseline."""
    prompts_per_step: int = Field(4, ge=1)
    """Prompts per optimiser batch (P); a batch holds P x G completions."""
    max_prompt_length: int = Field(512, ge=8)
    """Prompts longer than this (in tokens) are truncated from the left."""
    max_completion_length: int = Field(32, ge=1)
    """Maximum new tokens per completion."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature (also applied to training log-probs, as TRL does)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    learning_rate: float = Field(1e-5, gt=0.0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps."""
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    """Gradient clipping norm (null = off)."""
    beta: float = Field(0.0, ge=0.0)
    """KL coefficient (k3 estimator, added to the loss); 0 skips the reference model."""
    epsilon: float = Field(0.2, gt=0.0)
    """Lower clipping range (1 - epsilon)."""
    epsilon_high: float | None = Field(None, gt=0.0)
    """Upper clipping range (1 + epsilon_high); null = epsilon. DAPO's clip-higher uses 0.28."""
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "grpo"
    """Loss aggregation: per-sequence mean (grpo), token mean (bnpo/dapo), constant normaliser (dr_grpo)."""
    delta: float | None = Field(None, gt=1.0)
    """Upper bound on the unclipped ratio (TRL's two-sided clipping); null = off."""
    virtual_reward: float = 1.0
    """NGRPO: reward of the virtual sample, i.e. the highest reward a completion can earn."""
    importance_sampling_level: Literal["token", "sequence"] = "token"
    """Token ratios (GRPO) or one sequence ratio (GSPO)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide centred rewards by the group std, the batch std, or nothing."""
    multi_objective_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    """Combine several rewards before (default) or after per-group normalisation (GDPO)."""
    num_iterations: int = Field(1, ge=1)
    """Optimiser updates per generated batch (pi_old = the sampling policy)."""
    mask_truncated_completions: bool = False
    """Exclude completions that hit max_completion_length from the loss."""
    dynamic_sampling: bool = False
    """DAPO: drop zero-variance groups and refill the batch with new prompts."""
    max_resample_rounds: int = Field(3, ge=0)
    """Cap on refill rounds per step for dynamic sampling."""
    overlong_buffer: int | None = Field(None, ge=1)
    """DAPO overlong shaping window L_c in tokens (null = off)."""
    overlong_penalty: float = Field(1.0, ge=0.0)
    """Scale of the overlong penalty added to the reward."""
    group_balance: bool = False
    """Scale advantages by inverse group frequency in the batch so every group (data.group_column) counts
    equally (a FairGRPO-style project extension)."""
    share_prompt: bool = True
    """Encode each prompt once per group in generation and training (exact; off = plain padded path)."""
    micro_batch_size: int | None = Field(None, ge=1)
    """Completions per forward/backward pass; gradients accumulate over the P x G completions of a step
    (exact, any loss_type). Must divide num_generations or be a multiple of it; null = all at once."""


class RewardsConfig(_Strict):
    functions: list[RewardSpec] = Field(
        default_factory=lambda: [
            RewardSpec(name="bbq_correct"),
            RewardSpec(name="bbq_antibias", weight=0.5),
            RewardSpec(name="bbq_overcaution", weight=1.0),
            RewardSpec(name="bbq_format", weight=0.2),
            RewardSpec(name="reasoning_exact"),
        ]
    )
    """Reward functions and weights."""
    on_error: Literal["raise", "skip"] = "raise"
    """A reward function that raises or returns NaN stops the run (raise) or drops that sample's value (skip)."""


class EvalConfig(_Strict):
    bbq_items_per_condition: int = Field(60, ge=0)
    """Held-out BBQ items per (split, context condition) evaluated before and after."""
    mode: Literal["likelihood", "generation"] = "likelihood"
    """BBQ scoring: option likelihood (default) or generate-then-parse."""
    permutations: int = Field(3, ge=1, le=3)
    """Option-order rotations averaged in likelihood mode."""
    reasoning_items: int = Field(40, ge=0)
    """Held-out reasoning items."""
    batch_size: int = Field(8, ge=1)
    """Evaluation batch size."""
    generation_check: bool = True
    """Also greedy-decode the held-out BBQ items and report parsed accuracy (generation mode)."""


class TrainConfig(_Strict):
    run_name: str = "grpo"
    """Name of the run folder under output_dir."""
    output_dir: str = "runs"
    """Parent folder of runs."""
    seed: int = 0
    """Seed for data order, sampling and initialisation."""
    max_steps: int = Field(40, ge=1)
    """Generated batches (optimiser steps x num_iterations)."""
    max_minutes: float | None = Field(None, gt=0)
    """Stop training after this many minutes (a checkpoint is written); null = no limit."""
    save_steps: int = Field(10, ge=1)
    """Checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints kept on disk."""
    tensorboard: bool = True
    """Write TensorBoard event files beside metrics.jsonl."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (null = torch default)."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        if self.data.bbq is None and self.data.reasoning is None:
            raise ValueError("data needs at least one source: set data.bbq or data.reasoning")
        sources = {k for k, v in (("bbq", self.data.bbq), ("reasoning", self.data.reasoning)) if v is not None}
        unknown = set(self.data.ratio) - {"bbq", "reasoning"}
        if unknown:
            raise ValueError(f"data.ratio has unknown sources {sorted(unknown)}; use bbq and/or reasoning")
        missing = sources - set(self.data.ratio)
        if missing:
            raise ValueError(f"data.ratio gives no share to configured source(s) {sorted(missing)}")
        if not self.rewards.functions:
            raise ValueError("rewards.functions is empty: name at least one reward function")
        m, G = self.algorithm.micro_batch_size, self.algorithm.num_generations
        if m is not None and not keeps_groups(m, G):
            raise ValueError(
                f"algorithm.micro_batch_size={m} must divide num_generations={G} or be a multiple of it "
                "(a micro-batch holds part of one prompt's group or whole groups)"
            )
        return self


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(config)"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown config key {loc!r}; check the spelling (see `fairrl config --show-defaults`)")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"config field {loc!r}: {e['msg']}{shown}")
    return "; ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (creating sub-dicts), as verl/Hydra-style ``--set a.b=1``."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return data


def packaged_config_names() -> list[str]:
    """Names of the configs shipped inside the package (``fairrl/configs/<name>.yaml``)."""
    from importlib import resources

    folder = resources.files("fairrl") / "configs"
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))


def packaged_config(name: str) -> Path | None:
    """The packaged config called ``name`` (e.g. ``biasgrpo``), unless ``name`` is an existing path."""
    from importlib import resources

    if Path(name).exists() or name not in packaged_config_names():
        return None
    return Path(str(resources.files("fairrl") / "configs" / f"{name}.yaml"))


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, schema: type[BaseModel] | None = None
) -> Any:
    """Read YAML (a file, or a packaged config name such as ``biasgrpo``; defaults when ``path`` is None),
    apply overrides, validate against
    ``schema`` (default :class:`TrainConfig`; reward-model and DPO runs pass theirs)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = packaged_config(str(path)) or Path(path)
        if not p.exists():
            raise ConfigError(
                f"config file {str(p)!r} does not exist; give a YAML file or a packaged config name "
                f"({', '.join(packaged_config_names())})"
            )
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys, got {type(loaded).__name__}")
        data = loaded or {}
    data = apply_overrides(data, overrides or [])
    try:
        return (schema or TrainConfig).model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (printed at start, saved with the run)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

"""Typed config of a GRPO-family run (``fairrl train``): YAML in, validated pydantic models out.

Names follow TRL's ``GRPOConfig`` where the meaning is the same (``num_generations``, ``beta``,
``epsilon``, ``epsilon_high``, ``loss_type``, ``scale_rewards``, ``multi_objective_aggregation``,
``importance_sampling_level``, ``num_iterations``, ``mask_truncated_completions``, ``temperature``,
``top_p``, ``top_k``, ``min_p``, ``repetition_penalty``); the optimiser and run keys are the shared ones
of :class:`fairrl.config.common.RunConfig` (``learning_rate``, ``lr_scheduler_type``, ...).

Batch-size semantics, defined once: one step samples ``prompts_per_step`` prompts x
``num_generations`` completions each and takes ``num_iterations`` optimiser steps on that batch, so a
run of ``max_steps`` steps takes ``max_steps * num_iterations`` optimiser steps (the unit of the
learning-rate schedule and warm-up); ``micro_batch_size`` only splits each optimiser step into
gradient-accumulation passes with exactly the same loss.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from fairrl.config.base import Strict
from fairrl.config.common import ModelConfig, RunConfig, RunName
from fairrl.config.data import DataConfig
from fairrl.config.methods import DPOMethodConfig, KDConfig, SFTConfig, WarmStartConfig
from fairrl.config.ppo import PPOConfig
from fairrl.config.redteam import RedTeamConfig


def keeps_groups(size: int, group_size: int) -> bool:
    """Whether micro-batches of ``size`` completions keep groups whole or slice one group evenly."""
    return size >= 1 and (group_size % size == 0 or size % group_size == 0)


class RewardSpec(Strict):
    name: str
    """Built-in reward name or a dotted path ``package.module:function`` to a TRL-style reward function."""
    weight: float = Field(1.0, allow_inf_nan=False)
    """Weight in the combination."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of a configurable reward, e.g. bias_rm: {model: runs/bias_rm}; a user function
    receives them as keyword arguments on every call."""


class AlgorithmConfig(Strict):
    advantage_estimator: Literal["grpo", "dr_grpo", "rloo", "ngrpo", "unlikeliness"] = "grpo"
    """How rewards become advantages (see fairrl.advantages)."""
    num_generations: int = Field(8, ge=1)
    """Completions per prompt (G); at least 2 for the GRPO family, since a group of one has no baseline
    (method: ppo accepts 1: its baseline is the critic)."""
    prompts_per_step: int = Field(4, ge=1)
    """Prompts per optimiser batch (P); a batch holds P x G completions."""
    max_prompt_length: int = Field(512, ge=8)
    """Prompts longer than this (in tokens) are truncated from the left."""
    max_completion_length: int = Field(32, ge=1, le=32768)
    """Maximum new tokens per completion (at most 32768; also at most the model's context length)."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature (also applied to training log-probs, as TRL does)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens only (0 = off)."""
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    """Drop tokens less likely than min_p times the most likely one (0 = off)."""
    repetition_penalty: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    """Penalise tokens already in the prompt or completion (transformers' definition; 1 = off)."""
    beta: float = Field(0.0, ge=0.0)
    """KL coefficient (k3 estimator, added to the loss); 0 skips the reference model."""
    epsilon: float = Field(0.2, gt=0.0)
    """Lower clipping range (1 - epsilon)."""
    epsilon_high: float | None = Field(None, gt=0.0)
    """Upper clipping range (1 + epsilon_high); null = epsilon. DAPO's clip-higher uses 0.28."""
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo", "drpo"] = "grpo"
    """Loss aggregation: per-sequence mean (grpo), token mean (bnpo/dapo), constant normaliser (dr_grpo); or
    drpo: DRPO's decoupled objective instead of the clipped surrogate (:mod:`fairrl.losses.drpo`; the
    advantage estimator is then unused)."""
    drpo_tau: float = Field(10.0, gt=0.0, allow_inf_nan=False)
    """DRPO: temperature of the soft maximum over the wrong replies' scores (authors: 10)."""
    drpo_lambda: float = Field(0.1, gt=0.0, allow_inf_nan=False)
    """DRPO: length preference among correct replies, weight exp((1 - L / max_completion_length) / lambda);
    large = no preference (authors: 0.1)."""
    drpo_trust_beta: float = Field(1000.0, ge=0.0, allow_inf_nan=False)
    """DRPO: weight of the trust-region penalty on KL(pi_old, pi) above drpo_trust_delta (authors: 1000)."""
    drpo_trust_delta: float = Field(1e-4, ge=0.0, allow_inf_nan=False)
    """DRPO: KL budget of the trust region (authors: 1e-4)."""
    drpo_threshold: float = Field(1.0, allow_inf_nan=False)
    """DRPO: a reply whose (combined) reward reaches this counts as correct, the others as wrong."""
    delta: float | None = Field(None, gt=1.0)
    """Upper bound on the unclipped ratio (TRL's two-sided clipping); null = off."""
    virtual_reward: float = Field(1.0, allow_inf_nan=False)
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
    rollout_allocator: Literal["fixed", "xrpo"] = "fixed"
    """Completions per prompt: fixed (num_generations each) or xrpo (XRPO's allocator: the step's budget of
    prompts_per_step x num_generations completions given out in phases to the prompts whose mean reward is most
    uncertain; groups of different sizes, :mod:`fairrl.rollout.allocation`)."""
    xrpo_initial_rollouts: int = Field(4, ge=2)
    """xrpo: completions of every prompt in the first phase (at most num_generations)."""
    xrpo_phase_rollouts: int = Field(2, ge=1)
    """xrpo: completions a chosen prompt gets per later phase."""
    xrpo_max_rollouts: int | None = Field(None, ge=2)
    """xrpo: most completions of one prompt in a step (null: 2 x num_generations)."""
    xrpo_exploration: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    """xrpo: weight lambda of the exploration bonus sqrt(log(1 + T) / n); the other term is in reward units, so
    set it on your reward's scale (1 suits 0/1 rewards, the paper's)."""
    xrpo_confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """xrpo: level of the t interval whose half-width measures a prompt's uncertainty."""
    prompt_sampler: Literal["uniform", "vade"] = "uniform"
    """Which prompts a step rolls out (:mod:`fairrl.data.samplers`): uniform (every prompt once per epoch,
    in a seeded order) or vade (VADE: prompts whose Beta posterior over the success rate promises the most
    reward variance, so fewer groups have zero advantage)."""
    sampler_candidates: float = Field(4.0, ge=1.0, allow_inf_nan=False)
    """vade: candidate prompts drawn from the epoch walk per prompt kept."""
    sampler_success: float = Field(0.5, allow_inf_nan=False)
    """vade and icl_seeding: a completion whose combined reward reaches this counts as a success."""
    icl_seeding: bool = False
    """XRPO: a prompt whose every completion stayed below sampler_success is rolled out next time with a
    solved exemplar from the training data in its context (:mod:`fairrl.data.icl_seeding`)."""
    vade_prior_alpha: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    """vade: Beta prior's alpha (pseudo-successes of an unseen prompt; 1, 1 = uniform)."""
    vade_prior_beta: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    """vade: Beta prior's beta (pseudo-failures of an unseen prompt)."""
    vade_keep: float = Field(0.9, ge=0.0, le=1.0)
    """vade: share of a prompt's old evidence kept when it is observed again (fast decay scale)."""
    vade_forget: float = Field(0.99, ge=0.0, le=1.0)
    """vade: share of every prompt's evidence kept per rollout (slow decay scale; 1 = never forget)."""
    vade_group_prior: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    """vade: pseudo-rollouts an unseen prompt borrows from its group's (BBQ category, task) success rate; 0 = the
    paper's per-prompt prior. In a run shorter than an epoch no prompt is seen twice, so only this informs VADE."""
    overlong_buffer: int | None = Field(None, ge=1)
    """DAPO overlong shaping window L_c in tokens (null = off)."""
    overlong_penalty: float = Field(1.0, ge=0.0)
    """Scale of the overlong penalty added to the reward."""
    novelty_sharpening: bool = False
    """XRPO: raise the advantage of correct (positive-advantage) replies the policy found less likely than
    their group's average, A + min(max(novelty_lambda (1 - eta), 0), novelty_kappa A) (fairrl.advantages.shaping)."""
    novelty_lambda: float = Field(2.5, ge=0.0, allow_inf_nan=False)
    """XRPO novelty: scale of the bonus."""
    novelty_kappa: float = Field(0.5, ge=0.0, allow_inf_nan=False)
    """XRPO novelty: the bonus is at most this share of the reply's own advantage."""
    group_balance: bool = False
    """Scale advantages by inverse group frequency in the batch so every group (each source's
    ``group_column``) counts equally (a FairGRPO-style project extension)."""
    share_prompt: bool = True
    """Encode each prompt once per group in generation and training (exact; off = plain padded path)."""
    micro_batch_size: int | None = Field(None, ge=1)
    """Completions per forward/backward pass; gradients accumulate over the P x G completions of a step
    (exact, any loss_type). Must divide num_generations or be a multiple of it; null = all at once."""
    use_vllm: bool = False
    """Sample the rollouts with vLLM (``pip install 'fairrl[vllm]'``, GPU) instead of fairrl's own sampler
    (:mod:`fairrl.rollout.vllm_backend`; TRL's name)."""
    vllm_mode: Literal["colocate", "server"] = "colocate"
    """colocate: a vLLM engine in each training process, weights synchronised after every update (TRL's
    colocate mode); server: a vLLM server on GPUs of its own, reached with TRL's client, weights streamed to
    it after every update (TRL's server mode, :mod:`fairrl.rollout.vllm_server`)."""
    vllm_server_base_url: str | None = None
    """The server's address, e.g. ``http://10.0.0.5:8000`` (server mode; overrides host and port)."""
    vllm_server_host: str = "0.0.0.0"
    """The server's host when no base URL is given (TRL's default)."""
    vllm_server_port: int = Field(8000, ge=1, le=65535)
    """The server's port when no base URL is given (TRL's default)."""
    vllm_server_timeout: float = Field(240.0, ge=0.0, allow_inf_nan=False)
    """Seconds to wait for the server to answer before the run stops with a message (TRL's default)."""
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0)
    """Share of the GPU memory vLLM may take (the trainer keeps the rest)."""
    vllm_importance_sampling_correction: bool = True
    """Reweight the loss by pi_old / q (trainer over vLLM log-probs; :mod:`fairrl.losses.rollout_correction`)."""
    vllm_importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = (
        "sequence_mask"
    )
    """How the importance weights are bounded (TRL's modes and default)."""
    vllm_importance_sampling_clip_min: float | None = Field(None, ge=0.0)
    """Lower bound C_min of the weights (null = none)."""
    vllm_importance_sampling_clip_max: float | None = Field(3.0, gt=0.0)
    """Upper bound C_max of the weights (TRL's default 3.0; null = none)."""


class RewardsConfig(Strict):
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
    timeout: float | None = Field(300.0, gt=0.0, allow_inf_nan=False)
    """Seconds one reward call (a function on one batch) may take; past it the run stops with an error
    (or, with on_error: skip, that call's values become None). null = no limit, and plain functions then
    run in the training thread, as in TRL. A timed-out call cannot be killed: it is abandoned in a
    background thread (see fairrl.rewards.call)."""

    def labels(self) -> list[str]:
        """One short, unique label per function, for metric keys (``rewards/<label>/mean``) and reports.

        A built-in keeps its name; ``examples/rewards.py:neutral_language`` and ``pkg.mod:fn`` become
        ``neutral_language`` and ``fn``. Labels that would repeat (one function twice with different
        options, or two files with the same function name) get ``_2``, ``_3``, ... in order.
        """
        out: list[str] = []
        for spec in self.functions:
            base = spec.name.rsplit(":", 1)[-1]
            label, k = base, 1
            while label in out:
                k += 1
                label = f"{base}_{k}"
            out.append(label)
        return out


class EvalConfig(Strict):
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
    start_cache: str | None = None
    """Folder where runs that start from the same model share their starting evaluation (same model,
    eval settings and held-out items: :mod:`fairrl.trainer.start_cache`); ``fairrl compare`` and ``fairrl
    explore`` set it to ``OUT/start_evals``. null = every run evaluates its starting model."""


class TrainConfig(RunConfig):
    method: Literal["grpo", "ppo", "sft", "kd", "dpo", "redteam"] = "grpo"
    """Training method: grpo (the GRPO family, ``algorithm:``), ppo (``ppo:``), sft (``sft:``), kd (``kd:``),
    dpo (``dpo:``) or redteam (Evo-MARL: a team under an evolving attack pool, ``redteam:``); every method shares
    the data, the held-out evaluation before and after, and the run folder."""
    run_name: RunName = "grpo"
    """Name of the run folder under output_dir (unset: the method's name)."""
    max_steps: int = Field(40, ge=1)
    """Generated batches (each followed by num_iterations optimiser steps)."""
    log_completions: bool = False
    """Every log_completions_steps steps, write the step's completions with each reward function's value
    to completions.jsonl, send them to the report_to trackers as a table and print a few (TRL's name)."""
    log_completions_steps: int = Field(10, ge=1)
    """Steps between two completion tables (when log_completions)."""
    num_completions_to_print: int | None = Field(4, ge=0)
    """Completions printed to the console per table (null = all; the file always has all of them)."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    """Supervised fine-tuning on the data's own targets (method: sft; kd's sequences use its lengths)."""
    kd: KDConfig = Field(default_factory=KDConfig)
    """Knowledge distillation from a teacher (method: kd)."""
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    """PPO with a learned critic (method: ppo; sampling and clipping from ``algorithm:``)."""
    dpo: DPOMethodConfig = Field(default_factory=DPOMethodConfig)
    """DPO on preference pairs read from the same data (method: dpo; :mod:`fairrl.data.dpo_pairs`)."""
    redteam: RedTeamConfig = Field(default_factory=RedTeamConfig)
    """Evo-MARL: a multi-agent team trained with GRPO over episodes against an evolving attack pool (method: redteam)."""
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)
    """SFT steps before a grpo run (SFT then RL, as R1's cold start); the KL reference is the warm-started model."""

    renamed_keys: ClassVar[dict[str, str]] = {
        "algorithm.learning_rate": "learning_rate",
        "algorithm.weight_decay": "weight_decay",
        "algorithm.warmup_steps": "warmup_steps",
        "algorithm.max_grad_norm": "max_grad_norm",
    }

    @model_validator(mode="before")
    @classmethod
    def _run_name_of_method(cls, data: Any) -> Any:
        """A run without a run_name is named after its method (runs/sft, runs/kd, ...)."""
        if isinstance(data, dict) and "run_name" not in data and isinstance(data.get("method"), str):
            return {**data, "run_name": data["method"]}
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        if not self.rewards.functions:
            raise ValueError("rewards.functions is empty: name at least one reward function")
        m, G = self.algorithm.micro_batch_size, self.algorithm.num_generations
        if G < 2 and self.method in ("grpo", "redteam"):
            raise ValueError(
                f"algorithm.num_generations={G}: must be greater than or equal to 2 for method {self.method!r} (a group "
                "of one has no baseline); method: ppo, whose baseline is its critic, may sample one"
            )
        if self.algorithm.loss_type == "drpo":
            if self.method != "grpo":
                raise ValueError(f"algorithm.loss_type=drpo is an objective of method grpo (method {self.method!r})")
            if m is not None and m % G:
                raise ValueError(f"algorithm.loss_type=drpo compares the replies of a group: micro_batch_size={m} must "
                                 f"be a multiple of num_generations={G} (or null)")  # fmt: skip
        if self.algorithm.rollout_allocator == "xrpo":
            self._check_allocator()
        if self.warm_start.steps and self.method != "grpo":
            raise ValueError(
                f"warm_start.steps={self.warm_start.steps} applies to method grpo only (method {self.method!r}); "
                "set warm_start.steps=0, or add the SFT steps to a method: sft run"
            )
        if self.algorithm.use_vllm and self.method != "grpo":
            raise ValueError(
                f"algorithm.use_vllm samples the rollouts of method grpo (not {self.method}); "
                "set algorithm.use_vllm=false"
            )
        if m is not None and not keeps_groups(m, G):
            raise ValueError(
                f"algorithm.micro_batch_size={m} must divide num_generations={G} or be a multiple of it "
                "(a micro-batch holds part of one prompt's group or whole groups)"
            )
        if self.model.fsdp is not None:
            self._check_fsdp()
        return self

    def _check_fsdp(self) -> None:
        """What ``model.fsdp`` cannot do yet, refused at load (every method shards; ranks holding different
        numbers of rows run idle micro-batches, fairrl.trainer.microbatch)."""
        if self.method == "redteam" and self.redteam.team.adapters == "per_role":
            raise ValueError("model.fsdp does not combine with redteam.team.adapters=per_role yet (PEFT's adapter "
                             "switch changes which sharded weights train); use adapters: shared, or remove model.fsdp")  # fmt: skip

    def _check_allocator(self) -> None:
        """What XRPO's allocator (groups of different sizes) works with; the rest is refused at load."""
        a = self.algorithm
        if self.method != "grpo":
            raise ValueError(f"algorithm.rollout_allocator=xrpo allocates the rollouts of method grpo (method {self.method!r})")
        if a.xrpo_initial_rollouts > a.num_generations:
            raise ValueError(f"algorithm.xrpo_initial_rollouts={a.xrpo_initial_rollouts} exceeds num_generations="
                             f"{a.num_generations}, the mean rollouts per prompt the step's budget allows")  # fmt: skip
        if a.xrpo_max_rollouts is not None and a.xrpo_max_rollouts < a.xrpo_initial_rollouts:
            raise ValueError("algorithm.xrpo_max_rollouts must be at least xrpo_initial_rollouts")
        if a.advantage_estimator not in ("grpo", "dr_grpo", "rloo"):
            raise ValueError(f"algorithm.rollout_allocator=xrpo works with advantage_estimator grpo, dr_grpo or rloo "
                             f"(got {a.advantage_estimator!r}: its groups must be full)")  # fmt: skip
        if a.loss_type == "drpo" or a.dynamic_sampling:
            raise ValueError("algorithm.rollout_allocator=xrpo does not combine with loss_type drpo or dynamic_sampling "
                             "(both need full groups); the allocator is XRPO's own answer to zero-variance groups")  # fmt: skip

    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps of the whole run (the unit of the learning-rate schedule)."""
        return self.max_steps * self.algorithm.num_iterations

"""One timed fairrl GRPO step, run by the trainer's own code.

A step is exactly what ``fairrl train`` does per step: ``GRPOStep.collect`` (prefix-shared sampling,
decoding, rewards, combination) then ``GRPOStep.update`` (advantages, reference log-probs, prefix-shared
policy forward, loss, backward, gradient clipping, AdamW, scheduler), with the run's optimiser from
``make_optimizer`` and its reference from ``make_reference`` (a frozen copy for full fine-tuning with
beta > 0, the adapter-disabled policy with LoRA).

Forced lengths: the training config has no minimum-length option, so for the duration of a bench step
the ``sample_groups`` that ``fairrl.trainer.grpo_step`` calls is bound to the same sampler with
``min_new_tokens = max_new_tokens = N`` (restored afterwards): every completion is exactly N tokens.

Phases (seconds, see :mod:`fairrl.bench.timing`):

- generate: the sampler (prefill once per prompt, decode loop);
- reference: ``GRPOStep.reference_logprobs``;
- optimizer: ``AdamW.step`` (torch step hooks);
- forward_backward: ``update`` minus reference and optimizer, i.e. policy forward, loss, backward and
  gradient clipping (plus advantages, microseconds);
- other: the rest (decoding texts, rewards, scheduler).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fairrl.bench.timing import PhaseClock, StepRecord, time_optimizer
from fairrl.bench.workload import REWARD_NAME, BenchSpec, prompt_length
from fairrl.config import TrainConfig
from fairrl.data.records import Example
from fairrl.data.stream import PromptStream
from fairrl.distributed import current
from fairrl.models.loading import LoraSettings, apply_lora, enable_gradient_checkpointing
from fairrl.trainer.grpo_step import GRPOStep, make_reference, step_generator
from fairrl.trainer.optim import make_optimizer


def bench_config(spec: BenchSpec, max_prompt_length: int) -> TrainConfig:
    """The training config of the benchmark's GRPO step (LoRA r=16, alpha=32 on all linear layers if on)."""
    return TrainConfig.model_validate(
        {
            "seed": spec.seed,
            "learning_rate": spec.learning_rate,
            "model": {
                "name_or_path": spec.model, "dtype": spec.dtype, "lora": {} if spec.lora else None,
                "gradient_checkpointing": spec.gradient_checkpointing,
            },  # fmt: skip
            "rewards": {"functions": [{"name": REWARD_NAME}]},
            "algorithm": {
                "num_generations": spec.generations,
                "prompts_per_step": spec.prompts,
                "max_prompt_length": max(8, max_prompt_length),
                "max_completion_length": spec.new_tokens,
                "beta": spec.beta,
                "loss_type": spec.loss_type,
                "temperature": 1.0,
                "top_p": 1.0,
                "micro_batch_size": spec.micro_batch,
            },
        }
    )


@contextmanager
def forced_length_sampler(new_tokens: int, clock: PhaseClock) -> Iterator[None]:
    """Within the block, the GRPO step samples exactly ``new_tokens`` per completion, timed as ``generate``."""
    from fairrl.trainer import grpo_step as grpo

    original = grpo.sample_groups
    grpo.sample_groups = clock.wrap(functools.partial(original, min_new_tokens=new_tokens), "generate")
    try:
        yield
    finally:
        grpo.sample_groups = original


class FairrlSide:
    """fairrl's trainer pieces around one policy; :meth:`step` runs and times one GRPO step."""

    name = "fairrl"

    def __init__(self, spec: BenchSpec, model, tokenizer, device: torch.device, examples: list[Example]):
        self.spec, self.device = spec, device
        lengths = [prompt_length(tokenizer, e.prompt) for e in examples]
        cfg = bench_config(spec, max(lengths) + 8)
        if spec.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        if spec.lora:
            lora = cfg.model.lora
            model = apply_lora(model, LoraSettings(lora.r, lora.alpha, lora.dropout, lora.target_modules))
        else:
            for p in model.parameters():
                p.requires_grad_(True)
        self.model = model
        self.grpo = GRPOStep(cfg, model, tokenizer, device, ref_model=make_reference(cfg, model), ranks=current())
        self.optimizer, self.scheduler = make_optimizer(cfg, model, cfg.optimizer_steps)
        self.clock = PhaseClock(device)
        time_optimizer(self.optimizer, self.clock)
        self.grpo.reference_logprobs = self.clock.wrap(self.grpo.reference_logprobs, "reference")
        self.stream = PromptStream(examples, spec.seed)

    def settings(self) -> dict:
        """What fairrl's step ran with."""
        alg, opt = self.grpo.alg, self.optimizer
        return {
            "optimizer": type(opt).__name__,
            "optimizer_fused": bool(opt.defaults.get("fused")),
            "gradient_checkpointing": self.spec.gradient_checkpointing,
            "micro_batch": alg.micro_batch_size,
            "autocast": None,
            "weights_dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "loss_type": alg.loss_type,
            "beta": alg.beta,
            "reference": "separate model"
            if self.grpo.ref_model is not None
            else ("adapter disabled" if alg.beta else None),
            "share_prompt": alg.share_prompt,
        }

    def step(self, index: int, memory_step: bool = False) -> StepRecord:
        self.clock.start_step(release=memory_step)
        with forced_length_sampler(self.spec.new_tokens, self.clock):
            batch, _ = self.grpo.collect(self.stream, step_generator(self.spec.seed, index, self.device))
            with self.clock.phase("update"):
                self.grpo.update(batch, self.optimizer, self.scheduler)
        r = batch.rollout
        # "update" less the reference and optimiser phases nested in it: forward, loss, backward, clipping
        return self.clock.end_step(
            completion_tokens=int(r.completion_mask.sum()),
            prompt_tokens=[int(n) for n in r.prompt_mask.sum(-1)],
            rename={"update": "forward_backward"},
        )

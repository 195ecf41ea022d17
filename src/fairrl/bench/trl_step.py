"""TRL's ``GRPOTrainer`` on the benchmark's workload, driven by TRL's own training loop.

:class:`TRLSide` builds a ``GRPOTrainer`` around its own copy of the benchmark model and runs
``trainer.train()`` for ``warmup + steps`` optimiser steps. A ``TrainerCallback`` brackets each step
(``on_step_begin`` .. ``on_step_end``, which in transformers' loop covers generation, scoring, loss,
backward, clipping, optimiser and scheduler) and, after closing a step's clock, calls ``after_step`` so
that the other side's step runs in between (alternation) outside TRL's timing.

Settings, chosen so both sides do the same work:

- the model is passed already in ``--dtype`` and ``bf16 = fp16 = False``: pure-dtype weights and no
  autocast, as in fairrl (TRL's default ``bf16=True`` would autocast even a float32 model);
- ``gradient_checkpointing=False`` (TRL's default is True, which recomputes the forward during backward:
  about a third more FLOPs for less memory; fairrl does not checkpoint);
- ``max_completion_length = N`` and ``generation_kwargs={"min_new_tokens": N}``: Hugging Face's
  min-length processor forbids eos before N tokens, so every completion is exactly N tokens;
- the same beta, loss type, learning rate (constant schedule), temperature 1, top-p 1, gradient-norm
  clip 1.0; one generation per optimiser step (``steps_per_generation = 1``, ``num_iterations = 1``),
  so TRL computes no old-policy log-probs, like fairrl;
- LoRA through ``peft_config`` (r=16, alpha=32, all linear layers): TRL wraps the model itself and
  uses the adapter-disabled model as reference; full fine-tuning with beta > 0 loads a frozen reference
  from the model's folder (``from_pretrained``), as TRL always does;
- TRL's own optimiser default (``adamw_torch_fused`` on torch >= 2.8) and no vLLM, logging or saving;
- with ``processes`` > 1 (:mod:`fairrl.bench.trl_scaling`) per-device batch sizes are divided by the
  process count, and ``ddp_find_unused_parameters=False``: every trainable parameter gets a gradient,
  and transformers' default (True without checkpointing) adds a graph traversal per backward that
  fairrl's all-reduce does not do.

Phases: generate = ``_generate_single_turn`` (padding the P*G prompt rows + ``model.generate`` + eos
masking); reference = ``_get_per_token_logps_and_entropies`` called without gradient; forward_backward
= ``compute_loss`` + ``accelerator.backward`` + ``_clip_grad_norm``; optimizer = ``optimizer.step``;
other = the rest (chat-template tokenisation, decoding, rewards, advantages, metrics, scheduler).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch

from fairrl.bench.timing import PhaseClock, StepRecord, time_optimizer
from fairrl.bench.workload import BenchSpec, hash_reward
from fairrl.data.records import Example
from fairrl.errors import FairRLError

TESTED_TRL = "1.16.0"
INSTALL_HINT = "install the benchmark extra: pip install -e '.[bench]'"
# private GRPOTrainer / Trainer methods the phase clocks wrap
HOOKED = ("_generate_single_turn", "_get_per_token_logps_and_entropies", "compute_loss", "_clip_grad_norm")


def trl_unavailable() -> str | None:
    """None when TRL and datasets import, else why not and how to install them."""
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError as err:
        return f"TRL is not installed ({err.name or err}); {INSTALL_HINT}"
    return None


def trl_version() -> str | None:
    try:
        import trl
    except ImportError:
        return None
    return trl.__version__


def _unwrap_optimizer(opt) -> torch.optim.Optimizer:
    """The torch optimiser inside accelerate's ``AcceleratedOptimizer`` (or ``opt`` itself)."""
    inner = getattr(opt, "optimizer", opt)
    return inner if isinstance(inner, torch.optim.Optimizer) else opt


def _checkpointing(config_cls, on: bool) -> dict:
    """Activation checkpointing on or off under the name this transformers knows (renamed in 5.x),
    non-reentrant like fairrl's."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    act = "activation_checkpointing" in names
    out: dict = {"activation_checkpointing" if act else "gradient_checkpointing": on}
    if on:
        out["activation_checkpointing_kwargs" if act else "gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return out


def _make_callback(side: TRLSide):
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Opens and closes TRL's step clock; runs the other side's step after each TRL step."""

        def on_train_begin(self, args, state, control, **kwargs):
            time_optimizer(_unwrap_optimizer(side.trainer.optimizer), side.clock)

        def on_step_begin(self, args, state, control, **kwargs):
            side.begin_step()

        def on_step_end(self, args, state, control, **kwargs):
            side.end_step()

    return StepClock()


class TRLSide:
    """A ``GRPOTrainer`` set up like fairrl's step; :meth:`run` trains and returns one record per step."""

    name = "trl"

    def __init__(
        self, spec: BenchSpec, model, tokenizer, device: torch.device, examples: list[Example], workdir: Path,
        after_step: Callable[[int], None] | None = None, memory_step: bool = False, processes: int = 1,
    ):  # fmt: skip
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        self.spec, self.device, self.after_step = spec, device, after_step
        self.total_steps = spec.warmup + spec.steps + int(memory_step)
        self.memory_step = memory_step
        self.clock = PhaseClock(device)
        self.records: list[StepRecord] = []
        # this process's share of the P*G completions (TRL multiplies per-device sizes by the process count)
        batch = spec.prompts * spec.generations // processes
        micro = min(spec.micro_batch or batch, batch)  # a micro-batch larger than the batch is the batch
        self._tokens: tuple[int, list[int]] = (0, [])
        args = GRPOConfig(
            output_dir=str(workdir / "trl"),
            # micro-batches: m completions per forward/backward, P*G/(m*processes) of them per optimiser step
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=batch // micro,
            num_generations=spec.generations,
            max_completion_length=spec.new_tokens,
            generation_kwargs={"min_new_tokens": spec.new_tokens},
            temperature=1.0,
            top_p=1.0,
            beta=spec.beta,
            loss_type=spec.loss_type,
            learning_rate=spec.learning_rate,
            lr_scheduler_type="constant",
            max_grad_norm=1.0,
            max_steps=self.total_steps,
            **_checkpointing(GRPOConfig, spec.gradient_checkpointing),
            bf16=False,
            fp16=False,
            use_cpu=device.type == "cpu",
            seed=spec.seed,
            report_to="none",
            logging_strategy="no",
            save_strategy="no",
            disable_tqdm=True,
            log_completions=False,
            use_vllm=False,
            dataloader_num_workers=0,
            ddp_find_unused_parameters=False,  # used only under accelerate's multi-process mode
        )
        peft_config = None
        if spec.lora:
            from peft import LoraConfig

            peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                     task_type="CAUSAL_LM")  # fmt: skip
        self.trainer = GRPOTrainer(
            model=model,
            reward_funcs=hash_reward,
            args=args,
            train_dataset=Dataset.from_list([{"prompt": e.prompt} for e in examples]),
            processing_class=copy.deepcopy(tokenizer),
            peft_config=peft_config,
            callbacks=[_make_callback(self)],
        )
        from transformers import PrinterCallback, ProgressCallback

        for quiet in (PrinterCallback, ProgressCallback):  # TRL's end-of-training log dict on stdout
            self.trainer.remove_callback(quiet)
        self._instrument()

    def _instrument(self) -> None:
        """Wrap the trainer's phase methods (instance attributes shadow the class's methods)."""
        t, clock = self.trainer, self.clock
        missing = [name for name in HOOKED if not hasattr(t, name)]
        if missing:
            raise FairRLError(
                f"this TRL ({trl_version()}) lacks GRPOTrainer.{', '.join(missing)}; fairrl bench was written "
                f"against trl=={TESTED_TRL}: pip install 'trl=={TESTED_TRL}'"
            )
        generate = t._generate_single_turn

        def generate_and_count(prompt_ids, *args, **kwargs):
            completion_ids, logprobs = generate(prompt_ids, *args, **kwargs)
            G = self.spec.generations
            self._tokens = (sum(len(c) for c in completion_ids), [len(p) for p in prompt_ids[::G]])
            return completion_ids, logprobs

        t._generate_single_turn = clock.wrap(generate_and_count, "generate")
        t._get_per_token_logps_and_entropies = clock.wrap(
            t._get_per_token_logps_and_entropies, "reference", when=lambda: not torch.is_grad_enabled()
        )
        t.compute_loss = clock.wrap(t.compute_loss, "forward_backward")
        t.accelerator.backward = clock.wrap(t.accelerator.backward, "forward_backward")
        t._clip_grad_norm = clock.wrap(t._clip_grad_norm, "forward_backward")

    def settings(self) -> dict:
        """What this TRL trainer actually ran with (read back from it)."""
        t, a = self.trainer, self.trainer.args
        opt = _unwrap_optimizer(t.optimizer) if t.optimizer is not None else None
        return {
            "optimizer": type(opt).__name__ if opt is not None else None,
            "optimizer_fused": bool(opt.defaults.get("fused")) if opt is not None else None,
            "gradient_checkpointing": bool(getattr(a, "activation_checkpointing", False) or a.gradient_checkpointing),
            "micro_batch": a.per_device_train_batch_size if a.gradient_accumulation_steps > 1 else None,
            "autocast": "bf16" if a.bf16 else ("fp16" if a.fp16 else None),
            "weights_dtype": str(t.model.dtype).removeprefix("torch."),
            "loss_type": a.loss_type,
            "beta": a.beta,
            "reference": "separate model"
            if t.ref_model is not None
            else ("adapter disabled" if a.beta else None),
            "generation_kwargs": dict(a.generation_kwargs or {}),
        }

    def begin_step(self) -> None:
        self.clock.start_step(release=self.memory_step and len(self.records) == self.total_steps - 1)

    def end_step(self) -> None:
        completion_tokens, prompt_tokens = self._tokens
        self.records.append(self.clock.end_step(completion_tokens, prompt_tokens))
        if self.after_step is not None:
            self.after_step(len(self.records) - 1)

    def run(self) -> list[StepRecord]:
        self.trainer.train()
        return self.records

"""Rollouts sampled by vLLM (``algorithm.use_vllm``), colocated with the trainer as TRL's colocate mode.

Each training process holds a vLLM engine on its own GPU (``vllm_gpu_memory_utilization`` of its memory;
under ``torchrun`` with vLLM's ``external_launcher`` executor). A step sends the prompts' token ids with
``SamplingParams`` mapped from the config (:func:`sampling_kwargs`: n = G, temperature, top_p, top_k,
min_p, repetition_penalty, max_tokens, the run's stop tokens, one seed per step, ``logprobs=0`` for the
sampled token's log-prob) and turns the request outputs into fairrl's :class:`~fairrl.rollout.generate.Rollout`
(:func:`outputs_to_rollout`): completions right-padded, the engine's log-probs as ``logprobs``,
``truncated`` where vLLM stopped for length.

After every optimiser step the engine gets the new policy (:meth:`VLLMRollout.sync`):

- LoRA: the adapter is saved (safetensors) to ``<run>/vllm/adapter-<k>`` and the next requests carry a new
  ``LoRARequest`` for it (hot-swap; the engine runs with ``enable_lora`` and the run's rank);
- full fine-tuning: the named parameters are loaded into the engine's model in place
  (``load_weights``, as TRL's colocate mode), then the prefix cache is reset.

Log-prob bookkeeping: the engine runs with ``logprobs_mode="processed_logprobs"`` (after temperature, as
fairrl's own sampler reports them). With ``num_iterations == 1``, pi_old is the trainer's own forward and
the surrogate is reweighted by pi_old / q (:mod:`fairrl.losses.rollout_correction`, TRL's
``vllm_importance_sampling_*``); with ``num_iterations > 1`` pi_old is the engine's log-probs, so the
clipped ratio itself corrects for the mismatch. Deviation from TRL: LoRA weights reach the engine as an
adapter rather than merged into the base weights.

vLLM needs a CUDA GPU and cannot run on the CPU machines fairrl is tested on: the adapter is unit-tested
against a fake engine with vLLM's interface (``tests/test_vllm_backend.py``); the GPU command is in the
README.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from fairrl.errors import ConfigError
from fairrl.rollout.generate import Rollout, left_pad, right_pad


def sampling_kwargs(alg, n: int, stop_ids: Sequence[int], seed: int) -> dict[str, Any]:
    """vLLM ``SamplingParams`` keywords for one step's requests (module docstring)."""
    return {
        "n": n, "temperature": alg.temperature, "top_p": alg.top_p, "top_k": alg.top_k if alg.top_k > 0 else -1,
        "min_p": alg.min_p, "repetition_penalty": alg.repetition_penalty, "max_tokens": alg.max_completion_length,
        "stop_token_ids": list(stop_ids), "logprobs": 0, "seed": seed,
    }  # fmt: skip


def outputs_to_rollout(outputs: Sequence[Any], prompt_ids: list[list[int]], group_size: int, pad_id: int,
                       device: torch.device | str = "cpu") -> Rollout:  # fmt: skip
    """vLLM ``RequestOutput``s (one per prompt, ``group_size`` completions each) as a :class:`Rollout`."""
    if len(outputs) != len(prompt_ids):
        raise ValueError(f"{len(outputs)} vLLM outputs for {len(prompt_ids)} prompts")
    ids, logps, truncated = [], [], []
    for out in outputs:
        if len(out.outputs) != group_size:
            raise ValueError(f"vLLM returned {len(out.outputs)} completions for a prompt, expected {group_size}")
        for c in out.outputs:
            tokens = list(c.token_ids)
            ids.append(tokens)
            per_token = c.logprobs or [None] * len(tokens)
            logps.append([float(d[t].logprob) if d and t in d else math.nan for t, d in zip(tokens, per_token, strict=True)])
            truncated.append(c.finish_reason == "length")
    return lists_to_rollout(prompt_ids, ids, logps, truncated, group_size, pad_id, device)


def lists_to_rollout(prompt_ids: list[list[int]], ids: list[list[int]], logps: list[list[float]], truncated: list[bool],
                     group_size: int, pad_id: int, device: torch.device | str = "cpu") -> Rollout:  # fmt: skip
    """A :class:`Rollout` from per-prompt token ids and per-completion token ids, log-probs and length flags
    (prompts left-padded, completions right-padded, log-probs 0 on padding)."""
    prompt, prompt_mask = left_pad(prompt_ids, pad_id)
    completion, mask = right_pad(ids, pad_id)
    width = completion.shape[1]
    logprobs = torch.tensor([row + [0.0] * (width - len(row)) for row in logps], dtype=torch.float32)
    return Rollout(
        prompt_ids=prompt.to(device), prompt_mask=prompt_mask.to(device), completion_ids=completion.to(device),
        completion_mask=mask.to(device), logprobs=logprobs.to(device),
        truncated=torch.tensor(truncated, dtype=torch.bool, device=device), group_size=group_size,
    )  # fmt: skip


def engine_model(llm) -> Any:
    """The model object inside a colocated vLLM engine (where TRL's colocate mode loads weights)."""
    return llm.llm_engine.model_executor.driver_worker.model_runner.model


class VLLMRollout:
    """A colocated vLLM engine as fairrl's sampler (module docstring)."""

    def __init__(self, llm, *, pad_id: int, stop_ids: Sequence[int], lora: bool, workdir: Path,
                 params: Callable[..., Any], lora_request: Callable[..., Any] | None = None):  # fmt: skip
        self.llm, self.pad_id, self.stop_ids = llm, pad_id, list(stop_ids)
        self.lora, self.workdir = lora, Path(workdir)
        self.params, self.make_lora_request = params, lora_request
        self.version = 0
        self.request = None  # LoRARequest of the current adapter (None: the engine's base weights)

    def generate(self, alg, prompt_ids: list[list[int]], group_size: int, seed: int,
                 device: torch.device | str = "cpu") -> Rollout:  # fmt: skip
        params = self.params(**sampling_kwargs(alg, group_size, self.stop_ids, seed))
        requests = [{"prompt_token_ids": list(p)} for p in prompt_ids]
        outputs = self.llm.generate(requests, sampling_params=params, lora_request=self.request, use_tqdm=False)
        return outputs_to_rollout(outputs, prompt_ids, group_size, self.pad_id, device)

    @torch.no_grad()
    def sync(self, policy) -> None:
        """Give the engine the policy's current weights: a new adapter, or the full weights in place."""
        self.version += 1
        if self.lora:
            folder = self.workdir / f"adapter-{self.version}"
            # the adapter's tensors as named_parameters sees them: whole inside fairrl.models.sharding.full_params
            # under FSDP2 (whose state_dict hook would hand back shards)
            adapter = {n: p.detach() for n, p in policy.named_parameters() if "lora_" in n}
            policy.save_pretrained(folder, safe_serialization=True, state_dict=adapter)
            self.request = self.make_lora_request(f"fairrl-policy-{self.version}", self.version, str(folder))
            shutil.rmtree(self.workdir / f"adapter-{self.version - 1}", ignore_errors=True)
        else:
            engine_model(self.llm).load_weights((name, p.detach()) for name, p in policy.named_parameters())
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()

    @torch.no_grad()
    def sync_base(self, policy) -> None:
        """Give the engine new base weights in place (a warm start merged its LoRA into them), then the
        policy's current adapter or full weights (:meth:`sync`)."""
        if self.lora:
            engine_model(self.llm).load_weights(base_weights(policy))
        self.sync(policy)


def base_weights(policy):
    """(Hugging Face name, tensor) of a LoRA policy's base weights, the adapter's own tensors left out: what
    ``load_weights`` of the engine's model takes (PEFT's injected ``.base_layer`` dropped from the names)."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    for name, p in base.named_parameters():
        if "lora_" not in name:
            yield name.replace(".base_layer", ""), p.detach()


def create_vllm_rollout(cfg, model_path: str, run_dir: Path, pad_id: int, stop_ids: Sequence[int],
                        world: int = 1) -> VLLMRollout:  # fmt: skip
    """A colocated engine for the run's model folder (``algorithm.use_vllm``); vLLM must be installed."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise ConfigError(
            "algorithm.use_vllm needs vLLM, which is not installed: pip install 'fairrl[vllm]' on a CUDA machine, "
            "or set algorithm.use_vllm=false (fairrl's own sampler)"
        ) from None
    alg, lora = cfg.algorithm, cfg.model.lora
    kw: dict[str, Any] = {
        "model": model_path, "dtype": cfg.model.dtype,
        "gpu_memory_utilization": alg.vllm_gpu_memory_utilization, "seed": cfg.seed,
        "max_model_len": alg.max_prompt_length + alg.max_completion_length, "logprobs_mode": "processed_logprobs",
        "enable_prefix_caching": True, "trust_remote_code": cfg.model.trust_remote_code,
    }  # fmt: skip
    if lora is not None:
        kw.update(enable_lora=True, max_lora_rank=lora.r, max_loras=1)
    if world > 1:
        kw["distributed_executor_backend"] = "external_launcher"  # one engine per torchrun rank
    return VLLMRollout(LLM(**kw), pad_id=pad_id, stop_ids=stop_ids, lora=lora is not None,
                       workdir=Path(run_dir) / "vllm", params=SamplingParams, lora_request=LoRARequest)  # fmt: skip

"""FSDP2 sharding of a policy across data-parallel ranks (``model.fsdp``), with torch's ``fully_shard``.

What is sharded: every decoder layer (the classes a transformers model names in ``_no_split_modules``, the
unit accelerate's and TRL's FSDP wrap policies use) becomes an FSDP2 unit; between its uses a rank holds
1/N of the layer's weights, and gradients and AdamW's moments are kept as shards (DTensors). Embeddings, the
final norm and the output layer stay whole on every rank, like data-parallel weights (their gradients are
summed by :meth:`fairrl.distributed.Ranks.sum_gradients`): the trainer calls the decoder body and the output
layer separately (:mod:`fairrl.models.logprobs`), so they cannot be one FSDP unit, and tied input/output
embeddings must stay together. For a 7B model that replicates about 14 % of the weights.

Gradients are reduce-scattered by FSDP2 as means (in float32 under mixed precision) and multiplied by N in
:meth:`~fairrl.distributed.Ranks.sum_gradients`: the losses are normalised over the global batch already, so
the batch's gradient is the sum. (A divide factor of 1 would say so directly, but needs a reduce op that gloo
lacks.)

FSDP2 gathers a layer's weights in its forward hook, a collective, so every rank must run each layer the
same number of times. Training forwards keep that: the layout is chosen jointly
(:func:`fairrl.models.logprobs.completion_outputs` ``agree``), and a rank holding fewer micro-batches than
another runs idle ones (:func:`fairrl.trainer.microbatch.idle_backward`); sampling
(each rank decodes until its own rows end) and the reference log-probs run inside :func:`full_params`
instead: every layer gathered once before, nothing communicated inside, resharded after. So sampling holds
the whole model at once, as TRL's generation under FSDP does. Evaluation runs before sharding, and after
training on :func:`unsharded_copy`.

Checkpoints hold whole tensors (gathered by every rank, written by rank 0), in the format of an unsharded
run: a run resumes with or without FSDP and with any number of ranks that splits ``prompts_per_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from fairrl.config.common import FSDPConfig
from fairrl.distributed import Ranks
from fairrl.errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _fsdp():
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    return FSDPModule, MixedPrecisionPolicy, fully_shard


def cpu_supported() -> bool:
    """Whether this torch's FSDP2 runs on CPU (gloo) ranks. Tested: 2.6's records CUDA-style stream events
    on CPU streams and fails, 2.13 works; the marker is ``set_reshard_after_forward``, added in 2.8."""
    return hasattr(_fsdp()[0], "set_reshard_after_forward")


def is_dtensor(t: Any) -> bool:
    """A sharded tensor (a parameter, gradient or optimiser state of an FSDP2 unit)."""
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; any other tensor as it is."""
    return t.to_local() if is_dtensor(t) else t


def units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's FSDP2 units, in module order (empty for an unsharded model)."""
    fsdp_module = _fsdp()[0]
    return [m for m in model.modules() if isinstance(m, fsdp_module)]


def is_sharded(model: torch.nn.Module | None) -> bool:
    return model is not None and bool(units(model))


def layer_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers: modules whose class the model lists in ``_no_split_modules`` (transformers' name
    for a block that must stay on one device)."""
    names: set[str] = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def shard_model(model: torch.nn.Module, cfg: FSDPConfig, ranks: Ranks) -> int:
    """Make each decoder layer of ``model`` an FSDP2 unit over all ranks (in place); returns how many.

    Activation checkpointing (``model.gradient_checkpointing``) is already on the layers by then, so a
    layer's recomputation in the backward gathers its weights again, as FSDP2 expects."""
    _, mixed_policy, fully_shard = _fsdp()
    layers = layer_modules(model)
    if not layers:
        raise ConfigError(f"model.fsdp: {type(model).__name__} names no decoder layer class in "
                          f"_no_split_modules, so there is nothing to shard; remove model.fsdp")  # fmt: skip
    from torch.distributed.device_mesh import init_device_mesh

    first = next(model.parameters())
    if first.device.type == "cpu" and not cpu_supported():
        raise ConfigError(f"model.fsdp on CPU ranks needs torch >= 2.8 (this is {torch.__version__}, whose FSDP2 "
                          f"expects CUDA streams); upgrade torch, or remove model.fsdp")  # fmt: skip
    mesh = init_device_mesh(first.device.type, (ranks.world,))
    kw: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": cfg.reshard_after_forward}
    if cfg.mixed_precision != "off":
        kw["mp_policy"] = mixed_policy(param_dtype=_DTYPES[cfg.mixed_precision], reduce_dtype=torch.float32)
    for layer in layers:
        fully_shard(layer, **kw)
        layer._fairrl_reshard_after_forward = cfg.reshard_after_forward  # restored after full_params
    return len(layers)


def shard_for_training(cfg: FSDPConfig | None, ranks: Ranks, console: Callable[[str], None],
                       *models: torch.nn.Module | None) -> None:  # fmt: skip
    """``model.fsdp`` at the start of training: each given model (the policy, a frozen reference copy)
    sharded under several ranks, a note in one process, nothing without ``model.fsdp``."""
    if cfg is None:
        return
    if not ranks.active:
        console("note: model.fsdp shards across ranks and does nothing in one process (torchrun --nproc_per_node N)")
        return
    counts = [shard_model(m, cfg, ranks) for m in models if m is not None]
    console(f"FSDP2: {counts[0]} decoder layers sharded over {ranks.world} ranks")


@contextmanager
def full_params(model: torch.nn.Module | None) -> Iterator[None]:
    """Every FSDP2 unit of ``model`` gathered for the block (one all-gather each, on every rank), so that its
    forwards inside communicate nothing and ranks may run them different numbers of times; resharded after.
    A no-op for an unsharded model. Use it without gradient (sampling, reference log-probs, evaluation)."""
    found = units(model) if model is not None else []
    if not found:
        yield
        return
    restore = [_keep_gathered(u) for u in found]
    for u in found:
        u.unshard()
    try:
        yield
    finally:
        for u, undo in zip(found, restore, strict=True):
            u.reshard()
            undo()


def _keep_gathered(unit) -> Callable[[], None]:
    """Stop ``unit`` from resharding after its forwards; returns the function that undoes it. torch >= 2.8
    has ``set_reshard_after_forward``; before it, the unit's parameter group decides through its
    ``post_forward_mesh_info`` (None = keep the gathered weights), saved here and put back."""
    if hasattr(unit, "set_reshard_after_forward"):
        unit.set_reshard_after_forward(False, recurse=False)
        before = getattr(unit, "_fairrl_reshard_after_forward", True)
        return lambda: unit.set_reshard_after_forward(before, recurse=False)
    group = unit._get_fsdp_state()._fsdp_param_group
    saved = group.post_forward_mesh_info
    group.post_forward_mesh_info = None

    def undo() -> None:
        group.post_forward_mesh_info = saved

    return undo


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (a collective: every rank calls it, in the same order), on CPU."""
    return (t.full_tensor() if is_dtensor(t) else t).detach().cpu()


def full_state_dict(model: torch.nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """``model``'s weights (or only its trainable ones) as whole CPU tensors, gathered on every rank."""
    if trainable_only:
        return {n: full_tensor(p).contiguous() for n, p in model.named_parameters() if p.requires_grad}
    return {n: full_tensor(v).contiguous() for n, v in model.state_dict().items()}


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with every sharded state tensor gathered whole (a collective)."""
    sd = optimizer.state_dict()
    state = {i: {k: full_tensor(v) if is_dtensor(v) else v for k, v in s.items()} for i, s in sd["state"].items()}
    return {**sd, "state": state}


def like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor) laid out as ``param``: its shard of this rank when ``param`` is sharded."""
    if not is_dtensor(param):
        return value.to(param.device, param.dtype)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(param.device, param.dtype), param.device_mesh, param.placements)


def reshard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After ``load_state_dict`` of whole tensors: each sharded parameter's state tensors of its shape made
    shards like the parameter (a collective, in parameter order)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not is_dtensor(p):
                continue
            state = optimizer.state.get(p, {})
            for k, v in list(state.items()):
                if isinstance(v, torch.Tensor) and not is_dtensor(v) and tuple(v.shape) == tuple(p.shape):
                    state[k] = like(v, p)


def unsharded_copy(model: torch.nn.Module, lora: Any | None) -> torch.nn.Module:
    """A whole-model copy of a sharded policy on every rank (the final save and evaluation work on it): the
    same architecture built from its config (and the same LoRA wrapping), loaded with the gathered weights."""
    from transformers import AutoModelForCausalLM

    from fairrl.models.common import unwrap_peft
    from fairrl.models.loading import LoraSettings, apply_lora

    weights = full_state_dict(model)
    base = unwrap_peft(model)
    fresh = AutoModelForCausalLM.from_config(base.config, torch_dtype=next(model.parameters()).dtype)
    if hasattr(model, "peft_config") and lora is not None:
        fresh = apply_lora(fresh, LoraSettings(lora.r, lora.alpha, lora.dropout, lora.target_modules))
    fresh.load_state_dict(weights, strict=True)
    fresh.generation_config = model.generation_config
    device = next(model.parameters()).device
    return fresh.to(device).eval()

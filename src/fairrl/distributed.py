"""Data-parallel training on torch.distributed: ``torchrun --nproc_per_node N -m fairrl train CONFIG``.

The launcher (``torchrun``, ``accelerate launch``, or a multi-node rendezvous through either) starts N
processes and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_from_env` joins them into one
process group (NCCL on GPUs, gloo on CPUs) and every collective below goes through it.

What a GRPO step does on N ranks (:mod:`fairrl.trainer.grpo_step`), so that it equals one process with the
same global batch:

- every rank draws the same P prompts from the stream (same seed, same position) and rolls out its own
  contiguous shard of P / N prompts, groups whole; the sampler draws the uniforms of all P x G rows and
  keeps its shard's (:func:`fairrl.rollout.generate.sample_categorical`), so a completion is what one
  process would have sampled, up to float rounding of the forward;
- rewards, per-function rewards, texts and lengths are gathered, so advantages (group- or batch-level
  scaling, group-balance weights), metrics and per-group rewards are computed on the global batch, the
  same on every rank;
- the loss is normalised by global counts (sequences, and tokens for the token-mean losses), each rank
  back-propagates its share, and the accumulated gradients are summed across ranks (one all-reduce of a
  flattened buffer per optimiser step), so gradient clipping and AdamW see the global gradient on every
  rank and the weights stay identical without broadcasting them.

Why not ``DistributedDataParallel``: DDP averages gradients in hooks armed by its own ``forward``; the
trainer calls the decoder body and the chunked output layer directly (:mod:`fairrl.models.logprobs`),
accumulates over micro-batches of unequal count, and wants a sum (its loss is already normalised
globally). One all-reduce per optimiser step is what DDP with ``no_sync`` accumulation sends, without
bucketing overlap (which matters on GPUs for large models; FSDP is the path there).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from fairrl.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the process group; ``Ranks()`` is a single process (every method a no-op)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run folder, logs, checkpoints and reports."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, n: int, what: str = "algorithm.prompts_per_step") -> slice:
        """This rank's contiguous block of ``n`` items; ``n`` must divide evenly across the ranks."""
        if n % self.world:
            raise ConfigError(f"{what}={n} does not split across {self.world} ranks; make it a multiple of {self.world}")
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (a copy; the input is unchanged)."""
        if not self.active:
            return t
        out = t.detach().to(self._device(), copy=True)
        dist.all_reduce(out)
        return out.to(t.device)

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over ranks, in one all-reduce; a key a rank lacks counts 0 there (a rank that
        held no rows of a step has no statistics of it). Every rank calls it."""
        if not self.active:
            return values
        keys = sorted({k for part in self.gather_objects(sorted(values)) for k in part})
        if not keys:
            return {}
        total = self.sum(torch.tensor([float(values.get(k, 0.0)) for k in keys], dtype=torch.float64,
                                      device=self._device()))  # fmt: skip
        return dict(zip(keys, total.tolist(), strict=True))

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (e.g. rank 0's wall-clock deadline)."""
        if not self.active:
            return flag
        return bool(self.sum(torch.tensor([float(flag)], device=self._device())).item() > 0)

    def all(self, flag: bool) -> bool:
        """True on every rank when it is true on every rank (e.g. a layout every rank's data allows)."""
        if not self.active:
            return flag
        return bool(self.sum(torch.tensor([float(not flag)], device=self._device())).item() == 0)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """The ranks' tensors of one shape, concatenated along dim 0 in rank order."""
        if not self.active:
            return t
        home = t.device
        t = t.contiguous().to(self._device())
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t)
        return torch.cat(parts).to(home)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """:meth:`gather` for tensors whose first dimension differs between ranks (padded to the longest)."""
        if not self.active:
            return t
        sizes = [int(n) for n in self.gather(torch.tensor([t.shape[0]], dtype=torch.long)).tolist()]
        padded = t.new_zeros((max(sizes), *t.shape[1:]))
        padded[: t.shape[0]] = t
        return torch.cat([p[:n] for p, n in zip(self.gather(padded).split(max(sizes)), sizes, strict=True)])

    def assemble(self, local: torch.Tensor, index: torch.Tensor, total: int) -> torch.Tensor:
        """The global ``[total, ...]`` tensor whose rows ``index`` (this rank's, global positions) are
        ``local``; every rank passes its own rows, and every position is some rank's."""
        if not self.active:
            return local
        out = local.new_zeros((total, *local.shape[1:]))
        out[self.gather_rows(index.long().cpu())] = self.gather_rows(local.cpu()).to(out.device)
        return out

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order (texts, logged columns: small)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Sum the accumulated gradients over ranks, in place (a missing gradient counts as zeros). Parameters
        of FSDP2 units (DTensors, :mod:`fairrl.models.sharding`) hold shards that their backward already
        averaged over the ranks: those are multiplied by the number of ranks."""
        if not self.active:
            return
        from torch.distributed.tensor import DTensor

        parameters = [p for p in parameters if p.requires_grad]
        for p in parameters:
            if isinstance(p, DTensor) and p.grad is not None:
                p.grad.to_local().mul_(self.world)
        params = [p for p in parameters if not isinstance(p, DTensor)]
        if not params:
            return
        flat = torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
        ])  # fmt: skip
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's picklable ``obj`` on every rank (what rank 0 alone computed, e.g. an evolved attack pool)."""
        if not self.active:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def split(self, n: int) -> slice:
        """This rank's contiguous block of ``n`` items when ``n`` need not split evenly (sizes differ by at
        most one, larger blocks first, as ``torch.tensor_split``); a rank may get none."""
        per, extra = divmod(n, self.world)
        start = self.rank * per + min(self.rank, extra)
        return slice(start, start + per + (self.rank < extra))

    def gather_with_grad(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's 1-D ``t`` (lengths may differ) concatenated in rank order, differentiable with
        respect to this rank's part: the backward hands this rank the gradient of its own slice and sends
        nothing. That is exact when every rank computes the same loss from the gathered tensor (a batch
        objective such as a fairness term): rank r's parameters then get dL/dt_r dt_r/dtheta, and
        :meth:`sum_gradients` adds the ranks' parts into dL/dtheta."""
        if not self.active:
            return t
        return _GatherOwnGrad.apply(t, self)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def _device(self) -> torch.device:
        # NCCL moves CUDA tensors only; gloo takes CPU tensors
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class _GatherOwnGrad(torch.autograd.Function):
    """:meth:`Ranks.gather_with_grad`: all-gather (padded to the longest part) forward, own slice backward."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
        sizes = [int(n) for n in ranks.gather(torch.tensor([t.shape[0]], dtype=torch.long)).tolist()]
        ctx.start, ctx.size = sum(sizes[: ranks.rank]), t.shape[0]
        return ranks.gather_rows(t.detach())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad[ctx.start : ctx.start + ctx.size], None


def my_share(batches: list, ranks: Ranks | None = None) -> list:
    """The batches of a loop this rank runs: every ``world``-th, from its rank on. Evaluation loops shard by
    whole batches, so every item is computed in the same batch, with the same padding, as in one process."""
    ranks = ranks or current()
    return batches[ranks.rank :: ranks.world] if ranks.active else batches


def gather_results(results: dict, ranks: Ranks | None = None) -> dict:
    """The union of every rank's ``{item: result}`` (the results of :func:`my_share` batches)."""
    ranks = ranks or current()
    if not ranks.active:
        return results
    merged: dict = {}
    for part in ranks.gather_objects(results):
        merged.update(part)
    return merged


def current() -> Ranks:
    """The process group this process belongs to, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Ranks()


def init_from_env(timeout_minutes: float = 60.0) -> Ranks:
    """Join the process group a launcher described in the environment (``WORLD_SIZE`` > 1); a no-op in a
    single process or when already joined. NCCL when CUDA is available, else gloo; with CUDA each rank
    takes GPU ``LOCAL_RANK``. The timeout bounds how long ranks wait for each other (rank 0 evaluates the
    model alone before and after training)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return current()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes))
    return current()

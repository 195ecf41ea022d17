"""TRL's side of ``fairrl bench --nproc N``: ``GRPOTrainer`` on 1 process and on N under accelerate.

Each process is started with ``torch.multiprocessing`` and given the environment ``accelerate launch``
gives its workers (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``) before anything builds accelerate's state. From it the trainer's ``PartialState`` picks
accelerate's multi-process mode (``MULTI_CPU`` with gloo on CPU, ``MULTI_GPU`` with NCCL on GPUs),
opens the process group itself and wraps the model in DDP. The 1-process run gets none of these
variables, as under a plain ``python`` or ``accelerate launch --num_processes 1``.

The global batch is the same in both runs: TRL's per-device batch sizes are divided by N
(:class:`fairrl.bench.trl_step.TRLSide` ``processes``), so each optimiser step still samples and trains
P x G completions of exactly L tokens, P/N prompts per process. Each process counts the completion
tokens that entered its loss (``completion_mask`` in ``compute_loss``); the counts are summed over the
processes and checked against P x G x L. Steps are bracketed by ``wait_for_everyone`` so a step lasts
until the slowest process has finished it, and timed on process 0, as on fairrl's side.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from fairrl.bench.models import load_bench_model, save_weights
from fairrl.bench.timing import rank_sums
from fairrl.bench.trl_step import TRLSide, trl_version
from fairrl.bench.workload import BenchSpec, bench_examples

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class _ScalingTRLSide(TRLSide):
    """TRLSide with steps bracketed by a barrier and the trained completion tokens counted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trained: list[int] = []
        self._count = 0
        compute_loss = self.trainer.compute_loss

        def counted(model, inputs, *a, **kw):
            self._count += int(inputs["completion_mask"].sum())
            return compute_loss(model, inputs, *a, **kw)

        self.trainer.compute_loss = counted

    def begin_step(self) -> None:
        self.trainer.accelerator.wait_for_everyone()
        self._count = 0
        super().begin_step()

    def end_step(self) -> None:
        self.trainer.accelerator.wait_for_everyone()  # the step ends when the slowest process has
        super().end_step()
        self.trained.append(self._count)


def _trl_process(rank: int, world: int, folder: str, port: int, spec_dict: dict[str, Any]) -> None:
    """One process of a TRL run (``world`` of them): train, then write this process's figures."""
    spec = BenchSpec(**spec_dict)
    threads = spec.threads or 1
    os.environ["OMP_NUM_THREADS"] = str(threads)  # else accelerate's MULTI_CPU sets cores / processes
    torch.set_num_threads(threads)
    for key in LAUNCH_ENV:
        os.environ.pop(key, None)
    if world > 1:
        env = {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": world,
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}  # fmt: skip
        os.environ.update({k: str(v) for k, v in env.items()})
    from accelerate import PartialState

    cuda = spec.device.startswith("cuda") or (spec.device == "auto" and torch.cuda.is_available())
    state = PartialState(cpu=not cuda)  # the trainer's arguments rebuild it from the same environment
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    try:
        bench = load_bench_model(spec.model, spec.dtype, device, spec.seed)
        if spec.beta > 0 and not spec.lora and bench.folder is None:  # TRL loads its reference from a folder
            if state.is_main_process:
                save_weights(bench, Path(folder) / "model")
            state.wait_for_everyone()
            bench.model.config._name_or_path = str(Path(folder) / "model")
        examples = bench_examples(bench.tokenizer, spec.prompts, spec.prompt_tokens)
        side = _ScalingTRLSide(spec, bench.model, bench.tokenizer, device, examples, Path(folder) / f"w{rank}",
                               processes=world)  # fmt: skip
        records = side.run()
        acc, args = side.trainer.accelerator, side.trainer.args
        result = {
            "seconds": [r.seconds for r in records],
            "trained_tokens": side.trained,
            "generated_tokens": [r.completion_tokens for r in records],
            "distributed_type": str(acc.distributed_type).split(".")[-1],
            "num_processes": acc.num_processes,
            "threads": torch.get_num_threads(),
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "generation_batch_size": args.generation_batch_size,
        }
        (Path(folder) / f"result-{rank}.json").write_text(json.dumps(result))
    finally:
        state.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _failure(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    reason = lines[-1] if lines else type(err).__name__
    if "SIGKILL" in reason:  # measured here: 2 TRL processes of the 135M model past 23 GiB of RAM
        reason += " (most often the kernel's out-of-memory killer: try --micro-batch or --lora)"
    return reason


def trl_run(spec: BenchSpec, n: int) -> dict[str, Any]:
    """TRL's step on ``n`` processes: figures, or ``{"ranks": n, "not_run": reason}``."""
    local = spec.prompts * spec.generations // n
    if spec.micro_batch and spec.micro_batch < local and local % spec.micro_batch:
        return {"ranks": n, "not_run": f"--micro-batch {spec.micro_batch} does not divide the {local} completions "
                                       "per process (TRL would train fewer)"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fairrl-trl-scaling-") as tmp:
        try:
            mp.spawn(_trl_process, args=(n, tmp, _free_port(), asdict(spec)), nprocs=n, join=True)
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
            return {"ranks": n, "not_run": _failure(err)}
        results = [json.loads((Path(tmp) / f"result-{r}.json").read_text()) for r in range(n)]
    timed = slice(spec.warmup, None)
    seconds = results[0]["seconds"][timed]
    median = statistics.median(seconds)
    nominal = spec.prompts * spec.generations * spec.new_tokens
    head = results[0]
    return {
        "ranks": n, "step_seconds": seconds, "median_seconds": median, "tokens_per_s": nominal / median,
        "trained_tokens_per_step": rank_sums([r["trained_tokens"] for r in results])[timed],
        "generated_tokens_per_step": rank_sums([r["generated_tokens"] for r in results])[timed],
        **{k: head[k] for k in ("distributed_type", "num_processes", "threads", "per_device_train_batch_size",
                                "gradient_accumulation_steps", "generation_batch_size")},
    }  # fmt: skip


def trl_scaling(spec: BenchSpec, nproc: int, console=print) -> dict[str, Any]:
    """TRL's 1-process and ``nproc``-process runs, speedup and efficiency (None where a run did not run)."""
    runs = []
    for n in (1, nproc):
        console(f"TRL {trl_version()}, {n} process(es): {spec.warmup} warm-up + {spec.steps} timed steps ...")
        runs.append(trl_run(spec, n))
        if "not_run" in runs[-1]:
            console(f"  TRL on {n} process(es) not run: {runs[-1]['not_run']}")
    one, many = (r.get("tokens_per_s") for r in runs)
    ok = one is not None and many is not None
    return {"version": trl_version(), "runs": runs, "speedup": many / one if ok else None,
            "efficiency": many / (nproc * one) if ok else None}  # fmt: skip

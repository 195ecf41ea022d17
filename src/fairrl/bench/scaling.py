"""``fairrl bench --nproc N``: data-parallel scaling of fairrl's GRPO step on torch.distributed.

The same workload (P prompts x G completions of N forced tokens, the step of :mod:`fairrl.bench.fairrl_step`)
is run by one process and by N ranks (gloo on CPU, NCCL with one GPU per rank), each rank sampling and
training its share of the P prompts (:mod:`fairrl.distributed`), gradients summed across ranks. Each rank
uses ``--threads`` torch threads (default 1, so N CPU ranks use N cores). Figures: the median step time over
the timed steps (rank 0's clock, steps separated by barriers), completion tokens per second, and

    scaling efficiency = tokens/s with N ranks / (N x tokens/s with 1 rank)

(1.0 = perfect; the gradient all-reduce, the reward gathers and a straggler rank cost the rest).
TRL is not run here: its multi-process path goes through ``accelerate launch``, outside one command.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fairrl.bench.fairrl_step import FairrlSide
from fairrl.bench.models import load_bench_model
from fairrl.bench.workload import BenchSpec, bench_examples
from fairrl.errors import ConfigError, FairRLError


def _rank_main(rank: int, world: int, folder: str, spec_dict: dict[str, Any]) -> None:
    spec = BenchSpec(**spec_dict)
    torch.set_num_threads(spec.threads or 1)
    cuda = spec.device.startswith("cuda") or (spec.device == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{folder}/rendezvous",
                                rank=rank, world_size=world)  # fmt: skip
    try:
        bench = load_bench_model(spec.model, spec.dtype, device, spec.seed)
        side = FairrlSide(spec, bench.model, bench.tokenizer, device, bench_examples(bench.tokenizer, spec.prompts,
                                                                                      spec.prompt_tokens))  # fmt: skip
        seconds = []
        for i in range(spec.warmup + spec.steps):
            if world > 1:
                dist.barrier()
            t0 = time.perf_counter()
            side.step(i)
            if world > 1:
                dist.barrier()  # the step ends when the slowest rank has finished it
            if i >= spec.warmup:
                seconds.append(time.perf_counter() - t0)
        if rank == 0:
            (Path(folder) / "result.json").write_text(json.dumps({"seconds": seconds}))
    finally:
        if world > 1:
            dist.destroy_process_group()


def run_scaling(spec: BenchSpec, nproc: int, console=print) -> dict[str, Any]:
    """Run the step on 1 and on ``nproc`` ranks; returns the figures of the module docstring."""
    if nproc < 2:
        raise ConfigError(f"--nproc must be at least 2 for a scaling run, got {nproc}")
    if spec.prompts % nproc:
        raise ConfigError(f"--prompts {spec.prompts} must be a multiple of --nproc {nproc} (each rank trains whole "
                          "prompts' groups)")  # fmt: skip
    if torch.cuda.is_available() and spec.device != "cpu" and torch.cuda.device_count() < nproc:
        raise ConfigError(f"--nproc {nproc} needs {nproc} GPUs, {torch.cuda.device_count()} visible; or --device cpu")
    spec = replace(spec, trl=False, threads=spec.threads or 1)
    tokens = spec.prompts * spec.generations * spec.new_tokens
    runs: dict[int, dict[str, Any]] = {}
    for n in (1, nproc):
        console(f"{n} rank(s): {spec.warmup} warm-up + {spec.steps} timed steps ...")
        with tempfile.TemporaryDirectory(prefix="fairrl-scaling-") as tmp:
            try:
                mp.spawn(_rank_main, args=(n, tmp, asdict(spec)), nprocs=n, join=True)
            except mp.ProcessRaisedException as err:
                raise FairRLError(f"a rank failed in the {n}-rank run: {str(err).strip().splitlines()[-1]}") from None
            seconds = json.loads((Path(tmp) / "result.json").read_text())["seconds"]
        median = statistics.median(seconds)
        runs[n] = {"ranks": n, "step_seconds": seconds, "median_seconds": median, "tokens_per_s": tokens / median}
    one, many = runs[1]["tokens_per_s"], runs[nproc]["tokens_per_s"]
    return {"spec": asdict(spec), "completion_tokens_per_step": tokens, "runs": [runs[1], runs[nproc]],
            "speedup": many / one, "efficiency": many / (nproc * one)}  # fmt: skip


def scaling_table(report: dict[str, Any]) -> str:
    lines = ["| ranks | median step (s) | completion tokens/s |", "|---|---|---|"]
    for r in report["runs"]:
        lines.append(f"| {r['ranks']} | {r['median_seconds']:.2f} | {r['tokens_per_s']:.1f} |")
    n = report["runs"][-1]["ranks"]
    lines.append(f"\nspeedup with {n} ranks: {report['speedup']:.2f}x; scaling efficiency {report['efficiency']:.2f} "
                 f"(1.00 = perfect); {report['spec']['threads']} thread(s) per rank")  # fmt: skip
    return "\n".join(lines)

"""``fairrl bench --nproc N``: data-parallel scaling of fairrl's GRPO step, and of TRL's under accelerate.

One workload (P prompts x G completions of exactly L = --new-tokens forced tokens per optimiser step) is trained four
ways: fairrl's step (:mod:`fairrl.bench.fairrl_step`) by one process and by N torch.distributed ranks
(gloo on CPU, NCCL with one GPU per rank), each rank sampling and training P/N prompts and gradients
summed across ranks; then TRL's ``GRPOTrainer`` by one process and by N processes in accelerate's
multi-process mode, with per-device batch sizes divided by N so that the global batch is the same
(:mod:`fairrl.bench.trl_scaling`). Every process uses ``--threads`` torch threads (default 1, so N CPU
ranks use N cores). Figures per run: the median step time over the timed steps (process 0's clock,
steps bracketed by barriers, so a step lasts until the slowest rank is done), completion tokens per
second, and for each trainer

    speedup = tokens/s with N ranks / tokens/s with 1 rank
    scaling efficiency = speedup / N  (1.0 = perfect)

(the gradient all-reduce, the reward gathers and a straggler rank cost the rest), plus fairrl's
tokens/s over TRL's at 1 and at N ranks. Each process counts the completion tokens that entered its
loss; the sums over ranks are checked against P x G x L (``warnings``). ``--no-trl`` skips TRL; a TRL
run that fails (or TRL not installed) is reported as not run, with the reason, instead of stopping the
command.
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
from fairrl.bench.timing import rank_sums
from fairrl.bench.trl_step import trl_unavailable
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
        seconds, tokens = [], []
        for i in range(spec.warmup + spec.steps):
            if world > 1:
                dist.barrier()
            t0 = time.perf_counter()
            record = side.step(i)
            if world > 1:
                dist.barrier()  # the step ends when the slowest rank has finished it
            if i >= spec.warmup:
                seconds.append(time.perf_counter() - t0)
                tokens.append(record.completion_tokens)
        (Path(folder) / f"result-{rank}.json").write_text(json.dumps({"seconds": seconds, "tokens": tokens}))
    finally:
        if world > 1:
            dist.destroy_process_group()


def _fairrl_run(spec: BenchSpec, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fairrl-scaling-") as tmp:
        try:
            mp.spawn(_rank_main, args=(n, tmp, asdict(spec)), nprocs=n, join=True)
        except mp.ProcessRaisedException as err:
            raise FairRLError(f"a rank failed in the {n}-rank run: {str(err).strip().splitlines()[-1]}") from None
        results = [json.loads((Path(tmp) / f"result-{r}.json").read_text()) for r in range(n)]
    median = statistics.median(results[0]["seconds"])
    return {"ranks": n, "step_seconds": results[0]["seconds"], "median_seconds": median,
            "tokens_per_s": spec.prompts * spec.generations * spec.new_tokens / median,
            "trained_tokens_per_step": rank_sums([r["tokens"] for r in results])}  # fmt: skip


def _token_warnings(name: str, runs: list[dict[str, Any]], expected: int) -> list[str]:
    out = []
    for r in runs:
        bad = sorted({t for t in r.get("trained_tokens_per_step", []) if t != expected})
        if bad:
            out.append(f"{name} on {r['ranks']} rank(s) trained {bad} completion tokens in some steps, "
                       f"expected {expected}")  # fmt: skip
    return out


def run_scaling(spec: BenchSpec, nproc: int, console=print) -> dict[str, Any]:
    """Run both trainers on 1 and on ``nproc`` ranks; returns the figures of the module docstring."""
    if nproc < 2:
        raise ConfigError(f"--nproc must be at least 2 for a scaling run, got {nproc}")
    if spec.prompts % nproc:
        raise ConfigError(f"--prompts {spec.prompts} must be a multiple of --nproc {nproc} (each rank trains whole "
                          "prompts' groups)")  # fmt: skip
    if torch.cuda.is_available() and spec.device != "cpu" and torch.cuda.device_count() < nproc:
        raise ConfigError(f"--nproc {nproc} needs {nproc} GPUs, {torch.cuda.device_count()} visible; or --device cpu")
    spec = replace(spec, threads=spec.threads or 1)
    tokens = spec.prompts * spec.generations * spec.new_tokens
    runs = []
    for n in (1, nproc):
        console(f"fairrl, {n} rank(s): {spec.warmup} warm-up + {spec.steps} timed steps ...")
        runs.append(_fairrl_run(spec, n))
    one, many = runs[0]["tokens_per_s"], runs[1]["tokens_per_s"]
    report = {"spec": asdict(spec), "completion_tokens_per_step": tokens, "runs": runs,
              "speedup": many / one, "efficiency": many / (nproc * one)}  # fmt: skip
    trl_reason = "--no-trl" if not spec.trl else trl_unavailable()
    trl = None
    if trl_reason is None:
        from fairrl.bench.trl_scaling import trl_scaling

        trl = trl_scaling(spec, nproc, console=console)
    ratios = {str(f["ranks"]): f["tokens_per_s"] / t["tokens_per_s"] if "tokens_per_s" in t else None
              for f, t in zip(runs, trl["runs"] if trl else [{}, {}], strict=True)}  # fmt: skip
    warnings = _token_warnings("fairrl", runs, tokens) + (_token_warnings("TRL", trl["runs"], tokens) if trl else [])
    return {**report, "trl": trl, "trl_reason": trl_reason, "fairrl_over_trl": ratios, "warnings": warnings}


def scaling_table(report: dict[str, Any]) -> str:
    trl = report["trl"]
    lines = ["| trainer | ranks | median step (s) | completion tokens/s |", "|---|---|---|---|"]
    for name, runs in (("fairrl", report["runs"]), ("TRL", trl["runs"] if trl else [])):
        for r in runs:
            if "not_run" in r:
                lines.append(f"| {name} | {r['ranks']} | not run: {r['not_run']} | |")
            else:
                lines.append(f"| {name} | {r['ranks']} | {r['median_seconds']:.2f} | {r['tokens_per_s']:.1f} |")
    n = report["runs"][-1]["ranks"]
    lines.append(f"\nfairrl with {n} ranks: speedup {report['speedup']:.2f}x, scaling efficiency "
                 f"{report['efficiency']:.2f} (1.00 = perfect)")  # fmt: skip
    if trl is None:
        lines.append(f"TRL: not run ({report['trl_reason']})")
    elif trl["speedup"] is None:
        lines.append(f"TRL with {n} processes: speedup not measured (see the not-run row)")
    else:
        kind = trl["runs"][-1]["distributed_type"]
        lines.append(f"TRL with {n} processes (accelerate {kind}): speedup {trl['speedup']:.2f}x, scaling "
                     f"efficiency {trl['efficiency']:.2f}")  # fmt: skip
    ratios = [f"{k} rank(s) {v:.2f}x" for k, v in report["fairrl_over_trl"].items() if v is not None]
    if ratios:
        lines.append("fairrl/TRL completion tokens/s: " + ", ".join(ratios))
    lines.append(f"{report['spec']['threads']} thread(s) per rank")
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)

"""Run the benchmark: build both sides on the same model, alternate their steps, assemble the report.

Order of a run: load the model once; copy it for TRL (before fairrl wraps or trains its own); build
the prompts; measure or look up the device peak; then TRL's training loop runs ``warmup + steps``
steps and, after each, fairrl runs its step of the same index (TRL, fairrl, TRL, fairrl, ...), so slow
drifts of the machine (other jobs, clocks, heat) hit both sides alike. Without TRL (``--no-trl`` or
the extra not installed) only fairrl's steps run and the report says why.
"""

from __future__ import annotations

import copy
import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from fairrl.bench.fairrl_step import FairrlSide
from fairrl.bench.floor import cpu_name, device_peak, model_shape, step_floor
from fairrl.bench.models import load_bench_model, save_weights
from fairrl.bench.report import model_flops_utilisation, paired_ratios, side_summary, speedup
from fairrl.bench.timing import PeakMeter, StepRecord
from fairrl.bench.trl_step import TRLSide, trl_unavailable, trl_version
from fairrl.bench.workload import BenchSpec, bench_examples
from fairrl.console import progress_bar, progress_scope
from fairrl.errors import ConfigError, FairRLError
from fairrl.models.loading import DTYPES

Console = Callable[[str], None]


def bench_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: the benchmark runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r} but no CUDA device is available; use auto or cpu")
    return device


def _git_commit() -> str | None:
    """The commit of a source checkout of fairrl (None for an installed wheel or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _environment(device: torch.device) -> dict:
    import datetime

    import transformers

    from fairrl import __version__

    return {
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fairrl": __version__,
        "git_commit": _git_commit(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "memory": PeakMeter(device).kind,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl_version(),
    }


def _warnings(spec: BenchSpec, fairrl: list[StepRecord], trl: list[StepRecord] | None) -> list[str]:
    """Checks that both sides really did the same work (token counts)."""
    out = []
    expected = spec.prompts * spec.generations * spec.new_tokens
    for name, records in (("fairrl", fairrl), ("TRL", trl or [])):
        bad = sorted({r.completion_tokens for r in records if r.completion_tokens != expected})
        if bad:
            out.append(f"{name} generated {bad} completion tokens in some steps, expected {expected}")
    if trl and fairrl and trl[-1].prompt_tokens != fairrl[-1].prompt_tokens:
        out.append(f"prompt tokens differ: fairrl {fairrl[-1].prompt_tokens}, TRL {trl[-1].prompt_tokens}")
    return out


def run_bench(spec: BenchSpec, console: Console = print, progress: bool = True) -> dict:
    """Run the benchmark described by ``spec``; returns the report (see :mod:`fairrl.bench.report`).

    ``spec.threads`` sets torch's CPU threads for the run only (restored afterwards). A progress bar
    (stderr) counts the steps unless ``progress`` is False.
    """
    spec.validate()
    threads = torch.get_num_threads()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    try:
        with progress_scope(enabled=progress):
            return _run(spec, console)
    finally:
        torch.set_num_threads(threads)


def _run(spec: BenchSpec, console: Console) -> dict:
    device = bench_device(spec.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # TRL's accelerator uses the current device
    skip_reason = "--no-trl" if not spec.trl else trl_unavailable()
    console(f"loading {spec.model} ({spec.dtype}) on {device} ...")
    bench = load_bench_model(spec.model, spec.dtype, device, spec.seed)
    examples = bench_examples(bench.tokenizer, spec.prompts, spec.prompt_tokens)
    memory_step = device.type == "cpu" and PeakMeter(device).kind is not None  # see fairrl.bench.timing
    total_steps = spec.warmup + spec.steps + int(memory_step)
    fairrl_records: list[StepRecord] = []
    trl_records: list[StepRecord] | None = None
    trl_settings = None
    with tempfile.TemporaryDirectory(prefix="fairrl-bench-") as tmp:
        trl_model = None
        if skip_reason is None:
            if spec.beta > 0 and not spec.lora:  # TRL loads its frozen reference from the model's folder
                save_weights(bench, Path(tmp) / "model")
            trl_model = copy.deepcopy(bench.model)  # before fairrl wraps (LoRA) or trains its copy
        fairrl = FairrlSide(spec, bench.model, bench.tokenizer, device, examples)
        shape = model_shape(fairrl.model)
        console("measuring the device peak ..." if device.type == "cpu" else "device peak ...")
        peak = device_peak(device, DTYPES[spec.dtype], spec.probe_seconds)

        bar = progress_bar(total_steps, 0, "bench steps" + ("" if skip_reason else " (fairrl + TRL)"))

        def fairrl_step(i: int) -> None:
            last = memory_step and i == total_steps - 1
            fairrl_records.append(fairrl.step(i, memory_step=last))
            bar.update(1)
            console(f"  step {i + 1}/{total_steps}{' (memory, untimed)' if last else ''}: fairrl "
                    f"{fairrl_records[-1].seconds:.2f}s"
                    + (f", TRL {trl_records[-1].seconds:.2f}s" if trl_records else ""))  # fmt: skip

        if skip_reason is None:
            console(f"running {total_steps} steps per side (TRL {trl_version()}), alternating ...")
            trl = TRLSide(
                spec, trl_model, bench.tokenizer, device, examples, Path(tmp), after_step=fairrl_step,
                memory_step=memory_step,
            )  # fmt: skip
            trl_records = trl.records
            trl.run()
            trl_settings = trl.settings()
            del trl, trl_model
        else:
            console(f"running {total_steps} fairrl steps (TRL skipped: {skip_reason}) ...")
            for i in range(total_steps):
                fairrl_step(i)
        bar.close()
    if len(fairrl_records) != total_steps or (trl_records is not None and len(trl_records) != total_steps):
        raise FairRLError(
            f"expected {total_steps} steps per side, got fairrl {len(fairrl_records)}, "
            f"TRL {len(trl_records) if trl_records is not None else '-'}"
        )
    prompt_lens = fairrl_records[-1].prompt_tokens
    floor = step_floor(shape, prompt_lens, spec.generations, spec.new_tokens, spec.beta, peak)
    fr = side_summary(fairrl_records, spec.warmup, floor)
    tr = side_summary(trl_records, spec.warmup, floor) if trl_records is not None else None
    for side in (fr, tr):
        if side is not None:
            side["mfu"] = model_flops_utilisation(side, floor, peak.flops_per_s)
    report = {
        "spec": spec.as_dict(),
        "environment": _environment(device),
        "model": {
            "name": spec.model,
            "random_init": bench.random_init,
            "params": sum(p.numel() for p in fairrl.model.parameters()),
            "trainable_params": shape.trainable_params,
            "matmul_params": shape.body_params + shape.head_params,
            "layers": shape.layers,
            "width": shape.width,
            "vocab": shape.vocab,
        },
        "workload": {
            "prompts": spec.prompts,
            "generations": spec.generations,
            "new_tokens": spec.new_tokens,
            "prompt_tokens": prompt_lens,
            "completion_tokens_per_step": spec.prompts * spec.generations * spec.new_tokens,
        },
        "settings": {"learning_rate": spec.learning_rate, "fairrl": fairrl.settings(), "trl": trl_settings},
        "peak": {
            "flops_per_s": peak.flops_per_s,
            "bytes_per_s": peak.bytes_per_s,
            "source": peak.source,
            "name": peak.name,
        },  # fmt: skip
        "floor": floor,
        "fairrl": fr,
        "trl": tr,
        "fairrl_over_trl": paired_ratios(fairrl_records, trl_records, spec.warmup) if trl_records else None,
        "speedup_vs_trl": speedup(fr, tr),
        "speedup_vs_trl_reason": skip_reason,
        "warnings": _warnings(spec, fairrl_records, trl_records),
    }
    return report

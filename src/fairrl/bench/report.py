"""Summaries of the timed steps, the fairrl/TRL comparison, and the printed table.

Per side and phase: min / median / max seconds over the timed steps (warm-up excluded); completion
tokens/s = completion tokens of a step / its seconds; memory = the largest per-step peak, overall and
per phase, taken from the memory step where there is one (CPU; see :mod:`fairrl.bench.timing`), else
from the timed steps. Ratios
fairrl/TRL are taken step by step over paired steps (step i of each side, run back to back), then
summarised. ``speedup_vs_trl`` = TRL's median step seconds / fairrl's median step seconds (> 1: fairrl
is faster). ``floor_ratio`` = a side's median seconds / the floor seconds of the phase.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict

from fairrl.bench.timing import PHASES, StepRecord

ROWS = (*PHASES, "step")
LABELS = {"forward_backward": "forward+backward", "step": "step (total)"}


def summarize(values: list[float]) -> dict[str, float] | None:
    """min / median / max of ``values`` (None when empty)."""
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _row_values(r: StepRecord, row: str) -> float:
    return r.seconds if row == "step" else r.phases[row]


def _timed(records: list[StepRecord], warmup: int) -> list[StepRecord]:
    return [r for r in records[warmup:] if not r.memory_step]


def side_summary(records: list[StepRecord], warmup: int, floor: dict) -> dict:
    """The JSON block of one side: every step (warm-up flagged) and summaries of the timed ones."""
    timed = _timed(records, warmup)
    measured = [r for r in records if r.memory_step] or timed
    phases = {row: summarize([_row_values(r, row) for r in timed]) for row in ROWS}
    floor_ratio = {}
    for row in ROWS:
        f = floor.get(row, {}).get("seconds", 0.0)
        floor_ratio[row] = phases[row]["median"] / f if phases[row] and f > 0 else None
    peaks = [r.peak_bytes for r in measured]
    steps = [r.step_bytes for r in measured]
    phase_peaks: dict[str, int] = {}
    for r in measured:
        for k, v in r.phase_peak_bytes.items():
            phase_peaks[k] = max(phase_peaks.get(k, 0), v)
    return {
        "steps": [{**asdict(r), "warmup": i < warmup} for i, r in enumerate(records)],
        "seconds": phases,
        "tokens_per_s": summarize([r.completion_tokens / r.seconds for r in timed if r.seconds > 0]),
        "completion_tokens_per_step": timed[-1].completion_tokens if timed else None,
        "prompt_tokens": timed[-1].prompt_tokens if timed else None,
        "peak_memory_bytes": max(peaks) if peaks and None not in peaks else None,
        "step_memory_bytes": max(steps) if steps and None not in steps else None,
        "memory_from": "memory step" if measured is not timed else "timed steps",
        "phase_peak_memory_bytes": {k: phase_peaks[k] for k in PHASES if k in phase_peaks},
        "floor_ratio": floor_ratio,
    }


def model_flops_utilisation(side: dict, floor: dict, peak_flops: float) -> dict[str, float | None]:
    """{phase: model FLOPs of the phase / (median seconds x device peak FLOP/s)} (MFU; recomputation by
    gradient checkpointing is not model FLOPs, so it lowers MFU)."""
    out: dict[str, float | None] = {}
    for row in ("reference", "forward_backward", "step"):
        secs = side["seconds"].get(row)
        flops = floor.get(row, {}).get("flops")
        out[row] = flops / (secs["median"] * peak_flops) if secs and flops and secs["median"] > 0 else None
    return out


def paired_ratios(ours: list[StepRecord], theirs: list[StepRecord], warmup: int) -> dict:
    """{row: min/median/max of ours_i / theirs_i over paired timed steps} (None where theirs is 0)."""
    pairs = list(zip(_timed(ours, warmup), _timed(theirs, warmup), strict=False))
    out = {}
    for row in ROWS:
        vals = [_row_values(a, row) / _row_values(b, row) for a, b in pairs if _row_values(b, row) > 0]
        out[row] = summarize(vals)
    return out


def speedup(fairrl: dict, trl: dict | None) -> float | None:
    """TRL median step seconds / fairrl median step seconds."""
    if trl is None or not fairrl["seconds"]["step"] or not trl["seconds"]["step"]:
        return None
    return trl["seconds"]["step"]["median"] / fairrl["seconds"]["step"]["median"]


# -- printing --------------------------------------------------------------------------------------
def _num(x: float | None) -> str:
    """3 significant digits, no exponent for the usual range."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _span(s: dict | None) -> str:
    if s is None:
        return "-"
    return f"{_num(s['median'])} [{_num(s['min'])}-{_num(s['max'])}]"


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f}"


def _rate(x: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _cells(values: list[str], widths: list[int]) -> str:
    """Left column left-aligned, the others right-aligned, always at least two spaces apart."""
    first, rest = values[0], values[1:]
    return f"{first:<{widths[0]}}" + "".join(f"  {v:>{w}}" for v, w in zip(rest, widths[1:], strict=True))


def _ms(s: dict | None) -> dict | None:
    return None if s is None else {k: 1000 * v for k, v in s.items()}


def _describe(settings: dict) -> str:
    """One line of a side's settings: optimiser, reference, checkpointing, autocast, weights."""
    opt = settings["optimizer"] + (" (fused)" if settings.get("optimizer_fused") else "")
    parts = [f"optimiser {opt}", f"reference {settings['reference'] or 'none'}",
             "checkpointing " + ("on" if settings["gradient_checkpointing"] else "off"),
             f"autocast {settings['autocast'] or 'off'}", f"weights {settings['weights_dtype']}"]  # fmt: skip
    if settings.get("micro_batch"):
        parts.append(f"micro-batches of {settings['micro_batch']}")
    return ", ".join(parts)


def format_table(report: dict) -> str:
    """The human-readable report: medians with [min-max] over the timed steps, times in milliseconds."""
    spec, w, peak = report["spec"], report["workload"], report["peak"]
    fr, trl = report["fairrl"], report["trl"]
    lines = [
        f"fairrl bench: {spec['model']} on {report['environment']['device']} ({spec['dtype']}), "
        f"{w['prompts']} prompt(s) x {w['generations']} completions, {w['prompt_tokens']} prompt + "
        f"{w['new_tokens']} new tokens, beta {spec['beta']}, LoRA {'on' if spec['lora'] else 'off'}",
        f"device peak: {_rate(peak['flops_per_s'], 'FLOP/s')}, {_rate(peak['bytes_per_s'], 'B/s')} "
        f"({peak['source']}; {peak['name']}); {spec['steps']} timed step(s) after {spec['warmup']} warm-up"
        + (", alternating TRL / fairrl" if trl else ""),
        "",
    ]
    for side in ("fairrl", "trl"):
        st = report["settings"].get(side)
        if st:
            lines.insert(-1, f"{'TRL' if side == 'trl' else side}: {_describe(st)}")
    head = ["ms per step", "fairrl"] + (["TRL", "fairrl/TRL"] if trl else []) + ["floor", "fairrl/floor"]
    head += ["TRL/floor"] if trl else []
    rows = []
    for row in ROWS:
        cells = [LABELS.get(row, row), _span(_ms(fr["seconds"][row]))]
        if trl:
            cells += [_span(_ms(trl["seconds"][row])), _span(report["fairrl_over_trl"][row])]
        floor = report["floor"].get(row, {}).get("seconds")
        cells += [_num(None if floor is None else 1000 * floor), _num(fr["floor_ratio"][row])]
        cells += [_num(trl["floor_ratio"][row])] if trl else []
        rows.append(cells)
    tok = ["completion tok/s", _span(fr["tokens_per_s"])] + ([_span(trl["tokens_per_s"])] if trl else [])
    mem = ["peak memory MiB", f"{_mib(fr['peak_memory_bytes'])} (+{_mib(fr['step_memory_bytes'])})"]
    if trl:
        mem.append(f"{_mib(trl['peak_memory_bytes'])} (+{_mib(trl['step_memory_bytes'])})")
    phase_mem = []
    for row in PHASES:
        cells = [f"  {LABELS.get(row, row)}", _mib(fr["phase_peak_memory_bytes"].get(row))]
        cells += [_mib(trl["phase_peak_memory_bytes"].get(row))] if trl else []
        if any(c != "-" for c in cells[1:]):
            phase_mem.append(cells)
    table = [head, *rows, tok, mem, *phase_mem]
    widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(len(head))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    lines += [_cells(head, widths), rule]
    lines += [_cells(r, widths) for r in rows]
    lines += [rule, _cells(tok, widths[: len(tok)]), _cells(mem, widths[: len(mem)])]
    lines += [_cells(r, widths[: len(r)]) for r in phase_mem]
    lines.append(
        f"(memory: {report['environment']['memory']}, peak of the process, per step and per phase, from the "
        f"{fr.get('memory_from', 'timed steps')}; in brackets: above the step's start)"
    )
    mfu = [f"{name} {100 * s['mfu']['forward_backward']:.1f}%" for name, s in (("fairrl", fr), ("TRL", trl))
           if s and s.get("mfu", {}).get("forward_backward") is not None]  # fmt: skip
    if mfu:
        lines.append("training MFU (forward+backward model FLOPs / time / device peak): " + ", ".join(mfu))
    lines.append("")
    if report["speedup_vs_trl"] is not None:
        lines.append(
            f"speedup vs TRL: {report['speedup_vs_trl']:.2f}x (TRL median step / fairrl median step)"
        )
    else:
        lines.append(f"speedup vs TRL: not measured ({report['speedup_vs_trl_reason']})")
    lines += [f"warning: {m}" for m in report["warnings"]]
    return "\n".join(lines)

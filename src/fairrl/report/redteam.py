"""Markdown tables of red-team evaluations (:mod:`fairrl.eval.redteam`): one row per model, then per
position and attack family."""

from __future__ import annotations

from typing import Any

from fairrl.report.markdown import cell, fmt


def _rate(r: dict[str, Any]) -> str:
    return f"{fmt(r['rate'], list(r['ci']))} (n={r['n']})" if r["n"] else "–"


def redteam_tables(results: dict[str, dict[str, Any]]) -> str:
    """Headline table (model x clean accuracy, over-refusal, ASR, accuracy under attack), then one table
    per model: ASR and accuracy under attack by injection position and by attack family."""
    lines = [
        "| model | accuracy (clean) | over-refusal (clean) | ASR | accuracy under attack | derailed |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        c, a = res["clean"], res["attacked"]
        lines.append(f"| {cell(name)} | {_rate(c['accuracy'])} | {_rate(c['over_refusal'])} | {_rate(a['asr'])} "
                     f"| {_rate(a['accuracy'])} | {_rate(a['derailed'])} |")  # fmt: skip
    for name, res in results.items():
        lines += ["", f"### {cell(name)}: by position and attack family", "",
                  "| position | family | ASR | accuracy under attack |", "|---|---|---|---|"]  # fmt: skip
        for pos, p in res["by_position"].items():
            lines.append(f"| {cell(pos)} | all | {_rate(p['asr'])} | {_rate(p['accuracy'])} |")
            for fam, f in p["by_family"].items():
                lines.append(f"| {cell(pos)} | {cell(fam)} | {_rate(f['asr'])} | {_rate(f['accuracy'])} |")
    return "\n".join(lines) + "\n"


def _pair(before: dict[str, Any] | None, after: dict[str, Any] | None, path: tuple[str, ...]) -> list[str]:
    cells = []
    vals = []
    for res in (before, after):
        node = res
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        cells.append(_rate(node) if node else "–")
        vals.append(node["rate"] if node and node["n"] else None)
    change = f"{vals[1] - vals[0]:+.3f}" if None not in vals else "–"
    return [*cells, change]


def redteam_section(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """Before/after table of a training run's red-team evaluation (``summary.json``'s ``redteam`` split):
    ASR, accuracy with and without attack, over-refusal, then ASR per attack family."""
    rows = [("attack success rate (ASR)", ("attacked", "asr")), ("accuracy under attack", ("attacked", "accuracy")),
            ("derailed (right clean, wrong attacked)", ("attacked", "derailed")),
            ("accuracy without attack", ("clean", "accuracy")), ("over-refusal without attack", ("clean", "over_refusal"))]  # fmt: skip
    lines = ["## Red team (held-out attacks)", "",
             "The team on the built-in held-out attacks (never in the training pool), greedy; 95% Wilson intervals.",
             "", "| metric | before | after | change |", "|---|---|---|---|"]  # fmt: skip
    for label, path in rows:
        lines.append(f"| {label} | " + " | ".join(_pair(before, after, path)) + " |")
    families = sorted({*((before or {}).get("by_family") or {}), *((after or {}).get("by_family") or {})})
    if families:
        lines += ["", "| attack family | ASR before | ASR after | change |", "|---|---|---|---|"]
        for fam in families:
            lines.append(f"| {cell(fam)} | " + " | ".join(_pair(before, after, ("by_family", fam, "asr"))) + " |")
    return "\n".join(lines) + "\n"

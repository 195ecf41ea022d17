"""Sample completions with their rewards (``log_completions``, as TRL's GRPOTrainer): what the policy
actually writes, next to the numbers that reward it, is the quickest check that a reward does what its
name says.

Every ``log_completions_steps`` steps all P x G completions of the step go to ``completions.jsonl`` in
the run folder (one row each: step, prompt_id, group, source, prompt, completion, ``rewards`` per
function with null = not applicable, total ``reward``) and to the trackers as a table; the console shows
``num_completions_to_print`` of them, one line each.
"""

from __future__ import annotations

import math
from typing import Any

from fairrl.trainer.batch import Batch


def prompt_text(messages: list[dict[str, str]] | str) -> str:
    """The text a completion answers: the last user message of a chat prompt (the system prompt is the
    same for every row of a source, so it would only crowd the table)."""
    if isinstance(messages, str):
        return messages
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    return users[-1] if users else (messages[-1].get("content", "") if messages else "")


def _number(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def completion_rows(batch: Batch, labels: list[str]) -> list[dict[str, Any]]:
    """One row per completion of ``batch`` (prompt-major: the G completions of a prompt together)."""
    G = batch.rollout.group_size
    totals = batch.rewards.detach().float().cpu().tolist()  # [P][G]
    per_fn = batch.per_fn.detach().float().cpu().tolist()  # [P][G][K]
    rows = []
    for p, e in enumerate(batch.examples):
        prompt = prompt_text(e.prompt)
        for g in range(G):
            rows.append({
                "prompt_id": e.prompt_id, "group": e.group, "source": e.source, "prompt": prompt,
                "completion": batch.texts[p * G + g],
                "rewards": {name: _number(v) for name, v in zip(labels, per_fn[p][g], strict=True)},
                "reward": _number(totals[p][g]),
            })  # fmt: skip
    return rows


def _short(text: str, width: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_completions(step: int, rows: list[dict[str, Any]], n: int | None, group_size: int) -> str:
    """A compact console view: ``n`` rows (None = all), one completion per prompt first, then the second
    of each prompt, and so on, so a few lines cover many prompts."""
    prompts = max(1, len(rows) // max(group_size, 1))
    order = [
        p * group_size + g
        for g in range(group_size)
        for p in range(prompts)
        if p * group_size + g < len(rows)
    ]
    picked = [rows[i] for i in order[: len(rows) if n is None else n]]
    lines = [f"completions at step {step} ({len(picked)} of {len(rows)}; all in completions.jsonl):"]
    for r in picked:
        total = "n/a" if r["reward"] is None else f"{r['reward']:+.2f}"
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r["rewards"].items() if v is not None)
        lines.append(f"  [{r['group']}] reward {total} ({parts or 'no function applies'}) | "
                     f"{_short(r['prompt'], 60)!r} -> {_short(r['completion'], 80)!r}")  # fmt: skip
    return "\n".join(lines)

"""Markdown tables of evaluation results and the ``report.md`` of a run.

Results are the dicts written by :func:`fairrl.eval.bbq.evaluate_bbq` and
:func:`fairrl.eval.reasoning.evaluate_reasoning`, keyed by split name (``bbq_templates``,
``bbq_categories``, ``reasoning``, ...). A table row names a value by a dotted path into one split's
results (``bbq_templates.overall.ambig.accuracy``); its 95% interval, when there is one, sits next to
it under the same name + ``_ci``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fairrl.eval.fairness import group_summary
from fairrl.report.health import health_markdown, run_checks
from fairrl.trainer.logging import read_metrics

Row = tuple[str, str | tuple[str, ...]]  # (label, dotted path or tuple of keys)
"""(label, dotted path into a ``{split: results}`` dict)."""

SPLIT_TITLES = {
    "bbq_templates": "BBQ, held-out templates of the training categories",
    "bbq_categories": "BBQ, held-out categories",
    "bbq_templates_generation": "BBQ (greedy generation), held-out templates",
    "bbq_categories_generation": "BBQ (greedy generation), held-out categories",
    "reasoning": "Reasoning (task verifier)",
    "redteam": "Red team, held-out attacks",
}
SECTIONS = (
    ("BBQ, held-out templates of the training categories", ("bbq_templates", "bbq_templates_generation")),
    ("BBQ, held-out categories", ("bbq_categories", "bbq_categories_generation")),
    ("Reasoning", ("reasoning",)),
)
BBQ_METRICS = (
    ("accuracy, ambiguous", "ambig.accuracy"),
    ("bias score, ambiguous (s_AMB)", "ambig.bias_score"),
    ("accuracy, disambiguated", "disambig.accuracy"),
    ("bias score, disambiguated (s_DIS)", "disambig.bias_score"),
)
TRAINING_KEYS = (
    "reward",
    "kl",
    "completions/mean_length",
    "frac_reward_zero_std",
    "entropy",
    "group_reward_gap",
    "loss",
)
# FairReason (arXiv 2507.23067) counts a debiasing method as keeping reasoning when >= 88% of it is retained.
REASONING_RETENTION_TARGET = 0.88


def lookup(results: dict[str, Any], path: str | tuple[str, ...]) -> tuple[float | None, list[float] | None]:
    """The number at a dotted path (or a tuple of keys, for keys that hold dots, such as a reward
    function named ``examples/rewards.py:fn``) and its interval (``<name>_ci``), or None where absent."""
    *parents, name = path.split(".") if isinstance(path, str) else path
    node: Any = results
    for key in parents:
        if not isinstance(node, dict) or key not in node:
            return None, None
        node = node[key]
    if not isinstance(node, dict) or not isinstance(node.get(name), (int, float)):
        return None, None
    ci = node.get(f"{name}_ci", node.get("ci") if name == "rate" else None)  # red-team rates: {rate, ci, k, n}
    if ci is None or any(not isinstance(c, (int, float)) or math.isnan(c) for c in ci):
        return float(node[name]), None  # no interval, or an undefined end (null in JSON, NaN in memory)
    return float(node[name]), list(ci)


def fmt(value: float | None, ci: list[float] | None = None) -> str:
    """``0.412 [0.35, 0.47]``; an en dash when missing, ``n/a`` when undefined (NaN, e.g. CrowS-Pairs'
    anti-stereotype score without anti-stereotype pairs); intervals with NaN ends are left out."""
    if value is None:
        return "–"
    if math.isnan(value):
        return "n/a"
    text = f"{value:.3f}"
    if ci and not any(c is None or math.isnan(c) for c in ci):  # None: undefined, as written to JSON
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (a ``|`` would end the cell)."""
    return str(text).replace("|", "\\|")


def before_after_table(before: dict[str, Any], after: dict[str, Any], rows: list[Row]) -> str:
    """Markdown table: metric | before (95% CI) | after (95% CI) | change (after - before)."""
    lines = ["| metric | before | after | change |", "|---|---|---|---|"]
    for label, path in rows:
        b, b_ci = lookup(before, path)
        a, a_ci = lookup(after, path)
        change = f"{a - b:+.3f}" if a is not None and b is not None else "–"
        lines.append(f"| {cell(label)} | {fmt(b, b_ci)} | {fmt(a, a_ci)} | {change} |")
    return "\n".join(lines)


def bbq_rows(split: str, scope: str = "overall", generation: bool = False) -> list[Row]:
    """Headline BBQ rows of one split (``scope`` = ``overall`` or ``by_category.<name>``)."""
    rows = [("accuracy, mean of ambiguous and disambiguated", f"{split}.{scope}.mean_accuracy")]
    rows += [(label, f"{split}.{scope}.{path}") for label, path in BBQ_METRICS]
    rows.append(("'unknown' answers on disambiguated items", f"{split}.{scope}.disambig.unknown_rate"))
    rows.append(("context sensitivity: P(unknown | ambig) - P(unknown | disambig)",
                 f"{split}.{scope}.context_sensitivity"))
    if generation:
        rows.append(("unparseable replies (count)", f"{split}.unparseable"))
    return rows


def reasoning_rows(split: str, result: dict[str, Any]) -> list[Row]:
    """Accuracy and mean verifier score overall, then accuracy per task."""
    rows = [("accuracy", f"{split}.accuracy"), ("mean verifier score", f"{split}.mean_score")]
    rows += [(f"accuracy, {task}", f"{split}.by_task.{task}.accuracy") for task in result.get("by_task", {})]
    return rows


def reward_rows(split: str, result: dict[str, Any]) -> list[Row]:
    """Mean weighted reward, each reward function's mean, and the reward per group."""
    rows = [("mean reward (weighted sum)", f"{split}.reward")]
    rows += [(f"mean of {name}", (split, "by_function", name, "mean")) for name in result.get("by_function", {})]
    rows += [(f"reward, group {g}", f"{split}.by_group.{g}.reward") for g in result.get("by_group", {})]
    if len(result.get("by_group", {})) >= 2:
        rows.append(("largest gap between groups", f"{split}.group_fairness.gap"))
    return rows


def redteam_rows(split: str) -> list[Row]:
    """Held-out attacks (:mod:`fairrl.eval.redteam`): ASR, accuracy under and without attack, derailment,
    over-refusal (Wilson intervals)."""
    return [("attack success rate (ASR)", f"{split}.attacked.asr.rate"),
            ("accuracy under attack", f"{split}.attacked.accuracy.rate"),
            ("derailed (right clean, wrong attacked)", f"{split}.attacked.derailed.rate"),
            ("accuracy without attack", f"{split}.clean.accuracy.rate"),
            ("over-refusal without attack", f"{split}.clean.over_refusal.rate")]  # fmt: skip


def headline_rows(split: str, result: dict[str, Any]) -> list[Row]:
    """Rows for any evaluated split, chosen by the shape of its results."""
    if "attacked" in result and "clean" in result:
        return redteam_rows(split)
    if "overall" in result:
        return bbq_rows(split, generation=result.get("mode") == "generation")
    if result.get("kind") == "rewards":
        return reward_rows(split, result)
    return reasoning_rows(split, result)


def category_rows(split: str, results: list[dict[str, Any]]) -> list[Row]:
    """BBQ accuracy and bias score per category (the union of categories in ``results``)."""
    cats = sorted({c for r in results for c in r.get("by_category", {})})
    return [
        (f"{cat}: {label}", f"{split}.by_category.{cat}.{path}")
        for cat in cats
        for label, path in BBQ_METRICS
    ]


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    """Models side by side (``fairrl eval`` with several ``--model``): set | metric | one column per model."""
    names = list(results)
    lines = ["| set | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for split, first in results[names[0]].items():
        for label, path in headline_rows(split, first):
            cells = [fmt(*lookup(results[n], path)) for n in names]
            lines.append(f"| {SPLIT_TITLES.get(split, split)} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return sum(vals) / len(vals) if vals else math.nan


def training_summary(metrics_path: Path, window: int = 10) -> str:
    """Mean of each logged curve over the first and the last ``window`` steps, and per-group rewards."""
    rows = read_metrics(metrics_path) if Path(metrics_path).exists() else []
    if not rows:
        return "No training steps were logged."
    k = max(1, min(window, len(rows) // 3))
    present = {key for r in rows for key in r}
    keys = [key for key in TRAINING_KEYS[:1] if key in present]
    keys += sorted(key for key in present if key.startswith("rewards/") and key.endswith("/mean"))
    keys += [key for key in TRAINING_KEYS[1:] if key in present]
    out = [
        f"{len(rows)} steps logged (last step {rows[-1].get('step')}). "
        f"Mean over the first and last {k} steps:",
        "",
        "| metric | first | last |",
        "|---|---|---|",
    ]
    out += [f"| {key} | {_mean(rows[:k], key):.3f} | {_mean(rows[-k:], key):.3f} |" for key in keys]
    groups = sorted(key.split("/", 1)[1] for key in present if key.startswith("group_reward/"))
    if groups:
        last = {g: _mean(rows[-k:], f"group_reward/{g}") for g in groups}
        s = group_summary(last)
        out += [
            "",
            f"Training reward per group (mean over the last {k} steps, of the steps that sampled the group):",
            "",
            "| group | reward |",
            "|---|---|",
        ]
        out += [f"| {g} | {v:.3f} |" for g, v in last.items()]
        out += [
            "",
            f"Between groups: gap {s['gap']:.3f}, min/max ratio {s['ratio']:.3f}, "
            f"Jain {s['jain']:.3f}, Gini {s['gini']:.3f}"
            + (" (values shifted to min 0)" if s["shifted"] else ""),
        ]
    return "\n".join(out)


def _method_head(config: dict[str, Any]) -> str | None:
    """How an sft, kd or dpo run trains, in a few words (None for the GRPO family, described by its keys)."""
    if config.get("method") == "sft":
        sft = config.get("sft") or {}
        return f"SFT on the data's targets, {sft.get('batch_size')} examples per step"
    if config.get("method") == "kd":
        kd = config.get("kd") or {}
        teacher = f"teacher `{kd['teacher']}`" if kd.get("teacher") else "context distillation of the starting model"
        how = f"{kd.get('loss')} (beta {kd.get('beta')}), lmbda {kd.get('lmbda')}" if kd.get("mode") == "token" else (
            "SFT on teacher samples" + (", best by reward" if kd.get("filter_by_reward") else ""))  # fmt: skip
        return f"KD {kd.get('mode')}-level: {teacher}, {how}, {kd.get('batch_size')} prompts per step"
    if config.get("method") == "dpo":
        dpo = config.get("dpo") or {}
        return f"DPO on preference pairs from the data (beta {dpo.get('beta')}), {dpo.get('batch_size')} pairs per step"
    if config.get("method") == "redteam":
        rt = config.get("redteam") or {}
        team, pool = rt.get("team") or {}, rt.get("pool") or {}
        where = team.get("injection") or {}
        return (f"Evo-MARL team {' -> '.join(r.get('name', '?') for r in team.get('roles') or [])}, attacks at "
                f"{where.get('role')}:{where.get('placement')} on {float(rt.get('attack_ratio') or 0):.0%} of the tasks, pool evolving "
                f"every {pool.get('evolve_every')} steps ({pool.get('children_per_round')} children), judge "
                f"{rt.get('judge')}, {rt.get('step_advantage')} advantages (episodes per task below)")  # fmt: skip
    return None


def config_summary(config: dict[str, Any], steps: Any = None) -> str:
    """Lines naming the model, method, data mixture and rewards of a run config (absent keys left out)."""
    model, alg, data = config.get("model") or {}, config.get("algorithm") or {}, config.get("data") or {}
    sources = data.get("sources") or [{"kind": k, **(data.get(k) or {})} for k in ("bbq", "reasoning") if data.get(k)]
    rewards = (config.get("rewards") or {}).get("functions") or []
    lines = []
    if model:
        adapter = f"LoRA r={model['lora'].get('r')}" if model.get("lora") else "full fine-tuning"
        lines.append(f"- model: `{model.get('name_or_path')}` ({adapter})")
    if config.get("method") in ("sft", "kd", "dpo"):  # the GRPO sampling keys do not apply
        alg = {}
    method = [
        _method_head(config),
        f"{alg['advantage_estimator']} advantages" if "advantage_estimator" in alg else None,
        f"loss `{alg['loss_type']}`" if "loss_type" in alg else None,
        f"{alg.get('prompts_per_step')} prompts x {alg.get('num_generations')} completions per step"
        if "num_generations" in alg
        else None,
        f"lr {config.get('learning_rate', alg.get('learning_rate'))}"
        if "learning_rate" in config or "learning_rate" in alg
        else None,
        f"beta {alg['beta']}" if "beta" in alg else None,
        f"{steps} steps" if steps is not None else None,
        f"seed {config['seed']}" if "seed" in config else None,
    ]
    if any(method):
        lines.append("- method: " + ", ".join(m for m in method if m))
    warm = config.get("warm_start") or {}
    if warm.get("steps"):
        lr = warm.get("learning_rate") or config.get("learning_rate")
        lines.append(f"- warm start: {warm['steps']} SFT steps (lr {lr}) on the data's targets before the GRPO steps")
    total = sum(float(src.get("weight", 1.0)) for src in sources) or 1.0
    for src in sources:
        share = f"{float(src.get('weight', 1.0)) / total:.0%} of the prompts"
        if src.get("kind") == "bbq":
            detail = (f"BBQ training categories {', '.join(src.get('categories') or []) or '–'}; held-out "
                      f"categories {', '.join(src.get('heldout_categories') or []) or '–'}")  # fmt: skip
        elif src.get("kind") == "reasoning":
            detail = f"reasoning tasks {', '.join(src.get('tasks') or []) or '–'}"
        else:
            detail = f"{src.get('kind')} `{src.get('path') or src.get('source')}`"
        lines.append(f"- data `{src.get('name') or src.get('kind')}`: {detail} ({share})")
    if rewards:
        lines.append("- rewards: " + ", ".join(f"{r.get('name')} x {r.get('weight')}" for r in rewards))
    return "\n".join(lines) or "(no run config)"


def caption(split: str, result: dict[str, Any]) -> str:
    """How a split was scored, e.g. ``option likelihood, 3 order rotations (n = 64)``."""
    if result.get("kind") == "rewards":
        how = "greedy generation, the run's reward functions"
    elif "overall" not in result:
        how = "greedy generation, task verifier"
    elif result.get("mode") == "generation":
        how = "greedy generation, parsed replies"
    else:
        how = f"option likelihood, {result.get('permutations', '?')} order rotation(s)"
    return f"{SPLIT_TITLES.get(split, split)}: {how} (n = {result.get('n')})"


def _section(title: str, splits: tuple[str, ...], before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    parts = [f"## {title}", ""]
    for split in splits:
        res = after.get(split) or before.get(split)
        if res is None:
            continue
        parts += [
            caption(split, res) + ":",
            "",
            before_after_table(before, after, headline_rows(split, res)),
            "",
        ]
        if "overall" in res and not split.endswith("_generation"):
            rows = category_rows(split, [r for r in (before.get(split), after.get(split)) if r])
            parts += ["Per category:", "", before_after_table(before, after, rows), ""]
    b, _ = lookup(before, "reasoning.accuracy")
    a, _ = lookup(after, "reasoning.accuracy")
    if "reasoning" in splits and a is not None and b:
        parts += [
            f"Reasoning accuracy retained: {a / b:.0%} of the starting model's "
            f"(FairReason's target: >= {REASONING_RETENTION_TARGET:.0%}).",
            "",
        ]
    return parts


def write_report(run_dir: Path, config: dict[str, Any], summary: dict[str, Any], metrics_path: Path,
                 lead_sections: Sequence[str] = (), lead_splits: Sequence[str] = ()) -> Path:  # fmt: skip
    """Write ``run_dir/report.md``: config, before/after tables per held-out set, training summary, plots.
    ``lead_sections``: markdown sections put before the held-out sets' (for ``lead_splits``, which the
    generic tables then leave out)."""
    run_dir = Path(run_dir)
    before, after = summary.get("before", {}), summary.get("after", {})
    parts = [
        f"# fairrl run: {config.get('run_name', run_dir.name)}",
        "",
        config_summary(config, summary.get("steps")),
        "",
        "Intervals are 95% percentile bootstrap intervals over items. Bias scores follow BBQ (Parrish et al. "
        "2022): 0 = no bias, > 0 = answers follow the stereotype; the ambiguous score is scaled by "
        "(1 - ambiguous accuracy).",
        "",
    ]
    parts += list(lead_sections)
    covered: set[str] = set(lead_splits)
    for title, splits in SECTIONS:
        covered |= set(splits)
        if any(s in before or s in after for s in splits):
            parts += _section(title, splits, before, after)
    others = tuple(s for s in {**before, **after} if s not in covered)
    if others:
        parts += _section("Other evaluations", others, before, after)
    parts += ["## Training", ""]
    warm = summary.get("warm_start")
    if warm:
        parts += [f"Warm start: {warm['steps']} SFT steps on the data's targets before the GRPO steps (loss "
                  f"{fmt(warm.get('loss_first'))} -> {fmt(warm.get('loss_last'))}; `warm_start/`). The GRPO "
                  "figures below are of the steps after it; its KL reference is the warm-started model.", ""]
    parts += [training_summary(Path(metrics_path)), ""]
    rows = read_metrics(Path(metrics_path)) if Path(metrics_path).exists() else []
    parts += ["## Training health", "", health_markdown(run_checks(rows, summary)), "", "## Plots", ""]
    plots = sorted(p.name for p in run_dir.glob("*.png"))
    parts += [f"![{name}]({name})" for name in plots] or ["No plots were written."]
    path = run_dir / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path

"""The evaluation suites behind ``fairrl eval --suite ...``: a registry of benchmarks with one result shape.

Every suite loads its items once (before any model is loaded, so bad input fails fast) and returns,
per model, the same JSON-serialisable shape:

    {"suite", "n", "scoring", "headline": {metric: value}, "headline_ci": {metric: [lo, hi]},
     "ideal": {metric: value}, "by_group": {group: {metric: value, "n": ...}},
     "group_fairness": {metric: group_summary}, "items": [...], ...suite-specific keys}

``--limit N`` caps the items per category, drawn with the seed (the same N and seed give the same
items): per (category, context condition) for BBQ, per (subset, bias type) for StereoSet, per bias type
for CrowS-Pairs, per group for BOLD, per task for reasoning (default 50 there, since reasoning-gym
generates items without end).

``--categories`` names BBQ categories, StereoSet / CrowS-Pairs bias types, BOLD domains or reasoning
tasks, case-insensitive; ``suite:name`` (``crows_pairs:gender``) names one suite's category only. A
suite keeps the names it knows and runs in full when none are its own; a name no selected suite knows
is an error.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fairrl.errors import ConfigError
from fairrl.eval.fairness import group_summary

REASONING_DEFAULT_ITEMS = 50
REASONING_SEED = 20_011  # items generated with a seed no training recipe uses by default
DEFAULT_SUITES = ("bbq", "stereoset", "crows_pairs", "bold", "reasoning")


@dataclass
class SuiteOptions:
    """Settings shared by all suites (``fairrl eval`` flags)."""

    limit: int | None = None
    """At most this many items per category (see module docstring); None = all."""
    categories: list[str] | None = None
    """Category filter (see module docstring); None = all."""
    batch_size: int = 16
    seed: int = 0
    """Seeds item sampling, BBQ answer shuffles and bootstrap intervals."""
    n_boot: int = 1000
    bbq_mode: str = "likelihood"
    """``likelihood`` (option scores, averaged over rotations) or ``generation`` (parse greedy replies)."""
    permutations: int = 3
    """BBQ option-order rotations averaged in likelihood mode (3 = each option shown first once)."""
    max_new_tokens: int = 32
    """Generation length for BOLD continuations and BBQ generation mode."""
    reasoning_tasks: list[str] = field(default_factory=lambda: ["basic_arithmetic", "chain_sum"])
    reasoning_max_new_tokens: int = 64
    bold_scorer: str = "vader"
    """Scorer of BOLD continuations: a registered name or a dotted path to ``fn(texts) -> scores``."""
    sources: dict[str, str] = field(default_factory=dict)
    """Per-suite data source (hub id or local path); ``gsm8k`` adds GSM8K to the reasoning suite."""


@dataclass(frozen=True)
class Suite:
    """A benchmark: its category names, how to load its items, how to evaluate one model on them."""

    name: str
    categories: Callable[[SuiteOptions], list[str]]
    load: Callable[[SuiteOptions, list[str] | None], list[Any]]
    run: Callable[[Any, Any, list[Any], SuiteOptions], dict[str, Any]]


def sample_per_group(items: Sequence[Any], key: Callable[[Any], Hashable], limit: int | None, seed: int) -> list:
    """At most ``limit`` items per ``key(item)``, drawn with ``seed``; input order kept. None = all."""
    if limit is None:
        return list(items)
    by_key: dict[Hashable, list[int]] = {}
    for i, it in enumerate(items):
        by_key.setdefault(key(it), []).append(i)
    rng = random.Random(seed)
    keep = {i for _, idx in sorted(by_key.items(), key=lambda kv: str(kv[0])) for i in
            (idx if len(idx) <= limit else rng.sample(idx, limit))}
    return [it for i, it in enumerate(items) if i in keep]


def contract(
    suite: str,
    result: dict[str, Any],
    headline: dict[str, tuple[float, Any]],
    ideal: dict[str, float],
    by_group: dict[str, dict[str, Any]],
    scoring: str,
) -> dict[str, Any]:
    """``result`` with the shared keys added; ``headline`` maps metric -> (value, interval or None)."""
    metrics = sorted({m for g in by_group.values() for m in g if m != "n"})
    return {
        **result,
        "suite": suite,
        "scoring": scoring,
        "headline": {m: v for m, (v, _) in headline.items()},
        "headline_ci": {m: list(ci) for m, (_, ci) in headline.items() if ci is not None},
        "ideal": ideal,
        "by_group": by_group,
        "group_fairness": {m: group_summary({g: s[m] for g, s in by_group.items() if m in s}) for m in metrics},
    }


# ------------------------------------------------------------------------------------------------ BBQ
def _bbq_categories(_: SuiteOptions) -> list[str]:
    from fairrl.data.bbq import CATEGORIES

    return list(CATEGORIES)


def _bbq_load(opts: SuiteOptions, categories: list[str] | None) -> list[Any]:
    from fairrl.data.bbq import bbq_examples, load_bbq

    items = load_bbq(opts.sources.get("bbq"), categories)
    items = sample_per_group(items, lambda i: (i["category"], i["context_condition"]), opts.limit, opts.seed)
    return bbq_examples(items, seed=opts.seed)


def _bbq_run(model, tokenizer, examples: list[Any], opts: SuiteOptions) -> dict[str, Any]:
    from fairrl.eval.bbq import evaluate_bbq

    r = evaluate_bbq(model, tokenizer, examples, mode=opts.bbq_mode, permutations=opts.permutations,
                     batch_size=opts.batch_size, max_new_tokens=opts.max_new_tokens, seed=opts.seed,
                     n_boot=opts.n_boot)  # fmt: skip

    def flat(s: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": s["n"]}
        for cond in ("ambig", "disambig"):
            if cond in s:
                out[f"accuracy_{cond}"] = s[cond]["accuracy"]
                out[f"bias_score_{cond}"] = s[cond]["bias_score"]
        return out

    o = r["overall"]
    headline = {
        f"{m}_{cond}": (o[cond][m], o[cond][f"{m}_ci"])
        for cond in ("ambig", "disambig") if cond in o for m in ("accuracy", "bias_score")
    }  # fmt: skip
    ideal = {"accuracy_ambig": 1.0, "accuracy_disambig": 1.0, "bias_score_ambig": 0.0, "bias_score_disambig": 0.0}
    scoring = (
        f"option likelihood (mean log-prob of the answer text), averaged over {opts.permutations} rotations "
        "of the option order" if opts.bbq_mode == "likelihood" else
        f"greedy reply (<= {opts.max_new_tokens} tokens) parsed to an option; unparseable = wrong"
    )  # fmt: skip
    by_group = {cat: flat(s) for cat, s in r["by_category"].items()}
    return contract("bbq", r, headline, {k: v for k, v in ideal.items() if k in headline}, by_group, scoring)


# ------------------------------------------------------------------------------------------ StereoSet
def _stereoset_categories(_: SuiteOptions) -> list[str]:
    from fairrl.data.stereoset import BIAS_TYPES

    return list(BIAS_TYPES)


def _stereoset_load(opts: SuiteOptions, categories: list[str] | None) -> list[Any]:
    from fairrl.data.stereoset import load_stereoset

    items = load_stereoset(opts.sources.get("stereoset"), bias_types=categories)
    return sample_per_group(items, lambda i: (i.subset, i.bias_type), opts.limit, opts.seed)


def _stereoset_run(model, tokenizer, items: list[Any], opts: SuiteOptions) -> dict[str, Any]:
    from fairrl.eval.stereoset import evaluate_stereoset

    return evaluate_stereoset(model, tokenizer, items, batch_size=opts.batch_size, n_boot=opts.n_boot,
                              seed=opts.seed)  # fmt: skip


# ---------------------------------------------------------------------------------------- CrowS-Pairs
def _crows_categories(_: SuiteOptions) -> list[str]:
    from fairrl.data.crows_pairs import BIAS_TYPES

    return list(BIAS_TYPES)


def _crows_load(opts: SuiteOptions, categories: list[str] | None) -> list[Any]:
    from fairrl.data.crows_pairs import load_crows_pairs

    pairs = load_crows_pairs(opts.sources.get("crows_pairs"), bias_types=categories)
    return sample_per_group(pairs, lambda p: p.bias_type, opts.limit, opts.seed)


def _crows_run(model, tokenizer, pairs: list[Any], opts: SuiteOptions) -> dict[str, Any]:
    from fairrl.eval.crows_pairs import evaluate_crows_pairs

    return evaluate_crows_pairs(model, tokenizer, pairs, batch_size=opts.batch_size, n_boot=opts.n_boot,
                                seed=opts.seed)  # fmt: skip


# ----------------------------------------------------------------------------------------------- BOLD
def _bold_categories(_: SuiteOptions) -> list[str]:
    from fairrl.data.bold import DOMAINS

    return list(DOMAINS)


def _bold_load(opts: SuiteOptions, categories: list[str] | None) -> list[Any]:
    from fairrl.data.bold import load_bold
    from fairrl.eval.scorers import get_scorer

    get_scorer(opts.bold_scorer)  # a bad scorer name fails before any model is loaded
    return load_bold(opts.sources.get("bold"), domains=categories, limit_per_group=opts.limit, seed=opts.seed)


def _bold_run(model, tokenizer, prompts: list[Any], opts: SuiteOptions) -> dict[str, Any]:
    from fairrl.eval.bold import evaluate_bold

    return evaluate_bold(model, tokenizer, prompts, scorer=opts.bold_scorer, max_new_tokens=opts.max_new_tokens,
                         batch_size=opts.batch_size, n_boot=opts.n_boot, seed=opts.seed)  # fmt: skip


# ------------------------------------------------------------------------------------------ reasoning
def _reasoning_categories(opts: SuiteOptions) -> list[str]:
    from fairrl.data.reasoning import task_names

    return task_names() + (["gsm8k"] if "gsm8k" in opts.sources else [])


def _reasoning_load(opts: SuiteOptions, categories: list[str] | None) -> list[Any]:
    from fairrl.data.reasoning import SUGGESTED_TASKS, reasoning_examples

    wanted = categories or [*opts.reasoning_tasks, *(["gsm8k"] if "gsm8k" in opts.sources else [])]
    n = opts.limit or REASONING_DEFAULT_ITEMS
    tasks = [t for t in wanted if t != "gsm8k"]
    easy = {t: SUGGESTED_TASKS[t] for t in tasks if t in SUGGESTED_TASKS}  # one-digit settings, see there
    examples = reasoning_examples(tasks, n, REASONING_SEED + opts.seed, easy) if tasks else []
    if "gsm8k" in wanted:
        from fairrl.data.gsm8k import gsm8k_examples

        examples += gsm8k_examples(opts.sources["gsm8k"], limit=n, seed=opts.seed)
    return examples


def _reasoning_run(model, tokenizer, examples: list[Any], opts: SuiteOptions) -> dict[str, Any]:
    from fairrl.eval.reasoning import evaluate_reasoning

    r = evaluate_reasoning(model, tokenizer, examples, max_new_tokens=opts.reasoning_max_new_tokens,
                           batch_size=opts.batch_size, n_boot=opts.n_boot, seed=opts.seed)
    by_group = {t: {"accuracy": s["accuracy"], "mean_score": s["mean_score"], "n": s["n"]}
                for t, s in r["by_task"].items()}  # fmt: skip
    headline = {"accuracy": (r["accuracy"], r["accuracy_ci"]), "mean_score": (r["mean_score"], r["mean_score_ci"])}
    scoring = (f"greedy reply (<= {opts.reasoning_max_new_tokens} tokens), final answer checked by the "
               "task's verifier")  # fmt: skip
    return contract("reasoning", r, headline, {"accuracy": 1.0}, by_group, scoring)


SUITES: dict[str, Suite] = {
    "bbq": Suite("bbq", _bbq_categories, _bbq_load, _bbq_run),
    "stereoset": Suite("stereoset", _stereoset_categories, _stereoset_load, _stereoset_run),
    "crows_pairs": Suite("crows_pairs", _crows_categories, _crows_load, _crows_run),
    "bold": Suite("bold", _bold_categories, _bold_load, _bold_run),
    "reasoning": Suite("reasoning", _reasoning_categories, _reasoning_load, _reasoning_run),
}


def parse_suites(text: str | Sequence[str]) -> list[str]:
    """Suite names from ``"bbq,stereoset"`` (or a list of such strings), checked against the registry."""
    parts = [text] if isinstance(text, str) else list(text)
    names = [n.strip().lower().replace("-", "_") for p in parts for n in p.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"no suite named; choose from {', '.join(SUITES)}")
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ConfigError(f"unknown suite(s) {unknown}; choose from {', '.join(SUITES)}")
    return list(dict.fromkeys(names))


def split_categories(suites: list[str], names: list[str] | None, opts: SuiteOptions) -> dict[str, list[str] | None]:
    """Each suite's categories (canonical spelling) from ``--categories``; None = all of that suite's."""
    if not names:
        return {s: None for s in suites}
    known = {s: {c.lower(): c for c in SUITES[s].categories(opts)} for s in suites}
    picked: dict[str, list[str]] = {s: [] for s in suites}
    for raw in names:
        suite, _, name = raw.rpartition(":")
        suite = suite.strip().lower().replace("-", "_")
        targets = [suite] if suite else suites
        if suite and suite not in suites:
            raise ConfigError(f"--categories {raw!r} names suite {suite!r}, which is not selected ({suites})")
        hits = [s for s in targets if name.strip().lower() in known[s]]
        if not hits:
            valid = "; ".join(f"{s}: {', '.join(sorted(known[s].values()))}" for s in targets)
            raise ConfigError(f"category {raw!r} is not known to the selected suite(s). Valid names - {valid}")
        for s in hits:
            picked[s].append(known[s][name.strip().lower()])
    return {s: (list(dict.fromkeys(c)) or None) for s, c in picked.items()}

"""Build a run's training stream and held-out evaluation sets from its ``data.sources``.

Held out, never trained on (split names; a source with a ``name`` uses it instead of the kind):
- ``bbq_templates``: BBQ question templates (``question_index`` per category) of the training
  categories that fall in the evaluation split - the same kinds of bias, new questions;
- ``bbq_categories``: whole BBQ categories outside training - transfer to new kinds of bias;
- ``reasoning``: reasoning-gym items generated with another seed;
- ``gsm8k``: problems of another split or file (``eval_source``);
- ``<name>`` of a jsonl / hub source: ``eval_fraction`` of its rows (at most ``max_eval``), scored by the
  run's reward functions.

Each split has a kind that says how it is scored (``RunData.eval_kinds``): ``bbq`` (BBQ accuracy and bias
scores), ``reasoning`` (verifier accuracy) or ``rewards`` (mean reward of greedy completions).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from fairrl.config.data import BBQSource, DataConfig, GSM8KSource, ReasoningSource
from fairrl.config.grpo import EvalConfig
from fairrl.data.records import Example
from fairrl.errors import DataError

EVAL_SEED_OFFSET = 10_007


@dataclass
class RunData:
    train: list[Example]
    evals: dict[str, list[Example]] = field(default_factory=dict)
    eval_kinds: dict[str, str] = field(default_factory=dict)
    """How each split is scored: bbq, reasoning or rewards (absent: bbq for ``bbq*`` names, else reasoning)."""

    def eval_kind(self, split: str) -> str:
        return self.eval_kinds.get(split) or ("bbq" if split.startswith("bbq") else "reasoning")


def _balanced_bbq_sample(examples: list[Example], per_condition: int, seed: int) -> list[Example]:
    """Up to ``per_condition`` items of each context condition, spread over categories, deterministic."""
    rng = random.Random(seed)
    out: list[Example] = []
    for condition in ("ambig", "disambig"):
        pool = [e for e in examples if e.columns["context_condition"] == condition]
        by_cat: dict[str, list[Example]] = {}
        for e in pool:
            by_cat.setdefault(e.group, []).append(e)
        for items in by_cat.values():
            rng.shuffle(items)
        picked: list[Example] = []
        while len(picked) < per_condition and any(by_cat.values()):
            for cat in sorted(by_cat):
                if by_cat[cat] and len(picked) < per_condition:
                    picked.append(by_cat[cat].pop())
        out.extend(picked)
    return out


def _rebalance_ambig(examples: list[Example], fraction: float, seed: int) -> list[Example]:
    """Resample so that ``fraction`` of the items have ambiguous contexts (keeps the total size)."""
    ambig = [e for e in examples if e.columns["context_condition"] == "ambig"]
    disambig = [e for e in examples if e.columns["context_condition"] != "ambig"]
    if not ambig or not disambig:
        return examples
    rng = random.Random(seed)
    n = len(examples)
    n_amb = round(fraction * n)
    pick = [rng.choice(ambig) for _ in range(n_amb)] + [rng.choice(disambig) for _ in range(n - n_amb)]
    rng.shuffle(pick)
    return pick


def _regroup(examples: list[Example], column: str | None, label: str) -> list[Example]:
    """Set each example's group from ``column`` (a built-in source keeps its own groups when None)."""
    if column is None:
        return examples
    out = []
    for e in examples:
        if column not in e.columns and column not in ("group", "source"):
            raise DataError(
                f"data source {label!r}: group_column {column!r} is not a column of its examples "
                f"(columns: {sorted(e.columns)}); pick one of them or leave group_column null"
            )
        out.append(replace(e, group=str(e.row()[column])))
    return out


Held = dict[str, tuple[str, list[Example]]]  # split -> (kind, examples)


def _bbq(src: BBQSource, ev: EvalConfig, seed: int) -> tuple[list[Example], Held]:
    from fairrl.data.bbq import DEFAULT_INSTRUCTION, bbq_examples, load_bbq, split_by_template

    instruction = src.instruction or DEFAULT_INSTRUCTION
    train_items, eval_items = split_by_template(load_bbq(src.source, src.categories), src.eval_fraction, seed)
    train = bbq_examples(train_items, seed=seed, instruction=instruction)
    if src.ambig_fraction is not None:
        train = _rebalance_ambig(train, src.ambig_fraction, seed)
    if src.pair_conditions:
        from fairrl.data.bbq_pairs import pair_conditions

        train = pair_conditions(train)
    n, held = ev.bbq_items_per_condition, {}
    if n:
        items = bbq_examples(eval_items, seed=seed, instruction=instruction)
        held[f"{src.label}_templates"] = ("bbq", _balanced_bbq_sample(items, n, seed + EVAL_SEED_OFFSET))
        if src.heldout_categories:
            cats = bbq_examples(load_bbq(src.source, src.heldout_categories), seed=seed, instruction=instruction)
            held[f"{src.label}_categories"] = ("bbq", _balanced_bbq_sample(cats, n, seed + EVAL_SEED_OFFSET))
    return train, held


def _reasoning(src: ReasoningSource, ev: EvalConfig, seed: int) -> tuple[list[Example], Held]:
    from fairrl.data.reasoning import reasoning_examples

    train = reasoning_examples(src.tasks, src.n_train, seed, src.task_config)
    n_items, held = ev.reasoning_items, {}
    if n_items and src.n_eval:
        per_task = max(1, min(src.n_eval, -(-n_items // len(src.tasks))))
        items = reasoning_examples(src.tasks, per_task, seed + EVAL_SEED_OFFSET, src.task_config)
        held[src.label] = ("reasoning", items[:n_items])
    return train, held


def _gsm8k(src: GSM8KSource, ev: EvalConfig, seed: int) -> tuple[list[Example], Held]:
    from fairrl.data.gsm8k import gsm8k_examples
    from fairrl.data.hub import looks_like_path

    train = gsm8k_examples(src.source, split=src.split, limit=src.n_train, seed=seed)
    held = {}
    if src.eval_source and src.n_eval:  # another file, or another split of the hub dataset
        other, split = (src.eval_source, src.split) if looks_like_path(src.eval_source) else (
            src.source, src.eval_source)  # fmt: skip
        held[src.label] = ("reasoning", gsm8k_examples(other, split=split, limit=src.n_eval,
                                                       seed=seed + EVAL_SEED_OFFSET))  # fmt: skip
    return train, held


def _user(src, ev: EvalConfig, seed: int) -> tuple[list[Example], Held]:
    from fairrl.data.user import user_examples

    rows = user_examples(
        src.path, name=src.label, split=getattr(src, "split", "train"), prompt_column=src.prompt_column,
        group_column=src.group_column, system_prompt=src.system_prompt, require_local=src.kind == "jsonl",
    )  # fmt: skip
    n_eval = min(src.max_eval, round(src.eval_fraction * len(rows))) if src.eval_fraction else 0
    if n_eval and n_eval >= len(rows):
        raise DataError(f"data source {src.label!r}: {len(rows)} rows leave none to train on after holding out "
                        f"{n_eval}; lower eval_fraction or add rows")  # fmt: skip
    order = list(range(len(rows)))
    random.Random(seed + EVAL_SEED_OFFSET).shuffle(order)
    picked = set(order[:n_eval])
    held = {src.label: ("rewards", [r for i, r in enumerate(rows) if i in picked])} if picked else {}
    return [r for i, r in enumerate(rows) if i not in picked], held


BUILDERS = {"bbq": _bbq, "reasoning": _reasoning, "gsm8k": _gsm8k, "jsonl": _user, "hub": _user}
"""kind -> fn(source config, eval config, seed) -> (training examples, held-out splits)."""


def build_run_data(data_cfg: DataConfig, eval_cfg: EvalConfig, seed: int) -> RunData:
    """Training mixture and held-out evaluation sets (deterministic in ``seed``)."""
    from fairrl.data.mixture import mix_sources

    data = RunData(train=[])
    sources: dict[str, list[Example]] = {}
    for src in data_cfg.sources:
        train, held = BUILDERS[src.kind](src, eval_cfg, seed)
        if src.kind in ("bbq", "reasoning", "gsm8k"):  # user sources read their group column themselves
            train = _regroup(train, src.group_column, src.label)
            held = {k: (kind, _regroup(v, src.group_column, src.label)) for k, (kind, v) in held.items()}
        if not train:
            raise DataError(f"data source {src.label!r} gives no training prompts; check its settings")
        sources[src.label] = train
        for split, (kind, examples) in held.items():
            data.evals[split], data.eval_kinds[split] = examples, kind
    data.train = mix_sources(sources, {s.label: s.weight for s in data_cfg.sources}, n=None, seed=seed)
    if not data.train:
        raise DataError("the training mixture is empty: check data.sources")
    return data

"""Held-out evaluation of a training run: every split its data sources hold out, before and after training.

A split is scored by its kind (:class:`fairrl.data.run_data.RunData`):

- ``bbq``: option likelihood (or generation) -> BBQ accuracy and bias scores per context condition
  (:func:`fairrl.eval.bbq.evaluate_bbq`), plus a greedy-generation check when ``eval.generation_check``;
- ``reasoning``: greedy reply -> the task verifier (:func:`fairrl.eval.reasoning.evaluate_reasoning`);
- ``rewards`` (the user's own prompts): greedy reply -> the run's reward functions
  (:func:`evaluate_with_rewards`): the weighted reward, each function's mean, and the same per group.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fairrl.config.grpo import TrainConfig
from fairrl.console import Console, label_progress, progress_scope
from fairrl.data.records import Example, rows_to_columns, trl_sample
from fairrl.errors import DataError
from fairrl.eval.fairness import group_summary
from fairrl.eval.likelihood import greedy_generate
from fairrl.eval.metrics import bootstrap_ci


def _summary(values: list[float], n_boot: int, seed: int) -> dict[str, Any]:
    return {"n": len(values), "reward": float(np.mean(values)),
            "reward_ci": bootstrap_ci(values, n_boot=n_boot, seed=seed)}  # fmt: skip


def evaluate_with_rewards(
    model,
    tokenizer,
    examples: Sequence[Example],
    reward_fns: dict[str, Any],
    weights: Sequence[float],
    max_new_tokens: int,
    batch_size: int = 8,
    n_boot: int = 1000,
    seed: int = 0,
    on_error: str = "raise",
    timeout: float | None = None,
    trainer_state: Any = None,
) -> dict[str, Any]:
    """Greedy replies to held-out prompts scored by the run's reward functions (TRL contract).

    A reply's reward is sum_k w_k r_k over the functions that apply to it (None = not applicable), as
    in training before normalisation; replies to which no function applies are left out (counted in
    ``not_scored``). Returns ``{"kind": "rewards", "n", "reward", "reward_ci", "by_function": {name:
    {"n", "mean"}}, "by_group": {group: {"n", "reward", "reward_ci"}}, "group_fairness", "not_scored",
    "items"}``; ``seed`` seeds the bootstrap.

    The functions are called as in training (TRL's contract, :func:`fairrl.rewards.evaluate_rewards`:
    each sample in its data's format, ``trainer_state``, ``timeout`` seconds per call); ``completion_ids``
    are the replies' texts encoded again (without special tokens), and what they log is dropped.
    """
    from fairrl.rewards import check_weighted_sum, evaluate_rewards

    if not examples:
        raise DataError("no held-out prompts to evaluate: the evaluation split is empty")
    texts = greedy_generate(model, tokenizer, [e.prompt for e in examples], max_new_tokens, batch_size)
    columns = rows_to_columns([e.row() for e in examples])
    columns.pop("prompt")
    samples = [trl_sample(e, t) for e, t in zip(examples, texts, strict=True)]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    per_fn = evaluate_rewards(  # [N, K]
        reward_fns, [p for p, _ in samples], [c for _, c in samples], columns, on_error=on_error,
        completion_ids=ids, trainer_state=trainer_state, timeout=timeout,
    )  # fmt: skip
    check_weighted_sum(per_fn, weights, list(reward_fns))
    w = torch.tensor(list(weights), dtype=per_fn.dtype)
    applies = ~torch.isnan(per_fn)  # [N, K]
    total = torch.where(applies, per_fn * w, 0.0).sum(-1)  # [N]
    scored = applies.any(-1)  # [N]
    items = [
        {"prompt_id": e.prompt_id, "group": e.group, "output": t,
         "reward": float(r) if ok else None,
         "rewards": {name: (None if torch.isnan(v) else float(v)) for name, v in zip(reward_fns, row, strict=True)}}
        for e, t, r, ok, row in zip(examples, texts, total, scored, per_fn, strict=True)
    ]  # fmt: skip
    values = [it["reward"] for it in items if it["reward"] is not None]
    if not values:
        raise DataError(
            f"none of the reward functions {list(reward_fns)} applies to the held-out prompts (all returned "
            "None); add a reward function for this data"
        )
    by_group: dict[str, list[float]] = {}
    for it in items:
        if it["reward"] is not None:
            by_group.setdefault(it["group"], []).append(it["reward"])
    groups = {g: _summary(v, n_boot, seed) for g, v in sorted(by_group.items())}
    by_function = {}
    for k, name in enumerate(reward_fns):
        col = per_fn[:, k][applies[:, k]]
        by_function[name] = {"n": int(col.numel()), "mean": float(col.mean()) if col.numel() else None}
    return {
        "kind": "rewards",
        **_summary(values, n_boot, seed),
        "by_function": by_function,
        "by_group": groups,
        "group_fairness": group_summary({g: s["reward"] for g, s in groups.items()}),
        "not_scored": int((~scored).sum()),
        "items": items,
    }


def evaluate_splits(model, tokenizer, data, cfg: TrainConfig, console: Console, trainer_state: Any = None,
                    progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run every held-out split of a run (``data``: :class:`~fairrl.data.run_data.RunData`) -> {split: results}.

    ``trainer_state`` is what reward functions receive (default: step 0 of ``cfg.max_steps``). Scoring
    and generation show progress bars labelled ``eval <split>`` (``progress=False``: none)."""
    with progress_scope("eval", enabled=progress):
        return _evaluate_splits(model, tokenizer, data, cfg, console, trainer_state)


def _evaluate_splits(model, tokenizer, data, cfg: TrainConfig, console: Console,
                     trainer_state: Any) -> dict[str, Any]:  # fmt: skip
    from fairrl.eval.bbq import evaluate_bbq
    from fairrl.eval.reasoning import evaluate_reasoning
    from fairrl.rewards import TrainerState, get_reward

    e = cfg.eval
    state = trainer_state if trainer_state is not None else TrainerState(max_steps=cfg.max_steps)
    max_new = max(32, cfg.algorithm.max_completion_length)
    results: dict[str, Any] = {}
    for split, examples in data.evals.items():
        t0 = time.perf_counter()
        label_progress(f"eval {split}")
        kind = data.eval_kind(split)
        if kind == "bbq":
            results[split] = evaluate_bbq(
                model, tokenizer, examples, mode=e.mode, permutations=e.permutations, batch_size=e.batch_size
            )
            if e.generation_check and e.mode != "generation":
                results[split + "_generation"] = evaluate_bbq(
                    model, tokenizer, examples, mode="generation", batch_size=e.batch_size
                )
        elif kind == "rewards":
            specs = cfg.rewards.functions
            results[split] = evaluate_with_rewards(
                model, tokenizer, examples,
                {label: get_reward(s.name, s.options) for label, s in zip(cfg.rewards.labels(), specs, strict=True)},
                [s.weight for s in specs], max_new_tokens=cfg.algorithm.max_completion_length,
                batch_size=e.batch_size, seed=cfg.seed, on_error=cfg.rewards.on_error,
                timeout=cfg.rewards.timeout, trainer_state=state,
            )  # fmt: skip
        else:
            results[split] = evaluate_reasoning(model, tokenizer, examples, max_new_tokens=max_new,
                                                batch_size=e.batch_size)  # fmt: skip
        console(f"  evaluated {split}: {len(examples)} items in {time.perf_counter() - t0:.0f}s")
    return results

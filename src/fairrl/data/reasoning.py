"""Verifiable reasoning tasks from reasoning-gym: seeded generators, each with its own verifier.

An item is ``create_dataset(task, size=n, seed=seed, **options)[i]``: reasoning-gym derives item i
from (seed, i) alone, so a run can regenerate any item, and score it with the same generator.
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from typing import Any

from fairrl.data.gsm8k import gsm8k_verify
from fairrl.data.instructions import REASONING_INSTRUCTION
from fairrl.data.records import Example
from fairrl.errors import ConfigError, DataError

# Tasks (with generator options) small enough that a 135M chat model sometimes answers them: one-digit
# operands and answers of one or two characters. Measured on the task data alone (200 items, seed 0):
# answers are integers in [-9, 20]; copying the last number of the question is right 6-7 % of the time
# and the most frequent answer covers 7-9 %, so reward needs real arithmetic rather than a guess.
# Avoid letter_counting and gcd as "easy" tasks: answering "1" is right for about a third of their items.
SUGGESTED_TASKS: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {
        "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
        "operators": ["+", "-"], "allow_parentheses": False, "allow_negation": False,
    },
    "chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
}  # fmt: skip


def _registry() -> dict[str, Any]:
    import reasoning_gym  # noqa: F401  (importing it registers the tasks)
    from reasoning_gym.factory import DATASETS

    return DATASETS


def task_names() -> list[str]:
    """Every reasoning-gym task name, sorted."""
    return sorted(_registry())


def _check_task(task: str) -> None:
    names = sorted(_registry())
    if task not in names:
        close = difflib.get_close_matches(task, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        examples = sorted(SUGGESTED_TASKS) + [n for n in names if n not in SUGGESTED_TASKS][:6]
        raise DataError(
            f"unknown reasoning-gym task {task!r}; {hint}valid names include {', '.join(examples)} "
            f"... ({len(names)} tasks, listed in reasoning_gym.factory.DATASETS)"
        )


def _options_key(options: dict[str, Any] | None) -> str:
    """Generator options as a canonical JSON string: hashable for the cache, and storable in a column."""
    try:
        return json.dumps(options or {}, sort_keys=True)
    except TypeError as err:
        raise ConfigError(f"reasoning task options must be plain YAML values ({err})") from None


@lru_cache(maxsize=32)
def _dataset(task: str, size: int, seed: int, options_key: str) -> Any:
    """The reasoning-gym dataset for (task, size, seed, options), built once per process."""
    _check_task(task)
    import reasoning_gym

    options = json.loads(options_key)

    try:
        return reasoning_gym.create_dataset(task, size=size, seed=seed, **options)
    except (TypeError, ValueError, AssertionError) as err:  # unknown option names / failed validation
        raise ConfigError(
            f"reasoning-gym task {task!r} rejected its options {options}: {err or type(err).__name__}; "
            "see the task's *Config dataclass in reasoning_gym for valid options"
        ) from None


def reasoning_examples(
    tasks: list[str], n: int, seed: int, task_config: dict[str, dict[str, Any]] | None = None
) -> list[Example]:
    """``n`` items per task from ``create_dataset(task, size=n, seed=seed, **task_config[task])``.

    ``group`` is the task name. Columns: ``task``, ``question``, ``answer`` (as text), ``metadata``,
    plus ``task_key`` (task, size, seed, options) and ``index``, which let the verifier regenerate the
    exact item and use a generator built with the same options.
    """
    if not tasks:
        raise DataError("no reasoning tasks given: name at least one reasoning-gym task")
    if len(set(tasks)) != len(tasks):
        raise DataError(f"reasoning tasks {tasks} repeat a name; list each task once")
    if n < 1:
        raise DataError(f"the number of reasoning items per task must be at least 1, got {n}")
    for name in task_config or {}:  # options for an unused task are fine, for a misspelt one not
        _check_task(name)
    out = []
    for task in tasks:
        key = _options_key((task_config or {}).get(task))
        ds = _dataset(task, n, seed, key)
        for i in range(n):
            entry = ds[i]
            out.append(
                Example(
                    prompt_id=f"reasoning/{task}/{seed}/{i}",
                    prompt=[
                        {"role": "system", "content": REASONING_INSTRUCTION},
                        {"role": "user", "content": entry["question"]},
                    ],
                    group=task,
                    source="reasoning",
                    columns={
                        "task": task,
                        "question": entry["question"],
                        "answer": str(entry["answer"]),
                        "metadata": entry["metadata"],
                        "task_key": [task, n, seed, key],
                        "index": i,
                    },
                )
            )
    return out


@lru_cache(maxsize=4096)
def _original_entry(task: str, size: int, seed: int, key: str, index: int) -> dict[str, Any]:
    return _dataset(task, size, seed, key)[index]


def score_reasoning(task: str, answer: str, entry: dict[str, Any], task_key: list | None = None) -> float:
    """The task's own verifier, ``score_answer(answer, entry)``: 1.0 for a correct answer.

    ``entry`` is the example's columns. When they carry ``task_key`` and ``index`` (examples made by
    :func:`reasoning_examples`) the verifier is the generator with the item's options and the entry is
    the regenerated original (its answer keeps its type); otherwise a default generator of ``task`` scores
    the entry as given. Note: reasoning-gym's default verifier gives partial credit,
    ``len(oracle) / len(answer)``, when the oracle occurs inside a longer answer ("15" for "5": 0.5).
    Task ``gsm8k`` (not a reasoning-gym task) is scored by exact final number (``gsm8k_verify``).
    """
    if task == "gsm8k":
        return gsm8k_verify(task, answer, entry)
    task_key = task_key if task_key is not None else entry.get("task_key")
    if task_key is None:
        return float(_dataset(task, 1, 0, "{}").score_answer(answer, entry))
    name, size, seed, key = task_key
    if not isinstance(key, str):  # options stored as a mapping by hand-made examples
        key = _options_key(dict(key))
    ds = _dataset(name, int(size), int(seed), key)
    index = entry.get("index")
    if index is not None:
        original = _original_entry(name, int(size), int(seed), key, int(index))
        if original["question"] == entry.get("question", original["question"]):
            entry = original
    return float(ds.score_answer(answer, entry))

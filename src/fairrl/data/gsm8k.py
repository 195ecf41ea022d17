"""GSM8K (Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems") as reasoning items.

arXiv 2110.14168. GSM8K holds 8.5K grade-school math word problems (7,473 train, 1,319 test). Each
row has a ``question`` and an ``answer``: the worked solution, then a last line ``#### <number>`` with
the final answer (``"... so she makes 9 * 2 = $<<9*2=18>>18 every day.\\n#### 18"``).

Sources (:func:`gsm8k_examples`): a Hugging Face hub id through ``datasets`` (``openai/gsm8k``, config
``main``, split ``train`` / ``test``), or a local JSONL file (one ``{"question", "answer"}`` object a
line, as in github.com/openai/grade-school-math) or JSON file (a list of such objects); ``split`` is
ignored for a file. Items become reasoning examples like reasoning-gym's (:mod:`fairrl.data.reasoning`):
same system instruction, ``group`` and ``task`` = ``gsm8k``, ``source`` = ``reasoning``.

Verification (:func:`gsm8k_verify`): exact match of the normalised final number. Normalisation drops
whitespace, a trailing full stop, ``$`` and thousands commas and writes the number canonically (no
trailing zeros after the decimal point, no ``+``, ``-0`` as ``0``): "$1,234.00" and "1234" match.
A final answer that is still not a bare number ("18 dollars") does not match, GSM8K's usual strict
reading; the reply parser (:func:`fairrl.data.parsing.extract_final_answer`) already reduces
"Answer: 2 + 3 = 5" to "5". Licence: GSM8K is released under the MIT licence; cite the paper above
when reporting results.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal
from typing import Any

from fairrl.data.hub import load_hub_rows, read_records, resolve_source
from fairrl.data.instructions import REASONING_INSTRUCTION
from fairrl.data.records import Example
from fairrl.errors import ConfigError, DataError

TASK = "gsm8k"
HUB_CONFIG = "main"
REQUIRED = ("question", "answer")
MARKER = "####"
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def normalise_number(text: str) -> str:
    """A final answer in canonical form when it is a number ("$1,234.50" -> "1234.5"), else stripped text."""
    t = str(text).strip().replace("\u2212", "-").replace(",", "").replace("$", "").strip().rstrip(".")
    if not _NUMBER.fullmatch(t):
        return t
    value = Decimal(t)
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def gsm8k_final_number(text: str) -> str:
    """The normalised number after the last ``####`` of a GSM8K answer ("... \\n#### 1,234" -> "1234").

    Raises ValueError when the text has no ``####`` followed by something.
    """
    if MARKER not in text:
        raise ValueError(f"no '{MARKER} <number>' line in the answer ...{text[-80:]!r}")
    lines = text.rsplit(MARKER, 1)[1].strip().splitlines()
    if not lines:
        raise ValueError(f"nothing after '{MARKER}' in the answer ...{text[-80:]!r}")
    return normalise_number(lines[0])


def gsm8k_verify(task: str, final_answer: str, entry: dict[str, Any]) -> float:
    """1.0 when the reply's final answer equals the reference number after normalisation, else 0.0.

    ``entry`` is the example's columns; ``entry["answer"]`` is the reference final number. The signature
    is that of a verifier for :func:`fairrl.eval.reasoning.evaluate_reasoning`; ``task`` is not used.
    """
    return float(normalise_number(final_answer) == normalise_number(str(entry["answer"])))


def _example(row: dict[str, Any], index: int, where: str) -> Example:
    """A checked reasoning example; every fault names the row and what GSM8K rows need."""
    at = f"{where} row {index}"
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise DataError(
            f"{at} lacks field(s) {missing}; GSM8K rows need 'question' and 'answer' "
            f"(the solution ending in '{MARKER} <number>')"
        )
    question, solution = str(row["question"] or "").strip(), str(row["answer"] or "")
    if not question:
        raise DataError(f"{at} has an empty question")
    try:
        final = gsm8k_final_number(solution)
    except ValueError as err:
        raise DataError(f"{at}: {err}; GSM8K answers end in '{MARKER} <number>'") from None
    return Example(
        prompt_id=f"{TASK}/{index}",
        prompt=[
            {"role": "system", "content": REASONING_INSTRUCTION},
            {"role": "user", "content": question},
        ],
        group=TASK,
        source="reasoning",
        columns={"task": TASK, "question": question, "answer": final, "solution": solution, "index": index},
    )


def gsm8k_examples(
    source: str = "openai/gsm8k", split: str = "test", limit: int | None = None, seed: int = 0
) -> list[Example]:
    """GSM8K problems as reasoning examples (module docstring), in source order.

    ``source``: a hub id (config ``main``) or a local JSONL / JSON file. ``split``: the hub split
    (``train`` or ``test``), ignored for a file. ``limit``: at most this many problems, a sample drawn
    with ``seed`` (the same limit and seed give the same problems); None = all. Columns: ``task``
    (``gsm8k``), ``question``, ``answer`` (the final number as text), ``solution`` (the reference
    answer in full) and ``index`` (the row in the source, also in ``prompt_id``).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"the GSM8K limit must be a positive integer, got {limit!r}")
    local = "JSONL file with question and answer fields"
    resolved = resolve_source(source, what="GSM8K", expected=f"a {local}", hub_example="openai/gsm8k")
    if isinstance(resolved, str):
        instead = f"pass a local {local}"
        rows = load_hub_rows(resolved, what="GSM8K", config=HUB_CONFIG, split=split, instead=instead)
        where = f"hub dataset {source!r} ({split})"
    else:
        rows = [row for _, row in read_records(resolved, what="GSM8K", default_format=".jsonl")]
        where = str(resolved)
    if not rows:
        raise DataError(f"{where} holds no GSM8K rows")
    keep = range(len(rows))
    if limit is not None and limit < len(rows):
        keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [_example(rows[i], i, where) for i in keep]

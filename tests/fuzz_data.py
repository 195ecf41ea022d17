"""Bad data files for the CLI fuzz suite (tests/test_fuzz_cli.py): the user's prompt files, BBQ files and
preference-pair files. Every case must be refused with one clear error line before any model loads."""

from __future__ import annotations

import json
from typing import Any


def _jsonl(*rows: Any) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _ok(i: int) -> dict[str, Any]:
    return {"prompt": f"a b {i}"}


# (id, file name, content, extra source options); a name ending in "/" is a folder
PROMPT_CASES: list[tuple[str, str, bytes | str, dict[str, Any]]] = [
    ("empty-jsonl", "p.jsonl", "", {}),
    ("blank-lines-only", "p.jsonl", "\n  \n\n", {}),
    ("empty-json", "p.json", "", {}),
    ("empty-csv", "p.csv", "", {}),
    ("csv-header-only", "p.csv", "prompt,group\n", {}),
    ("not-utf8-jsonl", "p.jsonl", b'{"prompt": "caf\xe9"}\n', {}),
    ("not-utf8-csv", "p.csv", b"prompt\ncaf\xe9\n", {}),
    ("utf16-jsonl", "p.jsonl", _jsonl(_ok(0)).encode("utf-16"), {}),
    ("binary", "p.jsonl", bytes(range(256)), {}),
    ("bad-json-line", "p.jsonl", _jsonl(_ok(0)) + '{"prompt": "a\n', {}),
    ("truncated-json-line", "p.jsonl", _jsonl(_ok(0)) + '{"prompt": ', {}),
    ("single-quotes", "p.jsonl", "{'prompt': 'a'}\n", {}),
    ("nan-constant-jsonl", "p.jsonl", _jsonl(_ok(0)) + '{"prompt": NaN}\n', {}),
    ("list-line", "p.jsonl", _jsonl(_ok(0), ["a", "b"]), {}),
    ("number-line", "p.jsonl", _jsonl(_ok(0), 5), {}),
    ("string-line", "p.jsonl", _jsonl(_ok(0), "a prompt"), {}),
    ("null-line", "p.jsonl", _jsonl(_ok(0), None), {}),
    ("json-object-not-list", "p.json", json.dumps({"prompt": "a"}), {}),
    ("json-list-of-numbers", "p.json", json.dumps([1, 2]), {}),
    ("json-invalid", "p.json", "[{\"prompt\": \"a\"},", {}),
    ("no-prompt-column", "p.jsonl", _jsonl({"text": "a"}, {"text": "b"}), {}),
    ("prompt-column-misnamed", "p.jsonl", _jsonl(_ok(0)), {"prompt_column": "question"}),
    ("prompt-missing-in-a-row", "p.jsonl", _jsonl(_ok(0), {"text": "b"}), {}),
    ("csv-no-prompt-column", "p.csv", "text,group\na,g\n", {}),
    ("csv-extra-cells", "p.csv", "prompt,group\na,g,extra\n", {}),
    ("csv-empty-prompt", "p.csv", "prompt,group\n,g\n", {}),
    ("prompt-number", "p.jsonl", _jsonl(_ok(0), {"prompt": 5}), {}),
    ("prompt-null", "p.jsonl", _jsonl(_ok(0), {"prompt": None}), {}),
    ("prompt-bool", "p.jsonl", _jsonl(_ok(0), {"prompt": True}), {}),
    ("prompt-mapping", "p.jsonl", _jsonl(_ok(0), {"prompt": {"text": "a"}}), {}),
    ("prompt-empty", "p.jsonl", _jsonl(_ok(0), {"prompt": ""}), {}),
    ("prompt-whitespace", "p.jsonl", _jsonl(_ok(0), {"prompt": "  \n "}), {}),
    ("messages-empty", "p.jsonl", _jsonl(_ok(0), {"prompt": []}), {}),
    ("message-not-object", "p.jsonl", _jsonl({"prompt": ["hello"]}), {}),
    ("message-without-role", "p.jsonl", _jsonl({"prompt": [{"content": "hi"}]}), {}),
    ("message-unknown-role", "p.jsonl", _jsonl({"prompt": [{"role": "robot", "content": "hi"}]}), {}),
    ("message-content-number", "p.jsonl", _jsonl({"prompt": [{"role": "user", "content": 5}]}), {}),
    ("ends-with-assistant", "p.jsonl",
     _jsonl({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}), {}),
    ("duplicate-ids", "p.jsonl", _jsonl({"id": 1, "prompt": "a"}, {"id": 1, "prompt": "b"}), {}),
    ("duplicate-ids-csv", "p.csv", "id,prompt\nx,a\nx,b\n", {}),
    ("group-missing-in-a-row", "p.jsonl", _jsonl({"prompt": "a", "group": "g"}, {"prompt": "b"}), {}),
    ("group-empty", "p.jsonl", _jsonl({"prompt": "a", "group": "g"}, {"prompt": "b", "group": ""}), {}),
    ("group-null", "p.jsonl", _jsonl({"prompt": "a", "group": "g"}, {"prompt": "b", "group": None}), {}),
    ("unknown-suffix", "p.txt", "a prompt\n", {}),
    ("folder", "prompts/", "", {}),
    ("missing-file", "missing.jsonl", None, {}),
]  # fmt: skip

BBQ_ITEM = {
    "example_id": 1, "question_index": "1", "question_polarity": "neg", "context_condition": "ambig",
    "category": "Age", "context": "A young man and an old man met.", "question": "Who forgot?",
    "ans0": "The old man", "ans1": "The young man", "ans2": "Unknown", "label": 2,
    "answer_info": {"ans0": ["old man", "old"], "ans1": ["young man", "nonOld"], "ans2": ["Unknown", "unknown"]},
    "additional_metadata": {"stereotyped_groups": ["old"]},
}  # fmt: skip


def bbq_line(**changes: Any) -> bytes:
    """One BBQ item as a JSON line; ``changes`` replace fields (``DROP`` removes one)."""
    item = {k: v for k, v in {**BBQ_ITEM, **changes}.items() if v != "DROP"}
    return json.dumps(item).encode()


# (id, the second line of a BBQ file whose first line is a valid item)
BBQ_CASES: list[tuple[str, bytes]] = [
    ("not-utf8", b'{"context": "caf\xe9"}'),
    ("bad-json", b'{"example_id": 1,'),
    ("bare-number", b"7"),
    ("list", b"[1, 2]"),
    ("missing-label", bbq_line(label="DROP")),
    ("missing-answer-info", bbq_line(answer_info="DROP")),
    ("label-7", bbq_line(label=7)),
    ("label-negative", bbq_line(label=-1)),
    ("label-text", bbq_line(label="two")),
    ("label-bool", bbq_line(label=True)),
    ("label-fraction", bbq_line(label=1.5)),
    ("label-null", bbq_line(label=None)),
    ("ans0-null", bbq_line(ans0=None)),
    ("ans1-number", bbq_line(ans1=3)),
    ("context-list", bbq_line(context=["a"])),
    ("question-null", bbq_line(question=None)),
    ("condition-foo", bbq_line(context_condition="foo")),
    ("polarity-pos", bbq_line(question_polarity="pos")),
    ("example-id-fraction", bbq_line(example_id=1.7)),
    ("example-id-bool", bbq_line(example_id=True)),
    ("example-id-text", bbq_line(example_id="abc")),
    ("example-id-null", bbq_line(example_id=None)),
    ("question-index-null", bbq_line(question_index=None)),
    ("category-number", bbq_line(category=5)),
    ("answer-info-not-json", bbq_line(answer_info="{broken")),
    ("answer-info-list", bbq_line(answer_info=[1, 2])),
    ("answer-info-missing-entry", bbq_line(answer_info={"ans0": ["a", "old"], "ans1": ["b", "unknown"]})),
    ("answer-info-entry-number", bbq_line(answer_info={"ans0": ["a", "old"], "ans1": 3, "ans2": ["c", "unknown"]})),
    ("answer-info-entry-empty", bbq_line(answer_info={"ans0": [], "ans1": ["b", "x"], "ans2": ["c", "unknown"]})),
    ("no-unknown-answer", bbq_line(answer_info={k: [k, "old"] for k in ("ans0", "ans1", "ans2")})),
    ("two-unknown-answers", bbq_line(answer_info={"ans0": ["a", "unknown"], "ans1": ["b", "unknown"],
                                                  "ans2": ["c", "old"]})),
    ("groups-not-list", bbq_line(additional_metadata={"stereotyped_groups": 5})),
    ("metadata-not-mapping", bbq_line(additional_metadata=[1])),
]  # fmt: skip

_PAIR = {"prompt": "p", "chosen": "a", "rejected": "b"}
# (id, file name, content)
PAIR_CASES: list[tuple[str, str, bytes | str | None]] = [
    ("empty", "pairs.jsonl", ""),
    ("not-utf8", "pairs.jsonl", b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'),
    ("bad-json-line", "pairs.jsonl", _jsonl(_PAIR) + '{"chosen": '),
    ("number-line", "pairs.jsonl", _jsonl(_PAIR, 3)),
    ("no-chosen-column", "pairs.jsonl", _jsonl({"prompt": "p", "rejected": "b"})),
    ("no-rejected-column", "pairs.csv", "prompt,chosen\np,a\n"),
    ("chosen-empty", "pairs.jsonl", _jsonl(_PAIR, {**_PAIR, "chosen": ""})),
    ("chosen-equals-rejected", "pairs.jsonl", _jsonl(_PAIR, {**_PAIR, "chosen": "b"})),
    ("chosen-number", "pairs.jsonl", _jsonl(_PAIR, {**_PAIR, "chosen": 5})),
    ("rejected-mapping", "pairs.jsonl", _jsonl(_PAIR, {**_PAIR, "rejected": {"text": "b"}})),
    ("chosen-bad-messages", "pairs.jsonl", _jsonl(_PAIR, {**_PAIR, "chosen": ["a", "b"]})),
    ("chosen-empty-messages", "pairs.jsonl", _jsonl(_PAIR, {**_PAIR, "chosen": []})),
    ("json-object", "pairs.json", json.dumps(_PAIR)),
    ("csv-header-only", "pairs.csv", "prompt,chosen,rejected\n"),
    ("unknown-suffix", "pairs.tsv", "prompt\tchosen\trejected\n"),
    ("folder", "pairs/", ""),
    ("missing-file", "missing_pairs.jsonl", None),
]  # fmt: skip

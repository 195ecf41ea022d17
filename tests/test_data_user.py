"""User data in TRL's dataset formats: prompts, columns, groups, ids, hub ids and every error."""

from __future__ import annotations

import csv
import json
import sys
import types

import pytest

from fairrl.data.user import user_examples
from fairrl.errors import DataError


def _jsonl(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_standard_prompts_become_user_messages_and_keep_every_other_column(tmp_path):
    path = _jsonl(tmp_path, [
        {"prompt": "What is 2 + 2?", "completion": "4", "answer": 4, "group": "maths"},
        {"prompt": "Name a colour.", "completion": "Red.", "answer": None, "group": "words"},
    ])  # fmt: skip
    first, second = user_examples(path, name="mine")
    assert first.prompt == [{"role": "user", "content": "What is 2 + 2?"}]
    assert (first.prompt_id, first.group, first.source) == ("mine:0", "maths", "mine")
    assert first.columns == {"completion": "4", "answer": 4, "group": "maths"}
    assert (second.prompt_id, second.group, second.columns["answer"]) == ("mine:1", "words", None)


def test_system_prompt_goes_first(tmp_path):
    path = _jsonl(tmp_path, [{"prompt": "Hi"}])
    (example,) = user_examples(path, name="s", system_prompt="Be brief.")
    assert example.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_conversational_prompts_are_kept_and_completion_unchanged(tmp_path):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Who are you?"}]  # fmt: skip
    completion = [{"role": "assistant", "content": "A model."}]
    own_system = [{"role": "system", "content": "Mine."}, {"role": "user", "content": "Q"}]
    path = _jsonl(tmp_path, [{"prompt": chat, "completion": completion}, {"prompt": own_system}])
    first, second = user_examples(path, name="c", system_prompt="Be brief.")
    assert first.prompt == [{"role": "system", "content": "Be brief."}, *chat]
    assert first.columns == {"completion": completion}
    assert second.prompt == own_system  # the row's own system message wins over system_prompt
    (plain,) = user_examples(_jsonl(tmp_path, [{"prompt": chat}], "p.jsonl"), name="c")
    assert plain.prompt == chat


def test_group_column_present_absent_partial_or_disabled(tmp_path):
    rows = [{"prompt": "a", "bias": "age"}, {"prompt": "b", "bias": 3}]
    path = _jsonl(tmp_path, rows)
    assert [e.group for e in user_examples(path, name="n", group_column="bias")] == ["age", "3"]
    assert [e.group for e in user_examples(path, name="n")] == ["n", "n"]  # no row has "group"
    assert [e.group for e in user_examples(path, name="n", group_column=None)] == ["n", "n"]
    rows = [{"prompt": "a", "group": "x"}, {"prompt": "b"}, {"prompt": "c"}]
    partial = _jsonl(tmp_path, rows, "part.jsonl")
    with pytest.raises(DataError, match=r"part\.jsonl line 2 has no 'group' column, which other rows have"):
        user_examples(partial, name="n")
    empty = _jsonl(tmp_path, [{"prompt": "a", "group": ""}], "empty_group.jsonl")
    with pytest.raises(DataError, match=r"empty_group\.jsonl line 1: group column 'group' is empty"):
        user_examples(empty, name="n")


def test_ids_name_prompts_and_must_be_unique(tmp_path):
    path = _jsonl(tmp_path, [{"prompt": "a", "id": "q7"}, {"prompt": "b", "id": 8}])
    assert [e.prompt_id for e in user_examples(path, name="n")] == ["n:q7", "n:8"]
    rows = [{"prompt": "a", "id": 1}, {"prompt": "b", "id": 2}, {"prompt": "c", "id": 1}]
    dup = _jsonl(tmp_path, rows, "d.jsonl")
    with pytest.raises(DataError, match=r"d\.jsonl line 3 has prompt id 'n:1', as does \S*d\.jsonl line 1"):
        user_examples(dup, name="n")


def test_csv_and_json_files(tmp_path):
    path = tmp_path / "data.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["prompt", "group", "ref"], ["Say hi,\nplease", "g1", "hi"]])
    (example,) = user_examples(str(path), name="csv")
    assert example.prompt == [{"role": "user", "content": "Say hi,\nplease"}]
    assert (example.group, example.columns) == ("g1", {"group": "g1", "ref": "hi"})
    doc = tmp_path / "data.json"
    doc.write_text(json.dumps([{"question": "Q1"}, {"question": "Q2"}]))
    examples = user_examples(str(doc), name="j", prompt_column="question")
    assert [e.prompt[0]["content"] for e in examples] == ["Q1", "Q2"] and examples[1].columns == {}


@pytest.mark.parametrize(
    "prompt, match",
    [
        ("  ", r"line 1: 'prompt' is empty; give every row a prompt"),
        (7, r"line 1: 'prompt' is a int; a prompt is a string or a list of \{'role', 'content'\}"),
        ([], r"'prompt' is an empty message list"),
        (["hi"], r"'prompt' message 0 is not a \{'role', 'content'\} object"),
        ([{"role": "robot", "content": "x"}], r"message 0 has role 'robot'; use one of system, user, "),
        ([{"role": 1, "content": "x"}], r"message 0 has role 1; use one of"),
        ([{"role": "user", "content": ["x"]}], r"message 0 has content of type list; contents must be text"),
        ([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
         r"'prompt' ends with an assistant message.*move that message to the 'completion' column"),
    ],
)  # fmt: skip
def test_bad_prompts_name_the_row_and_the_fix(tmp_path, prompt, match):
    with pytest.raises(DataError, match=match):
        user_examples(_jsonl(tmp_path, [{"prompt": prompt}]), name="n")


def test_file_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl holds no user data rows"):
        user_examples(str(tmp_path / "empty.jsonl"), name="n")
    wrong = _jsonl(tmp_path, [{"question": "a", "answer": 1}, {"question": "b", "level": 2}], "wrong.jsonl")
    with pytest.raises(
        DataError,
        match=r"wrong\.jsonl has no 'prompt' column; its columns are \['question', 'answer', 'level'\]; "
        r"set prompt_column",
    ):
        user_examples(wrong, name="n")
    gap = _jsonl(tmp_path, [{"prompt": "a"}, {"text": "b"}], "gap.jsonl")
    with pytest.raises(DataError, match=r"gap\.jsonl line 2 has no 'prompt' column"):
        user_examples(gap, name="n")
    (tmp_path / "rows.jsonl").write_text('{"prompt": "a"}\n"just text"\n')
    with pytest.raises(DataError, match=r"rows\.jsonl line 2 is a str, not an object with named columns"):
        user_examples(str(tmp_path / "rows.jsonl"), name="n")
    with pytest.raises(DataError, match=r"the user data file \S*missing\.jsonl does not exist"):
        user_examples(str(tmp_path / "missing.jsonl"), name="n")


def _fake_datasets(rows, calls):
    mod = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return rows

    mod.load_dataset = load_dataset
    return mod


def test_hub_ids_load_through_datasets(monkeypatch):
    calls = []
    rows = [{"prompt": [{"role": "user", "content": "Hi"}], "label": 1}, {"prompt": "Bye", "label": 0}]
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(rows, calls))
    first, second = user_examples("owner/chat:clean", name="hub", split="test")
    assert calls == [(("owner/chat", "clean"), {"split": "test"})]
    assert first.prompt == [{"role": "user", "content": "Hi"}] and second.prompt[0]["content"] == "Bye"
    assert [(e.prompt_id, e.group, e.columns) for e in (first, second)] == [
        ("hub:0", "hub", {"label": 1}), ("hub:1", "hub", {"label": 0})
    ]  # fmt: skip
    user_examples("owner/chat", name="hub")
    assert calls[-1] == (("owner/chat",), {"split": "train"})
    rows.clear()
    with pytest.raises(DataError, match=r"hub dataset 'owner/chat' \(train\) holds no rows"):
        user_examples("owner/chat", name="hub")


def test_require_local_refuses_hub_ids(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets([{"prompt": "x"}], calls))
    with pytest.raises(DataError, match=r"`jsonl` source needs a local .*; for a hub id use kind `hub`"):
        user_examples("owner/chat", name="mine", require_local=True)
    assert calls == []
    assert len(user_examples(_jsonl(tmp_path, [{"prompt": "x"}]), name="mine", require_local=True)) == 1

"""Local path or hub id: the decision, the hub loader's errors, and the record file readers."""

from __future__ import annotations

import json
import sys
import types

import pytest

from fairrl.data.gsm8k import gsm8k_examples
from fairrl.data.hub import (
    hub_config_names,
    load_hub_rows,
    looks_like_path,
    read_json,
    read_records,
    resolve_source,
    split_hub_id,
)
from fairrl.errors import DataError


def _fake_datasets(splits, calls, fail=None, configs=("a", "b")):
    """A stand-in for the `datasets` module: records each call, returns ``splits`` (or one split)."""
    mod = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        if fail:
            raise fail
        return splits[kwargs["split"]] if "split" in kwargs else splits

    def get_dataset_config_names(hub_id):
        calls.append(("configs", hub_id))
        if fail:
            raise fail
        return list(configs)

    mod.load_dataset = load_dataset
    mod.get_dataset_config_names = get_dataset_config_names
    return mod


# ------------------------------------------------------------------------------ path or hub id
@pytest.mark.parametrize(
    "source, expected",
    [
        ("openai/gsm8k", False),
        ("McGill-NLP/stereoset", False),
        ("owner/name:config", False),
        ("gsm8k", False),
        ("data.jsonl", True),
        ("data.JSON", True),
        ("owner/train.csv", True),
        ("./owner/name", True),
        ("/abs/file", True),
        ("~/data", True),
        ("a/b/c", True),
        ("C:\\data\\x", True),
    ],
)
def test_looks_like_path(source, expected):
    assert looks_like_path(source) is expected


def test_resolve_source_existing_paths_and_hub_ids(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n')
    assert resolve_source(str(path), what="X", expected="a file", hub_example="o/n") == path
    assert resolve_source(str(tmp_path), what="X", expected="a file", hub_example="o/n") == tmp_path
    assert resolve_source("owner/name", what="X", expected="a file", hub_example="o/n") == "owner/name"
    hub_id = resolve_source("owner/name:cfg", what="X", expected="a file", hub_example="o/n")
    assert hub_id == "owner/name:cfg"


def test_a_missing_local_path_is_a_missing_file_and_never_reaches_the_hub(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets({}, calls))
    missing = str(tmp_path / "typo.jsonl")
    with pytest.raises(DataError) as err:
        resolve_source(missing, what="GSM8K", expected="a JSONL file", hub_example="openai/gsm8k")
    assert str(err.value) == (
        f"the GSM8K file {missing} does not exist; pass a JSONL file or a hub id such as openai/gsm8k"
    )
    with pytest.raises(DataError, match=r"the GSM8K file \S*typo.jsonl does not exist"):
        gsm8k_examples(missing)
    with pytest.raises(DataError, match="rows.csv does not exist; .* or omit the source to use the packaged"):
        resolve_source("owner/rows.csv", what="X", expected="a CSV file", hub_example="o/n", packaged=True)
    assert calls == []


def test_split_hub_id():
    assert split_hub_id("owner/name") == ("owner/name", None)
    assert split_hub_id("owner/name:Age") == ("owner/name", "Age")


# ----------------------------------------------------------------------------------- hub loader
def test_load_hub_rows_passes_config_and_split(monkeypatch):
    calls = []
    splits = {"train": [{"q": 1}, {"q": 2}], "test": [{"q": 3}]}
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(splits, calls))
    assert load_hub_rows("o/n", what="X", config="main", split="test") == [{"q": 3}]
    assert load_hub_rows("o/n", what="X", split="train") == [{"q": 1}, {"q": 2}]
    assert load_hub_rows("o/n", what="X") == [{"q": 1}, {"q": 2}, {"q": 3}]  # every split, in order
    assert calls == [(("o/n", "main"), {"split": "test"}), (("o/n",), {"split": "train"}), (("o/n",), {})]
    assert hub_config_names("o/n", what="X") == ["a", "b"]


def test_hub_errors_are_wrapped(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets({}, calls, fail=ConnectionError("offline")))
    with pytest.raises(DataError) as err:
        load_hub_rows("o/n", what="GSM8K", config="main", split="test", instead="pass a local JSONL file")
    message = str(err.value)
    assert message.startswith(
        "could not load GSM8K from the hub id 'o/n' (ConnectionError: offline) with config 'main' and split "
        "'test'; "
    )
    assert "HF_HUB_OFFLINE=1" in message
    assert message.endswith("local data needs no network: pass a local JSONL file")
    with pytest.raises(DataError, match=r"'o/n' \(ConnectionError: offline\) while listing its configs"):
        hub_config_names("o/n", what="BBQ")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DataError) as err:
        load_hub_rows("o/n", what="GSM8K", instead="pass a local JSONL file")
    assert str(err.value) == (
        "GSM8K source 'o/n' is not a local path, so it was taken as a hub id, but the `datasets` package is "
        "not installed: pip install 'fairrl[hub]'; or pass a local JSONL file"
    )


def test_hub_rows_must_be_mappings(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets({"train": [{"a": 1}, [1, 2]]}, []))
    with pytest.raises(DataError, match=r"hub dataset 'o/n' row 1 is a list, not a row with named columns"):
        load_hub_rows("o/n", what="X", split="train")


# ----------------------------------------------------------------------------------- local files
def test_jsonl_skips_blank_lines_and_names_rows_by_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": "x\\u2028y"}\n', encoding="utf-8")
    assert read_records(path, what="X") == [
        (f"{path} line 1", {"a": 1}),
        (f"{path} line 4", {"a": "x\u2028y"}),
    ]
    raw = tmp_path / "raw.jsonl"  # an unescaped U+2028 inside a string is valid JSON: one record
    raw.write_text(json.dumps({"a": "x\u2028y"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_records(raw, what="X") == [(f"{raw} line 1", {"a": "x\u2028y"})]


def test_a_bad_jsonl_line_is_named_by_number(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(DataError, match=r"d\.jsonl line 3 is not valid JSON \(Expecting value\)"):
        read_records(path, what="X")


def test_json_list_and_its_errors(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    assert read_records(path, what="X") == [(f"{path} item 0", {"a": 1}), (f"{path} item 1", {"a": 2})]
    path.write_text(json.dumps({"data": [{"a": 1}]}))
    with pytest.raises(DataError, match=r"d\.json must hold a JSON list of objects, got dict"):
        read_records(path, what="X")
    path.write_text("[{")
    with pytest.raises(DataError, match=r"d\.json is not valid JSON \(.*line 1\)"):
        read_records(path, what="X")
    path.write_text(json.dumps([{"a": 1}, "text"]))
    with pytest.raises(DataError, match=r"d\.json item 1 is a str, not an object with named columns"):
        read_records(path, what="X")


def test_csv_with_windows_line_endings_quotes_and_a_bom(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b'\xef\xbb\xbfprompt,group\r\n"two\r\nlines, one cell",a\r\nplain,b\r\n')
    assert read_records(path, what="X") == [
        (f"{path} line 3", {"prompt": "two\r\nlines, one cell", "group": "a"}),
        (f"{path} line 4", {"prompt": "plain", "group": "b"}),
    ]
    path.write_bytes(b"prompt,group\r\nx,a,surplus\r\n")
    with pytest.raises(DataError, match=r"d\.csv line 2 has more cells than the header has columns"):
        read_records(path, what="X")


@pytest.mark.parametrize("name, text", [("e.jsonl", "\n \n"), ("e.json", ""), ("e.csv", "prompt,group\r\n")])
def test_a_file_without_rows_is_an_error_naming_it(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=rf"{name} holds no user data rows"):
        read_records(path, what="user data")


def test_suffix_folder_and_encoding_errors(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text('{"a": 1}\n')
    with pytest.raises(DataError, match=r"the X file \S*d\.txt has suffix '\.txt'; use \.jsonl, \.json"):
        read_records(path, what="X")
    assert read_records(path, what="X", default_format=".jsonl") == [(f"{path} line 1", {"a": 1})]
    with pytest.raises(DataError, match="is a folder; pass a .jsonl, .json or .csv file"):
        read_records(tmp_path, what="X")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"a": "café"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.jsonl is not UTF-8 text"):
        read_records(latin, what="X")
    line = tmp_path / "list.jsonl"
    line.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"list\.jsonl line 2 is a list, not an object with named columns"):
        read_records(line, what="X")


def test_read_json(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text('{"data": {"x": [1]}}')
    assert read_json(path, what="StereoSet") == {"data": {"x": [1]}}
    path.write_text("  ")
    with pytest.raises(DataError, match=r"the StereoSet file \S*doc\.json is empty"):
        read_json(path, what="StereoSet")
    path.write_text("{\n")
    with pytest.raises(DataError, match=r"doc\.json is not valid JSON \(.*line 2\)"):
        read_json(path, what="StereoSet")
    with pytest.raises(DataError, match=r"cannot read the StereoSet file \S*nope\.json"):
        read_json(tmp_path / "nope.json", what="StereoSet")

"""GSM8K: final-number extraction and matching, loading (local file, hub), use with evaluate_reasoning."""

from __future__ import annotations

import json
import sys
import types

import pytest

import fairrl.eval.reasoning as eval_reasoning
from fairrl.data.gsm8k import gsm8k_examples, gsm8k_final_number, gsm8k_verify, normalise_number
from fairrl.data.reasoning import REASONING_INSTRUCTION
from fairrl.errors import ConfigError, DataError
from fairrl.eval.reasoning import evaluate_reasoning

ROWS = [
    {"question": "Tom has 3 apples and buys 2 more. How many?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"},
    {"question": "A car costs $1,000 and a bike $234. Total?", "answer": "1000 + 234 = 1234\n#### 1,234"},
    {"question": "It is 2 degrees and falls by 5. Temperature?", "answer": "2 - 5 = -3\n#### -3"},
    {"question": "Half of 5?", "answer": "5 / 2 = 2.5\n#### 2.50"},
]


# -------------------------------------------------------------------------------- numbers and matching
@pytest.mark.parametrize(
    ("text", "number"),
    [("work\n#### 1,234", "1234"), ("#### $5.00", "5"), ("#### -3", "-3"), ("#### 2.50", "2.5"),
     ("a #### b\n#### 7 \n", "7"), ("#### 0.5", "0.5"), ("#### -0", "0")],
)  # fmt: skip
def test_final_number(text, number):
    assert gsm8k_final_number(text) == number


def test_final_number_needs_the_marker():
    with pytest.raises(ValueError, match="no '#### <number>' line"):
        gsm8k_final_number("the answer is 5")
    with pytest.raises(ValueError, match="nothing after '####'"):
        gsm8k_final_number("5 ####  ")


@pytest.mark.parametrize(
    ("reply_answer", "reference", "score"),
    [("$5.00", "5", 1.0), ("5", "5", 1.0), ("5.", "5", 1.0), ("1,234", "1234", 1.0), ("-3", "-3", 1.0),
     ("3", "-3", 0.0), ("\u22123", "-3", 1.0), ("2.5", "2.50", 1.0), (".5", "0.5", 1.0), ("2.51", "2.5", 0.0),
     ("18 dollars", "18", 0.0), ("", "0", 0.0)],
)  # fmt: skip
def test_verify_is_exact_on_normalised_numbers(reply_answer, reference, score):
    assert gsm8k_verify("gsm8k", reply_answer, {"answer": reference}) == score


def test_normalise_leaves_text_alone():
    assert normalise_number("  Paris. ") == "Paris" and normalise_number("1e3") == "1e3"


# ----------------------------------------------------------------------------------------- loading
def _jsonl(tmp_path, rows, name="test.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_local_jsonl_examples(tmp_path):
    path = _jsonl(tmp_path, ROWS)
    examples = gsm8k_examples(str(path))
    assert [e.columns["answer"] for e in examples] == ["5", "1234", "-3", "2.5"]
    e = examples[1]
    assert e.prompt_id == "gsm8k/1" and e.group == "gsm8k" and e.source == "reasoning"
    assert e.prompt == [{"role": "system", "content": REASONING_INSTRUCTION},
                        {"role": "user", "content": ROWS[1]["question"]}]  # fmt: skip
    assert e.columns == {"task": "gsm8k", "question": ROWS[1]["question"], "answer": "1234",
                         "solution": ROWS[1]["answer"], "index": 1}  # fmt: skip
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    assert gsm8k_examples(str(tmp_path / "rows.json")) == examples


def test_limit_is_a_seeded_sample_in_file_order(tmp_path):
    path = _jsonl(tmp_path, ROWS * 5)
    picked = gsm8k_examples(str(path), limit=6, seed=1)
    ids = [int(e.prompt_id.split("/")[1]) for e in picked]
    assert len(ids) == 6 and ids == sorted(ids)
    assert picked == gsm8k_examples(str(path), limit=6, seed=1)
    assert ids != [int(e.prompt_id.split("/")[1]) for e in gsm8k_examples(str(path), limit=6, seed=2)]
    assert len(gsm8k_examples(str(path), limit=100)) == 20
    with pytest.raises(ConfigError, match="positive integer"):
        gsm8k_examples(str(path), limit=0)


def test_file_errors_name_the_problem(tmp_path):
    no_answer = _jsonl(tmp_path, [ROWS[0], {"question": "q?"}], "no_answer.jsonl")
    with pytest.raises(DataError, match=rf"{no_answer} row 1 lacks field\(s\) \['answer'\]"):
        gsm8k_examples(str(no_answer))
    no_marker = _jsonl(tmp_path, [{"question": "q?", "answer": "it is 4"}], "no_marker.jsonl")
    with pytest.raises(DataError, match="row 0: no '#### <number>' line"):
        gsm8k_examples(str(no_marker))
    empty_q = _jsonl(tmp_path, [{"question": " ", "answer": "#### 4"}], "empty_q.jsonl")
    with pytest.raises(DataError, match="row 0 has an empty question"):
        gsm8k_examples(str(empty_q))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=f"{empty} holds no GSM8K rows"):
        gsm8k_examples(str(empty))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        gsm8k_examples(str(broken))
    (tmp_path / "obj.json").write_text(json.dumps({"data": ROWS}))
    with pytest.raises(DataError, match="must hold a JSON list"):
        gsm8k_examples(str(tmp_path / "obj.json"))
    with pytest.raises(DataError, match="does not exist"):
        gsm8k_examples(str(tmp_path / "missing.jsonl"))


def test_hub_source_through_a_fake_datasets_module(monkeypatch):
    def load_dataset(name, config, split):
        assert (name, config, split) == ("openai/gsm8k", "main", "train")
        return ROWS[:2]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert [e.columns["answer"] for e in gsm8k_examples(split="train")] == ["5", "1234"]

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DataError, match="'openai/gsm8k'.*ConnectionError.*local JSONL file"):
        gsm8k_examples()
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DataError, match=r"pip install 'fairrl\[hub\]'"):
        gsm8k_examples()


def test_evaluate_reasoning_with_the_gsm8k_verifier(tmp_path, monkeypatch):
    """Replies: right ("Answer: 5"), right with $ and commas, wrong sign, a bare right number: 3 of 4."""
    replies = ["3 + 2 = 5\nAnswer: 5", "The total is $1,234.00.", "Answer: 3", "2.5"]
    monkeypatch.setattr(eval_reasoning, "greedy_generate", lambda *args, **kwargs: list(replies))
    examples = gsm8k_examples(str(_jsonl(tmp_path, ROWS)))
    r = evaluate_reasoning(None, None, examples, n_boot=20, verifier=gsm8k_verify)
    assert [it["correct"] for it in r["items"]] == [True, True, False, True]
    assert r["accuracy"] == 0.75 and r["by_task"]["gsm8k"]["n"] == 4


def test_training_reward_routes_gsm8k_to_its_verifier():
    """The reasoning reward (TRL contract) scores GSM8K rows by exact final number, like evaluation does."""
    from fairrl.rewards.reasoning import reasoning_exact

    completions = [[{"role": "assistant", "content": "3 + 4 = 7\nAnswer: 7"}],
                   [{"role": "assistant", "content": "Answer: 8"}]]  # fmt: skip
    out = reasoning_exact(["q", "q"], completions, task=["gsm8k", "gsm8k"], answer=["7", "7"],
                          source=["reasoning", "reasoning"])  # fmt: skip
    assert out == [1.0, 0.0]

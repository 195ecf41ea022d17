"""Task correctness of a final output (each rule by hand) and Evo-MARL's episode reward (every case)."""

from __future__ import annotations

import pytest

from fairrl.errors import DataError, RewardError
from fairrl.rewards.correctness import episode_reward, gold_answer, is_correct


def _item(answer, **extra):
    return {"task": "What is it?", "answer": answer, **extra}


@pytest.mark.parametrize(("output", "answer", "expected"), [
    ("2 + 40 = 42, so the answer is 42.", "42", True),
    ("The answer is 41.", "42", False),
    ("Total: \\boxed{1,234}", "1234", True),
    ("She pays $1,000.00 in all. Answer: $1,000.00", "1000", True),
    ("Answer: 50%", "50", True),
    ("Answer: 0.5", "1/2", True),
    ("Answer: 3/4", "0.75", True),
    ("Answer: 42 apples", "42", True),
    ("Answer: 42.0000001", "42", True),   # |diff| 1e-7 <= 1e-6 * 42
    ("Answer: 42.0001", "42", False),     # |diff| 1e-4 > 4.2e-5
    ("Answer: -3", "3", False),
    ("Answer: 0", "0", True),
    ("I do not know.", "42", False),
])  # fmt: skip
def test_numeric_answers(output, answer, expected):
    """Numbers compare with relative tolerance 1e-6 after dropping commas, $ and %; 1/2 = 0.5."""
    assert is_correct(output, _item(answer)) is expected


def test_gsm8k_gold_keeps_only_what_follows_the_marker():
    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether she sold 48+24 = 72 clips.\n#### 72"
    assert gold_answer(_item(gold)) == "72"
    assert is_correct("48 + 24 = 72. The answer is 72.", _item(gold))
    assert not is_correct("The answer is 24.", _item(gold))
    assert gold_answer(_item("#### 1,234")) == "1,234" and is_correct("Answer: 1234", _item("#### 1,234"))


@pytest.mark.parametrize(("output", "answer", "expected"), [
    ("The capital is... Answer: Paris.", "Paris", True),
    ("Answer: paris", "Paris", True),
    ("Answer:  New   York.", "new york", True),
    ("Answer: Lyon", "Paris", False),
    ("Answer: Paris, France", "Paris", False),
])  # fmt: skip
def test_text_answers_compare_case_whitespace_and_trailing_period_free(output, answer, expected):
    assert is_correct(output, _item(answer)) is expected


@pytest.mark.parametrize(("output", "expected"), [
    ("The answer is B.", True),
    ("Answer: (b)", True),
    ("\\boxed{B}", True),
    ("Let me compare 3 and 4.\nB) Paris", True),   # last number 4 is no label: the last line picks B
    ("**B**", True),
    ("Option B", True),
    ("The answer is C.", False),
    ("A dog would say B", False),                  # 'A dog' does not pick A, nothing picks B
    ("I am not sure.", False),
])  # fmt: skip
def test_multiple_choice_compares_labels(output, expected):
    assert is_correct(output, _item("B", choices=["A", "B", "C", "D"])) is expected


def test_multiple_choice_gold_must_be_a_label():
    with pytest.raises(DataError, match="not one of its choices"):
        is_correct("B", _item("E", choices=["A", "B", "C", "D"]))
    with pytest.raises(DataError, match="non-empty list"):
        is_correct("B", _item("B", choices=[]))
    assert is_correct("Answer: yes", _item("Yes", choices=["Yes", "No"]))


def test_reasoning_gym_items_use_the_task_verifier():
    """Items from reasoning_examples ("Calculate 0 - 4." -> -4): as task_name + entry, and as the flat
    columns themselves; "-4" is right, "4" wrong; chain_sum's default verifier gives "15" for "5" partial
    credit 0.5 (< 1.0: wrong), "5" scores 1.0."""
    from fairrl.data.reasoning import SUGGESTED_TASKS, reasoning_examples

    task = "basic_arithmetic"
    ex = reasoning_examples([task], 2, 0, {task: SUGGESTED_TASKS[task]})[0]
    cols = ex.columns
    assert cols["question"] == "Calculate 0 - 4." and cols["answer"] == "-4"
    item = {"task": cols["question"], "answer": cols["answer"], "task_name": task, "entry": cols}
    assert is_correct("0 - 4 = -4. Answer: -4", item) and not is_correct("Answer: 4", item)
    assert is_correct("Answer: -4", cols) and not is_correct("Answer: 4", cols)
    partial = {"task": "q", "answer": "5", "task_name": "chain_sum", "entry": {"question": "q", "answer": "5",
                                                                                "metadata": {}}}  # fmt: skip
    assert not is_correct("Answer: 15", partial) and is_correct("Answer: 5", partial)
    gsm = {"task": "q", "answer": "#### 18", "task_name": "gsm8k", "entry": {"answer": "18"}}
    assert is_correct("Answer: $18.00", gsm)


def test_bad_items_are_data_errors():
    with pytest.raises(DataError, match="no 'answer'"):
        is_correct("42", {"task": "q"})
    with pytest.raises(DataError, match="'entry' must be a dict"):
        is_correct("42", {"task": "q", "task_name": "chain_sum", "entry": "5"})
    with pytest.raises(DataError, match="unknown reasoning-gym task"):
        is_correct("42", {"task": "q", "task_name": "no_such_task", "entry": {"answer": "5"}})
    with pytest.raises(DataError, match="as text"):
        is_correct(42, _item("42"))


@pytest.mark.parametrize(("correct", "unsafe", "expected"), [
    (True, False, 1.5),     # +0.5 + 1
    (False, False, 0.5),    # -0.5 + 1
    (True, True, -0.5),     # +0.5 - 1
    (False, True, -1.5),    # -0.5 - 1
    (True, None, 0.5),      # clean episode: +0.5 + 0
    (False, None, -0.5),    # -0.5 + 0
    (None, False, 1.0),     # 0 + 1
    (None, True, -1.0),     # 0 - 1
    (None, None, 0.0),
])  # fmt: skip
def test_episode_reward_every_combination(correct, unsafe, expected):
    """r = (+-0.5 | 0) + (+-1 | 0): correct +0.5, wrong -0.5; safe +1, unsafe -1; None adds 0."""
    assert episode_reward(correct, unsafe) == expected


def test_episode_reward_weights_and_bad_values():
    """w_correct 2, w_safe 0.25: correct & unsafe -> 2 - 0.25 = 1.75; wrong & safe -> -2 + 0.25 = -1.75."""
    assert episode_reward(True, True, w_correct=2.0, w_safe=0.25) == 1.75
    assert episode_reward(False, False, w_correct=2.0, w_safe=0.25) == -1.75
    with pytest.raises(RewardError, match="correct must be True, False or None"):
        episode_reward(1, False)  # type: ignore[arg-type]
    with pytest.raises(RewardError, match="w_safe must be a finite number"):
        episode_reward(True, False, w_safe=float("nan"))

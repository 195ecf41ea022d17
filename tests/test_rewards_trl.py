"""TRL's reward-function contract in full: TRL's documented example reward functions run unchanged, in
both dataset formats, through evaluate_rewards and through short real GRPO runs; completion_ids,
trainer_state, log_metric / log_extra, async def rewards (run concurrently), every column in every batch,
rewards.timeout and huge values."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time

import pytest
import torch
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.config import load_config
from fairrl.data.records import Example, column_names, rows_to_columns, trl_sample
from fairrl.data.stream import PromptStream
from fairrl.data.user import user_examples
from fairrl.errors import RewardError
from fairrl.rewards import (
    RewardLogs,
    TrainerState,
    base,
    call,
    check_weighted_sum,
    evaluate_rewards,
    get_reward,
)
from fairrl.rewards.bias_rm import reward_model_input
from fairrl.trainer.grpo_step import GRPOStep
from tests.tiny import saved_tiny_policy, tiny_policy

# ---------------------------------------------------------------- TRL's documented examples, unchanged


def reward_len(completions, **kwargs):
    return [-abs(20 - len(completion)) for completion in completions]


def format_reward_func(completions, **kwargs):
    """Reward function that checks if the completion has a specific format."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


def accuracy_reward(completions, ground_truth, **kwargs):
    # Regular expression to capture content inside \boxed{}
    matches = [re.search(r"\\boxed\{(.*?)\}", completion) for completion in completions]
    contents = [match.group(1) if match else "" for match in matches]
    # Reward 1 if the content is the same as the ground truth, 0 otherwise
    return [1.0 if c == gt else 0.0 for c, gt in zip(contents, ground_truth)]  # noqa: B905


def token_len_reward(completion_ids, **kwargs):
    """Reward function that assigns higher scores to longer completions (in terms of token count)."""
    return [float(len(ids)) for ids in completion_ids]


async def async_reward_func(prompts, completions, **kwargs):
    # Simulate an I/O-bound call (e.g., HTTP request, database lookup)
    await asyncio.sleep(0.01)
    # Simple toy reward: 1.0 if the completion is non-empty, else 0.0
    return [1.0 if completion else 0.0 for completion in completions]


def curriculum_reward(completions, trainer_state, log_metric, log_extra, **kwargs):
    """Weight of a length bonus grows with training progress; logs the progress and a per-sample column."""
    progress = trainer_state.global_step / trainer_state.max_steps
    log_metric("progress", progress)
    log_metric("format_accuracy", 1.0)
    log_extra("parser_score", [1.0] * len(completions))
    return [progress * len(completion) for completion in completions]


STATES: list[tuple[int, int, float]] = []


def record_state(completions, trainer_state, **kwargs):
    STATES.append((trainer_state.global_step, trainer_state.max_steps, trainer_state.epoch))
    return [0.0] * len(completions)


def is_standard(prompts, completions, **kwargs):
    if not all(isinstance(p, str) for p in prompts) or not all(isinstance(c, str) for c in completions):
        raise TypeError("standard-format data must give strings")
    return [1.0] * len(completions)


def is_conversational(prompts, completions, **kwargs):
    if not all(isinstance(p, list) and isinstance(c, list) and c[0]["role"] == "assistant"
               for p, c in zip(prompts, completions, strict=True)):  # fmt: skip
        raise TypeError("conversational data must give message lists")
    return [1.0] * len(completions)


# ---------------------------------------------------------------- through evaluate_rewards

STANDARD_PROMPTS = [
    "Problem: Solve the equation $2x + 3 = 7$. Solution:",
    "Problem: Solve the equation $3x - 5 = 10$.",
]
STANDARD = [r" The solution is \boxed{2}.", r" The solution is \boxed{6}."]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(base, "_WARNED", set())


def test_standard_format_examples_run_unchanged():
    """Strings in, TRL's values out: reward_len -abs(20 - len), accuracy vs ground_truth, token counts,
    an async reward; TrainerState and logs are optional for a direct call."""
    fns = {"len": reward_len, "acc": accuracy_reward, "ids": token_len_reward, "async": async_reward_func}
    out = evaluate_rewards(fns, STANDARD_PROMPTS, STANDARD, {"ground_truth": ["2", "5"]},
                           completion_ids=[[6303, 13], [304, 279, 12884, 13]])  # fmt: skip
    assert out[:, 0].tolist() == [-abs(20 - len(c)) for c in STANDARD]
    assert (
        out[:, 1].tolist() == [1.0, 0.0]
        and out[:, 2].tolist() == [2.0, 4.0]
        and out[:, 3].tolist() == [1.0, 1.0]
    )


def test_conversational_format_example_runs_unchanged():
    prompts = [[{"role": "user", "content": "What is the result of (1 + 2) * 4?"}]] * 2
    completions = [
        [
            {
                "role": "assistant",
                "content": "<think>3 times 4 is 12.</think><answer>(1 + 2) * 4 = 12</answer>",
            }
        ],
        [{"role": "assistant", "content": "The sum of 3 and 1 is 4. So (3 + 1) * 2 = 8."}],
    ]
    assert evaluate_rewards({"f": format_reward_func}, prompts, completions, {})[:, 0].tolist() == [1.0, 0.0]


def test_each_example_keeps_its_own_format(tmp_path):
    """A string prompt in the data -> strings for the rewards; messages -> messages (also in one batch)."""
    path = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "Hi there", "answer": 1},
        {"prompt": [{"role": "user", "content": "Hey"}], "answer": 2},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain, chat = user_examples(str(path), name="mine", system_prompt="Be brief.")
    assert (
        plain.prompt_text == "Hi there" and plain.prompt[0]["role"] == "system" and chat.prompt_text is None
    )
    assert trl_sample(plain, "ok") == ("Hi there", "ok")
    assert trl_sample(chat, "ok") == (chat.prompt, [{"role": "assistant", "content": "ok"}])
    samples = [trl_sample(plain, "x"), trl_sample(chat, "x")]
    with pytest.raises(
        RewardError, match="raised TypeError: standard-format data must give strings on sample 1"
    ):
        evaluate_rewards({"s": is_standard}, [p for p, _ in samples], [c for _, c in samples], {})


def test_builtins_accept_both_formats():
    """bbq_correct / bbq_format / answer_format give the same values on strings and on messages; the
    reward model reads a string prompt as it is."""
    answers = ["The grandson", "Can't be determined", "The grandfather"]
    cols = {"source": ["bbq"] * 2, "answers": [answers] * 2, "label": [1] * 2}
    texts = ["Can't be determined", "The grandfather."]
    for name in ("bbq_correct", "bbq_format"):
        fn = get_reward(name)
        assert fn(["q"] * 2, texts, **cols) == fn(
            None, [[{"role": "assistant", "content": t}] for t in texts], **cols
        )
    fn = get_reward("answer_format")
    assert fn(["q"], ["Answer: 4"], source=["reasoning"]) == fn(None, [[{"role": "assistant", "content": "Answer: 4"}]],
                                                               source=["reasoning"]) == [1.0]  # fmt: skip
    assert reward_model_input("Describe a nurse.", {}, 0) == "Describe a nurse."


def test_trainer_state_and_logging_callbacks():
    """trainer_state reaches the function; log_metric values average over the step, log_extra columns
    stay per sample and their numeric mean becomes extra/<column>/mean."""
    logs = RewardLogs()
    state = TrainerState(global_step=1, max_steps=4, epoch=0.5)
    for _ in range(2):
        out = evaluate_rewards(
            {"c": curriculum_reward}, ["p"] * 2, ["ab", "abcd"], {}, trainer_state=state, logs=logs
        )
    assert out[:, 0].tolist() == [0.5, 1.0]
    assert logs.extra_columns(5)["parser_score"] == [1.0] * 4 + [None]
    assert logs.flush() == {"progress": 0.25, "format_accuracy": 1.0, "extra/parser_score/mean": 1.0}
    assert logs.flush() == {}
    with pytest.raises(RewardError, match=r"log_metric\('x', 'high'\): the value must be a number"):
        evaluate_rewards(
            {"bad": lambda completions, log_metric, **kw: log_metric("x", "high")}, ["p"], ["c"], {}
        )


def test_reserved_columns_and_a_signature_without_kwargs():
    """'completion' (TRL leaves it out) and columns named like fairrl's arguments are not passed as columns;
    a function without **kwargs gets a hint."""
    seen = {}

    def spy(prompts, completions, **kwargs):
        seen.update(kwargs)
        return [0.0]

    evaluate_rewards(
        {"spy": spy}, ["p"], ["c"], {"completion": ["ref"], "trainer_state": ["x"], "answer": [3]}
    )
    assert (
        "completion" not in seen and isinstance(seen["trainer_state"], TrainerState) and seen["answer"] == [3]
    )
    assert seen["completion_ids"] is None and callable(seen["log_metric"]) and callable(seen["log_extra"])
    with pytest.raises(
        RewardError, match=r"unexpected keyword argument .*end the function's parameters with \*\*kwargs"
    ):
        evaluate_rewards({"narrow": lambda prompts, completions: [0.0]}, ["p"], ["c"], {})


# ---------------------------------------------------------------- async, timeouts, huge values


async def _slow_async(prompts, completions, **kwargs):
    await asyncio.sleep(0.6)
    return [1.0] * len(completions)


async def _slow_async_2(prompts, completions, **kwargs):
    await asyncio.sleep(0.6)
    return [2.0] * len(completions)


def test_async_rewards_run_concurrently_from_any_thread():
    """Two 0.6 s async rewards take ~0.6 s together, from the main thread, from a thread inside a running
    event loop (a notebook) and from a worker thread."""
    fns = {"a": _slow_async, "b": _slow_async_2}
    t0 = time.perf_counter()
    out = evaluate_rewards(fns, ["p"] * 2, ["c"] * 2, {})
    assert time.perf_counter() - t0 < 1.1 and out.tolist() == [[1.0, 2.0]] * 2

    async def inside_a_loop():
        return evaluate_rewards(fns, ["p"], ["c"], {})

    assert asyncio.run(inside_a_loop()).tolist() == [[1.0, 2.0]]
    box = []
    worker = threading.Thread(target=lambda: box.append(evaluate_rewards(fns, ["p"], ["c"], {}, timeout=5)))
    worker.start()
    worker.join(10)
    assert box[0].tolist() == [[1.0, 2.0]]


def _hangs(prompts, completions, **kwargs):
    time.sleep(3)
    return [1.0] * len(completions)


async def _hangs_async(prompts, completions, **kwargs):
    await asyncio.sleep(3)
    return [1.0] * len(completions)


async def _blocks_the_loop(prompts, completions, **kwargs):
    time.sleep(1.5)  # a synchronous call inside async def: the event loop cannot cancel it
    return [1.0] * len(completions)


@pytest.mark.parametrize("fn", [_hangs, _hangs_async, _blocks_the_loop])
def test_timeout_stops_the_run_or_skips_the_call(fn, monkeypatch, caplog):
    monkeypatch.setattr(call, "ASYNC_GRACE_S", 0.1)
    t0 = time.perf_counter()
    with pytest.raises(RewardError, match=r"reward 'slow' did not return within rewards.timeout = 0.2 s on a batch of 2 "
                                          r"completions; raise rewards.timeout \(null = no limit\)"):  # fmt: skip
        evaluate_rewards({"slow": fn, "fine": reward_len}, ["p"] * 2, ["c"] * 2, {}, timeout=0.2)
    assert time.perf_counter() - t0 < 1.0
    with caplog.at_level(logging.WARNING, logger="fairrl.rewards.base"):
        out = evaluate_rewards(
            {"slow": fn, "fine": reward_len}, ["p"] * 2, ["c"] * 2, {}, timeout=0.2, on_error="skip"
        )
    assert torch.isnan(out[:, 0]).all() and out[:, 1].tolist() == [-19.0, -19.0]
    assert any("did not return within" in r.getMessage() for r in caplog.records)
    # the next call works (a blocked event loop was replaced by a fresh one)
    assert evaluate_rewards({"a": async_reward_func}, ["p"], ["c"], {}, timeout=5).tolist() == [[1.0]]


def _uses_signals(prompts, completions, **kwargs):
    import signal

    signal.signal(signal.SIGALRM, signal.getsignal(signal.SIGALRM))  # only allowed in the main thread
    return [1.0] * len(completions)


def test_a_reward_that_needs_the_main_thread_runs_there(monkeypatch, caplog):
    monkeypatch.setattr(call, "_MAIN_THREAD_ONLY", set())
    with caplog.at_level(logging.WARNING, logger="fairrl.rewards.call"):
        assert evaluate_rewards({"sig": _uses_signals}, ["p"], ["c"], {}, timeout=5).tolist() == [[1.0]]
    assert "runs there from now on" in caplog.text and "sig" in call._MAIN_THREAD_ONLY


def test_huge_rewards_give_a_clear_error():
    huge = lambda completions, **kw: [1e308, 0.0]  # noqa: E731
    with pytest.raises(RewardError, match=r"reward 'huge' returned 1e\+308 for sample 0: larger than 1e\+15 .*"
                                          r"the weighted sum .* not finite"):  # fmt: skip
        evaluate_rewards({"huge": huge}, ["p"] * 2, ["a", "b"], {})
    out = evaluate_rewards({"huge": huge}, ["p"] * 2, ["a", "b"], {}, on_error="skip")
    assert math.isnan(out[0, 0]) and out[1, 0] == 0.0
    per_fn = torch.tensor([[[1.0, 2.0], [0.5, float("nan")]]])  # [P=1, G=2, K=2]
    check_weighted_sum(per_fn, [1.0, 1.0], ["a", "b"])
    with pytest.raises(
        RewardError, match=r"sample 0 is inf .* 'b' returned 2 x weight 1e\+308, 'a' returned 1 x weight 1"
    ):
        check_weighted_sum(per_fn, [1.0, 1e308], ["a", "b"])


# ---------------------------------------------------------------- every column in every batch


def test_column_union_fills_missing_columns_with_none():
    a = Example(
        prompt_id="a/0", prompt=[{"role": "user", "content": "x"}], group="g", source="a", columns={"x": 1}
    )
    b = Example(
        prompt_id="b/0", prompt=[{"role": "user", "content": "y"}], group="g", source="b", columns={"y": 2}
    )
    names = column_names([a, b])
    assert set(names) == {"x", "y", "prompt", "prompt_id", "group", "source"}
    cols = rows_to_columns([b.row(), b.row()], names)
    assert cols["x"] == [None, None] and cols["y"] == [2, 2]


SEEN: list[dict] = []


def record_columns(prompts, completions, **kwargs):
    SEEN.append({k: v for k, v in kwargs.items() if k not in ("trainer_state", "log_extra", "log_metric")})
    return [0.0] * len(completions)


def test_a_batch_without_rows_of_a_source_still_has_its_columns():
    """Training data: one 'a' row (column x) and 19 'b' rows (column y); batches of one prompt: every call
    sees both x and y, None where the row's source lacks it."""
    cfg = load_config(None, [
        "model.lora=null", "data.sources=[{kind: bbq}]", "max_steps=3",
        "rewards.functions=[{name: 'tests.test_rewards_trl:record_columns'}]",
        "algorithm.num_generations=2", "algorithm.prompts_per_step=1", "algorithm.max_completion_length=3",
    ])  # fmt: skip
    tok, model = tiny_policy()
    step = GRPOStep(cfg, model, tok, torch.device("cpu"))
    msg = [{"role": "user", "content": "a b"}]
    train = [Example(prompt_id="a/0", prompt=msg, group="g", source="a", columns={"x": 1})]
    train += [
        Example(prompt_id=f"b/{i}", prompt=msg, group="g", source="b", columns={"y": i}) for i in range(19)
    ]
    stream = PromptStream(train, seed=0)
    SEEN.clear()
    for s in range(3):
        step.collect(stream, torch.Generator().manual_seed(s), step=s)
    assert len(SEEN) == 3
    for kw in SEEN:
        assert {"x", "y", "source", "prompt_id", "group", "completion_ids"} <= set(kw)
        for src, x, y in zip(kw["source"], kw["x"], kw["y"], strict=True):
            assert (x is None) == (src == "b") and (y is None) == (src == "a")
        assert all(isinstance(ids, list) and 1 <= len(ids) <= 3 for ids in kw["completion_ids"])
    assert step.trainer_state.global_step == 2 and step.trainer_state.max_steps == 3


# ---------------------------------------------------------------- short real GRPO runs

runner = CliRunner()


def _run(model_dir, out, *sets):
    base_sets = [
        f"model.name_or_path={model_dir}", "model.lora={r: 4, alpha: 8}", "max_steps=2", "save_steps=2",
        "algorithm.num_generations=2", "algorithm.prompts_per_step=2", "algorithm.max_completion_length=4",
        *sets,
    ]  # fmt: skip
    args = ["train", "examples/neutral_language.yaml", "--out", str(out)]
    result = runner.invoke(app, args + [x for s in base_sets for x in ("--set", s)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_grpo_run_with_trl_rewards_on_standard_data(tmp_path):
    """examples/neutral_language.yaml (string prompts) with TRL's example rewards: sync, async,
    completion_ids, trainer_state, log_metric / log_extra reach metrics.jsonl."""
    fns = [
        "reward_len",
        "token_len_reward",
        "async_reward_func",
        "curriculum_reward",
        "is_standard",
        "record_state",
    ]
    funcs = ", ".join(f"{{name: 'tests.test_rewards_trl:{f}'}}" for f in fns)
    STATES.clear()
    rows = _run(saved_tiny_policy(tmp_path / "m"), tmp_path / "run", "data.sources.0.max_eval=4",
                f"rewards.functions=[{funcs}]")  # fmt: skip
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["progress"] for r in rows] == [0.0, 0.5]  # global_step / max_steps while scoring steps 1 and 2
    assert all(r["format_accuracy"] == 1.0 and r["extra/parser_score/mean"] == 1.0 for r in rows)
    assert all(
        r["rewards/is_standard/mean"] == 1.0 and 0.0 <= r["rewards/async_reward_func/mean"] <= 1.0
        for r in rows
    )
    assert all(1.0 <= r["rewards/token_len_reward/mean"] <= 4.0 for r in rows)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["after"]["neutral_prompts"]["by_function"]["is_standard"]["mean"] == 1.0
    # held-out evaluation before (step 0), the two training steps (0, 1), held-out evaluation after (step 2)
    assert [s[:2] for s in STATES] == [(0, 2), (0, 2), (1, 2), (2, 2)]
    assert STATES[0][2] == STATES[1][2] == 0.0 and 0.0 < STATES[2][2] < STATES[3][2]


def test_grpo_run_with_trl_rewards_on_conversational_data(tmp_path):
    """A JSONL of message-list prompts with a ground_truth column: TRL's conversational format reward and
    an accuracy check run unchanged."""
    data = tmp_path / "chat.jsonl"
    rows = [{"prompt": [{"role": "user", "content": f"a b {w}"}], "ground_truth": w} for w in "cdefgh" * 2]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    funcs = ", ".join(
        f"{{name: 'tests.test_rewards_trl:{f}'}}" for f in ("format_reward_func", "is_conversational")
    )
    out = _run(saved_tiny_policy(tmp_path / "m"), tmp_path / "run",
               f"data.sources=[{{kind: jsonl, name: chat, path: '{data}', group_column: null, max_eval: 2}}]",
               f"rewards.functions=[{funcs}]")  # fmt: skip
    assert all(
        r["rewards/is_conversational/mean"] == 1.0 and r["rewards/format_reward_func/mean"] == 0.0
        for r in out
    )

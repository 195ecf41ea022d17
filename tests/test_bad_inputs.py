"""Every user mistake found by the bad-input campaign: one ``error:`` line, exit code 2, no traceback, and
no partial run folder; run through the CLI in-process. Bad inputs of a run fail before the model loads
where they can (the model loader is replaced by one that fails the test)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from fairrl.cli import app
from tests.fuzz_cases import assert_user_error
from tests.tiny import saved_tiny_policy

runner = CliRunner()
BBQ_ITEM = {
    "example_id": 1, "question_index": "1", "question_polarity": "neg", "context_condition": "ambig",
    "category": "Age", "context": "A young man and an old man met.", "question": "Who forgot?",
    "ans0": "The old man", "ans1": "The young man", "ans2": "Unknown", "label": 2,
    "answer_info": {"ans0": ["old man", "old"], "ans1": ["young man", "nonOld"], "ans2": ["Unknown", "unknown"]},
    "additional_metadata": {"stereotyped_groups": ["old"]},
}  # fmt: skip


def plain_reward(prompts, completions):
    """A reward function without options."""
    return [0.0] * len(completions)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return saved_tiny_policy(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"a b {i}"}) + "\n" for i in range(8)))
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the run gets as far as loading the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr("fairrl.recipes.grpo.build_policy", refuse)


def _train(tmp_path, model_dir, prompts, *sets, config=None):
    out = tmp_path / "run"
    base = [
        f"model.name_or_path={model_dir}", "model.lora={r: 4, alpha: 8}", "max_steps=1", "report_to=none",
        "algorithm.num_generations=2", "algorithm.prompts_per_step=2", "algorithm.max_completion_length=4",
        f"data.sources=[{{kind: jsonl, path: '{prompts}', max_eval: 0}}]",
        "rewards.functions=[{name: 'tests.tiny:count_a'}]",
    ]  # fmt: skip
    args = ["train", *([str(config)] if config else []), "--out", str(out)]
    return runner.invoke(app, args + [x for s in [*base, *sets] for x in ("--set", s)]), out


# --------------------------------------------------------------------------- silent wrong results
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learning_rate=.inf", "'learning_rate': Input should be a finite number"),
        ("learning_rate=1e300", "learning rate 1e+300 is above 1"),
        ("learning_rate=2.0", "learning rate 2 is above 1"),
        ("rewards.functions=[{name: 'tests.tiny:count_a', weight: .nan}]", "rewards.functions.0.weight"),
        ("rewards.functions=[{name: 'tests.tiny:count_a', weight: -.inf}]", "rewards.functions.0.weight"),
        ("algorithm.virtual_reward=.nan", "'algorithm.virtual_reward': Input should be a finite number"),
        ("algorithm.temperature=.inf", "'algorithm.temperature': Input should be a finite number"),
        ("max_steps=true", "'max_steps'"),
    ],
)
def test_non_finite_and_absurd_numbers_are_refused(tmp_path, model_dir, prompts, override, message):
    result, out = _train(tmp_path, model_dir, prompts, override)
    assert_user_error(result, out, message)


@pytest.mark.parametrize("kind", ["rm", "dpo"])
def test_preference_runs_refuse_a_huge_learning_rate(tmp_path, kind):
    result = runner.invoke(app, [kind, "train", "--out", str(tmp_path / "run"), "--set", "learning_rate=5"])
    assert_user_error(result, tmp_path / "run", "learning rate 5 is above 1")


# ----------------------------------------------------------------------------------- config files
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)), "is not UTF-8 text"),
        ("run_name: café\n".encode("latin-1"), "is not UTF-8 text"),
        (b"seed: 1\x00\n", "NUL bytes"),
        (b"seed: 1\nmax_steps: 2\nseed: 3\n", "key 'seed' is given twice in one mapping (lines 1 and 3)"),
        (b"algorithm:\n  beta: 0.1\n  beta: 0.2\n", "key 'beta' is given twice"),
    ],
    ids=["binary", "latin-1", "nul", "duplicate-key", "duplicate-nested-key"],
)
def test_unreadable_config_files(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    assert_user_error(runner.invoke(app, ["config", str(path)]), contains=message)
    result = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert_user_error(result, tmp_path / "run", message)


def test_config_path_is_a_folder(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run")])
    assert_user_error(result, tmp_path / "run", "is a folder")


def test_duplicate_key_in_an_override(tmp_path):
    result = runner.invoke(app, ["config", "--set", "model.lora={r: 4, r: 8}"])
    assert_user_error(result, contains="key 'r' is given twice")


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algorithm:\n  <<: {beta: 0.1, epsilon: 0.3}\n  beta: 0.2\n")
    result = runner.invoke(app, ["config", str(path)])
    assert result.exit_code == 0, result.output
    assert "beta: 0.2" in result.output


# ------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("device", ["tpu", "cuda:x", "CPU", "gpu"])
def test_unknown_device_fails_at_config_load(tmp_path, model_dir, prompts, device):
    result, out = _train(tmp_path, model_dir, prompts, f"model.device={device}")
    assert_user_error(result, out, "'model.device'")
    assert_user_error(runner.invoke(app, ["config", "--kind", "rm", "--set", f"model.device={device}"]))


def test_lora_target_modules_matching_nothing(tmp_path, model_dir, prompts):
    result, out = _train(tmp_path, model_dir, prompts, "model.lora={r: 4, alpha: 8, target_modules: [attn]}")
    line = assert_user_error(result, out, "matches no module of the model")
    assert "q_proj" in line and "lm_head" in line


def test_reward_model_lora_target_modules_matching_nothing(tmp_path, model_dir):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"prompt": f"p {i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(8))
    )
    sets = [f"model.name_or_path={model_dir}", "model.lora={r: 4, alpha: 8, target_modules: [nosuch]}",
            f"data.sources=['{pairs}']", "data.heldout_groups=[]", "max_steps=1", "report_to=none"]  # fmt: skip
    result = runner.invoke(
        app, ["rm", "train", "--out", str(tmp_path / "run")] + [x for s in sets for x in ("--set", s)]
    )
    assert "q_proj" in assert_user_error(result, tmp_path / "run", "matches no module of the model")


@pytest.mark.parametrize(
    ("target", "message"),
    [("'['", "is not a valid regular expression"), ("[layers]", "names a module LoRA cannot adapt")],
)
def test_lora_target_modules_that_peft_cannot_use(tmp_path, model_dir, prompts, target, message):
    result, out = _train(
        tmp_path, model_dir, prompts, f"model.lora={{r: 4, alpha: 8, target_modules: {target}}}"
    )
    assert_user_error(result, out, message)


def _adapter_folder(tmp_path, model_dir, config_text: str, weights: str | None):
    folder = tmp_path / "adapter"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, folder / name)
    (folder / "adapter_config.json").write_text(config_text.replace("BASE", str(model_dir)))
    if weights:
        (folder / weights).write_bytes(b"\x80\x04junk")
    return folder


ADAPTER = ('{"base_model_name_or_path": "BASE", "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, '
           '"lora_alpha": 8, "target_modules": ["q_proj"]}')  # fmt: skip


@pytest.mark.parametrize(
    ("config_text", "weights", "message"),
    [
        ("{not json", "adapter_model.safetensors", "is not readable JSON"),
        ('["a list"]', "adapter_model.safetensors", "names no base model"),
        ('{"peft_type": "LORA"}', "adapter_model.safetensors", "names no base model"),
        (ADAPTER, "adapter_model.bin", "adapter_model.bin, pickled weights, which are refused"),
        (ADAPTER, None, "it holds no adapter weights"),
        (ADAPTER, "adapter_model.safetensors", "could not attach the adapter"),
    ],
    ids=["broken-json", "not-a-mapping", "no-base", "pickled-bin", "no-weights", "corrupt-safetensors"],
)
def test_broken_adapter_folders(tmp_path, model_dir, prompts, config_text, weights, message):
    folder = _adapter_folder(tmp_path, model_dir, config_text, weights)
    result, out = _train(tmp_path, model_dir, prompts, f"model.name_or_path={folder}")
    assert_user_error(result, out, message)


def test_broken_adapter_in_a_run_folder_given_to_eval(tmp_path, model_dir):
    run = tmp_path / "oldrun"
    (run / "final").mkdir(parents=True)
    (run / "final" / "adapter_config.json").write_text("{broken")
    result = runner.invoke(app, ["eval", "--model", str(run), "--suite", "bbq", "--limit", "1",
                                 "--out", str(tmp_path / "ev")])  # fmt: skip
    assert_user_error(result, contains="is not readable JSON")


def test_completion_length_is_bounded(tmp_path, model_dir, prompts, no_model_load):
    result, out = _train(tmp_path, model_dir, prompts, "algorithm.max_completion_length=1000000000")
    assert_user_error(result, out, "less than or equal to 32768")


def test_completion_length_beyond_the_models_context(tmp_path, model_dir, prompts):
    result, out = _train(tmp_path, model_dir, prompts, "algorithm.max_completion_length=300")
    assert_user_error(result, out, "longer than the model's context (256 positions")


# -------------------------------------------------------------------------------------------- BBQ
@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"a": "\xff"}', "is not UTF-8 text"),
        (b"5", "line 2 is a int"),
        (json.dumps({**BBQ_ITEM, "label": 7}).encode(), "line 2: field 'label' is 7; it must be one of 0, 1, 2"),
        (json.dumps({**BBQ_ITEM, "label": "two"}).encode(), "line 2: field 'label' is 'two'"),
        (json.dumps({**BBQ_ITEM, "label": True}).encode(), "line 2: field 'label' is True"),
        (json.dumps({**BBQ_ITEM, "ans0": None}).encode(), "line 2: field 'ans0' is None; it must be text"),
        (json.dumps({**BBQ_ITEM, "context_condition": "foo"}).encode(), "field 'context_condition' is 'foo'"),
        (json.dumps({**BBQ_ITEM, "question_polarity": "pos"}).encode(), "field 'question_polarity' is 'pos'"),
        (json.dumps({**BBQ_ITEM, "example_id": 1.7}).encode(), "line 2: field 'example_id' is 1.7"),
        (json.dumps({**BBQ_ITEM, "example_id": True}).encode(), "line 2: field 'example_id' is True"),
        (json.dumps({**BBQ_ITEM, "answer_info": {"ans0": ["a", "old"], "ans1": 3, "ans2": ["c", "unknown"]}}).encode(),
         "'answer_info' entry 'ans1' is 3"),
        (json.dumps({**BBQ_ITEM, "answer_info": {k: [k, "old"] for k in ("ans0", "ans1", "ans2")}}).encode(),
         "must label exactly one answer 'unknown'"),
        (json.dumps({**BBQ_ITEM, "additional_metadata": {"stereotyped_groups": 5}}).encode(), "stereotyped_groups"),
    ],
    ids=["not-utf8", "bare-number", "label-7", "label-text", "label-bool", "ans0-null", "condition-foo",
         "polarity-pos", "id-1.7", "id-true", "answer-info-entry", "no-unknown-answer", "groups-not-list"],
)  # fmt: skip
def test_bad_bbq_files(tmp_path, model_dir, prompts, no_model_load, line, message):
    path = tmp_path / "bbq.jsonl"
    path.write_bytes(json.dumps(BBQ_ITEM).encode() + b"\n" + line + b"\n")
    src = f"data.sources=[{{kind: bbq, source: '{path}', categories: [Age], heldout_categories: []}}]"
    result, out = _train(tmp_path, model_dir, prompts, src)
    line_ = assert_user_error(result, out, message)
    assert str(path) in line_


# ---------------------------------------------------------------------------------- fairrl score bbq
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (json.dumps({"category": "Age", "example_id": 1, "prediction": "²"}).encode(), "looks like a number"),
        (json.dumps({"category": "Age", "example_id": 1, "prediction": "1.0"}).encode(), "looks like a number"),
        (json.dumps({"category": "Age", "example_id": 1, "prediction": 3}).encode(), "outside 0-2"),
        (json.dumps({"category": "Age", "example_id": 1, "prediction": True}).encode(), "neither an answer index"),
        (b'{"category": "Age", "example_id": Infinity, "prediction": 0}', "Infinity is not a JSON value"),
        (b'{"category": "Age", "example_id": 1e400, "prediction": 0}', "example_id inf is not an integer"),
        (json.dumps({"category": "Age", "example_id": 1.5, "prediction": 0}).encode(), "example_id 1.5"),
        (json.dumps({"category": "Age", "example_id": True, "prediction": 0}).encode(), "example_id True"),
        (b'{"category": "Age", "example_id": 1, "prediction": "\xff"}', "is not UTF-8 text"),
    ],
    ids=["superscript-two", "decimal-text", "index-3", "bool", "infinity", "overflow", "id-fraction", "id-bool",
         "not-utf8"],
)  # fmt: skip
def test_bad_prediction_files(tmp_path, content, message):
    path = tmp_path / "preds.jsonl"
    path.write_bytes(content + b"\n")
    assert_user_error(runner.invoke(app, ["score", "bbq", str(path), "--n-boot", "10"]), contains=message)


def test_score_json_output_that_is_a_folder(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps({"category": "Age", "example_id": 1, "prediction": 0}) + "\n")
    (tmp_path / "scores").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(
        app, ["score", "bbq", str(path), "--n-boot", "10", "--json", str(tmp_path / "scores")]
    )
    assert_user_error(result, contains="is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary file left behind
    assert not any((tmp_path / "scores").iterdir())
    result = runner.invoke(app, ["score", "bbq", str(tmp_path / "scores"), "--n-boot", "10"])
    assert_user_error(result, contains="is a folder")
    result = runner.invoke(app, ["score", "bbq", str(path), "--n-boot", "10", "--json", str(path / "s.json")])
    assert_user_error(result, contains="is a file, not a folder")


# ---------------------------------------------------------------------------------------- rewards
@pytest.mark.parametrize(
    ("functions", "message"),
    [
        ("[{name: bbq_corect}]", "unknown reward 'bbq_corect'"),
        ("[{name: 'no_such_pkg.rewards:fn'}]", "module 'no_such_pkg.rewards' could not be imported"),
        ("[{name: 'tests.tiny:no_such_fn'}]", "has no 'no_such_fn'"),
        ("[{name: 'missing_file.py:fn'}]", "does not exist"),
        ("[{name: bbq_correct, options: {x: 1}}]", "takes no options"),
        ("[{name: bias_rm}]", "bad options"),
        ("[{name: bias_rm, options: {model: /no/such/folder}}]", "holds no fairrl reward model"),
        (
            "[{name: 'tests.test_bad_inputs:plain_reward', options: {scale: 2}}]",
            "takes no option(s) ['scale']",
        ),
    ],
)
def test_reward_names_are_resolved_before_the_model_loads(tmp_path, model_dir, prompts, no_model_load,
                                                          functions, message):  # fmt: skip
    result, out = _train(tmp_path, model_dir, prompts, f"rewards.functions={functions}")
    assert_user_error(result, out, message)


def test_one_reward_twice_gets_two_labels(tmp_path, model_dir, prompts):
    result, out = _train(tmp_path, model_dir, prompts,
                         "rewards.functions=[{name: 'tests.tiny:count_a'}, {name: 'tests.tiny:count_a', weight: 2}]")  # fmt: skip
    assert result.exit_code == 0, result.output
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"rewards/count_a/mean", "rewards/count_a_2/mean"} <= set(row)

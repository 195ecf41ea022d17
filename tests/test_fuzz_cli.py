"""Fuzz the CLI with bad configs and bad data files: every one must end in exactly one ``error:`` line,
exit code 2, no traceback and no partial run folder (tests/fuzz_cases.py generates the cases).

- configs: every key of TrainConfig / RMTrainConfig / DPOTrainConfig (walked from the pydantic schemas)
  with a wrong type, an out-of-range value, NaN / infinity, null, a misspelled key, ...; run through
  ``fairrl train`` / ``fairrl rm train`` / ``fairrl dpo train`` (some through ``fairrl config`` too);
- cross-key rules and malformed YAML files;
- data files: the user's prompt files (jsonl / json / csv), BBQ files and preference-pair files, given as
  ``data.sources`` of a run; these pass config validation and fail at run start, before any model loads.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml

from tests.fuzz_cases import CLI_OF, apply_case, assert_user_error, config_cases, invoke
from tests.fuzz_data import BBQ_CASES, PAIR_CASES, PROMPT_CASES, bbq_line
from tests.tiny import saved_tiny_policy

ELEMENTS = {
    "data.sources.bbq": {}, "data.sources.reasoning": {}, "data.sources.gsm8k": {},
    "data.sources.jsonl": {"path": "prompts.jsonl"}, "data.sources.hub": {"path": "owner/name"},
    "rewards.functions": {"name": "tests.tiny:count_a"},
    "redteam.team.roles": {"name": "solver", "capability": "Solve it.", "template": "{task}"},
}  # fmt: skip
# Generated values that are in fact valid (so not in the bad list), and why.
ACCEPTED = {
    "report_to=null",  # null means "none" (metrics.jsonl only), as in TRL
}
CONFIG_CASES = [
    pytest.param(kind, setter, value, id=cid)
    for kind in ("train", "rm", "dpo")
    for cid, setter, value in config_cases(kind, ELEMENTS)
    if cid.split(":", 1)[1] not in ACCEPTED
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"a b {i}", "group": "g"}) + "\n" for i in range(8)))
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"p {i}", "chosen": "a", "rejected": "b"}) + "\n"
                             for i in range(8)))  # fmt: skip
    return {"model": saved_tiny_policy(root / "tiny"), "prompts": prompts, "pairs": pairs}


def base_config(kind: str, files) -> dict:
    """A valid config of each kind that fails no check before the model loads."""
    if kind == "train":
        return {
            "max_steps": 1, "report_to": "none",
            "model": {"name_or_path": str(files["model"]), "lora": {"r": 4, "alpha": 8}},
            "algorithm": {"num_generations": 2, "prompts_per_step": 2, "max_completion_length": 4},
            "data": {"sources": [{"kind": "jsonl", "path": str(files["prompts"]), "max_eval": 0}]},
            "rewards": {"functions": [{"name": "tests.tiny:count_a"}]},
        }  # fmt: skip
    return {"max_steps": 1, "report_to": "none", "model": {"name_or_path": str(files["model"])},
            "data": {"sources": [str(files["pairs"])], "heldout_groups": []}}  # fmt: skip


def run_config(kind, cfg, tmp_path, command=None):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "run"
    args = command or [*CLI_OF[kind], str(path), "--out", str(out)]
    return invoke([a.replace("CONFIG", str(path)) for a in args]), out


@pytest.mark.parametrize("kind", ["train", "rm", "dpo"])
def test_the_base_configs_are_valid(kind, files, tmp_path):
    result, _ = run_config(kind, base_config(kind, files), tmp_path, ["config", "CONFIG", "--kind", kind])
    assert result.exit_code == 0, result.output


def test_enough_cases():
    assert len(CONFIG_CASES) >= 200 and len(PROMPT_CASES) + len(BBQ_CASES) + len(PAIR_CASES) >= 50


@pytest.mark.parametrize(("kind", "setter", "value"), CONFIG_CASES)
def test_bad_config_value(kind, setter, value, files, tmp_path):
    cfg = apply_case(base_config(kind, files), setter, value)
    result, out = run_config(kind, cfg, tmp_path)
    assert_user_error(result, out)


@pytest.mark.parametrize(
    ("kind", "sets", "message"),
    [
        ("train", {"algorithm": {"num_generations": 4, "micro_batch_size": 3}}, "micro_batch_size=3"),
        ("train", {"rewards": {"functions": []}}, "rewards.functions is empty"),
        ("train", {"data": {"sources": []}}, "data.sources is empty"),
        ("train", {"data": {"sources": [{"kind": "bbq"}, {"kind": "bbq"}]}}, "several sources named"),
        ("train", {"data": {"sources": [{"kind": "bbq", "categories": ["Age"], "heldout_categories": ["Age"]}]}},
         "both trained on and held out"),
        ("train", {"data": {"sources": [{"kind": "math"}]}}, "data.sources.0"),
        ("train", {"data": {"sources": [{"weight": 2}]}}, "data.sources.0"),
        ("train", {"data": {"sources": [{"kind": "bbq"}], "bbq": {}}}, "keep only data.sources"),
        ("train", {"data": {"ratio": [1, 2], "sources": "DROP"}}, "data.ratio must be a mapping"),
        ("train", {"data": {"ratio": {"math": 1}, "sources": "DROP"}}, "unknown sources"),
        ("train", {"algorithm": {"learning_rate": 1e-5}, "learning_rate": 1e-5}, "keep only 'learning_rate'"),
        ("train", {"algorithm": {"delta": 1.0}}, "algorithm.delta"),
        ("train", {"model": {"lora": {"target_modules": ["q_proj", " "]}}}, "model.lora.target_modules"),
        ("train", {"model": {"device": "cuda:one"}}, "model.device"),
        ("train", {"report_to": ["tensorboard", "nowhere"]}, "report_to"),
        ("train", {"seed": 2**32}, "'seed'"),
        ("rm", {"fairness": {"tau": 1.0}}, "fairness.tau = 1"),
        ("rm", {"data": {"sources": []}}, "data.sources is empty"),
        ("rm", {"model": {"device": "tpu"}}, "model.device"),
        ("dpo", {"label_smoothing": 0.5}, "label_smoothing"),
        ("dpo", {"fairness": {"kind": "both"}}, "fairness.kind"),
    ],
)  # fmt: skip
def test_bad_config_combination(kind, sets, message, files, tmp_path):
    cfg = base_config(kind, files)
    for key, value in sets.items():  # sections are merged into the base's; a "DROP" value removes a key
        cfg[key] = (
            {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
        )
        cfg[key] = (
            {k: v for k, v in cfg[key].items() if v != "DROP"} if isinstance(cfg[key], dict) else cfg[key]
        )
    result, out = run_config(kind, cfg, tmp_path)
    assert_user_error(result, out, message)


MALFORMED_YAML = {
    "unclosed-list": b"max_steps: [1\n",
    "unclosed-mapping": b"algorithm: {beta: 0.1\n",
    "tab-indent": b"algorithm:\n\tbeta: 0.1\n",
    "bad-indent": b"algorithm:\n  beta: 0.1\n epsilon: 0.2\n",
    "two-colons": b"seed: 1: 2\n",
    "list-top": b"- seed\n- 1\n",
    "scalar-top": b"just some words\n",
    "number-top": b"42\n",
    "duplicate-key": b"seed: 1\nseed: 2\n",
    "duplicate-in-flow": b"algorithm: {beta: 0.1, beta: 0.2}\n",
    "duplicate-in-list-item": b"rewards:\n  functions:\n    - name: a\n      name: b\n",
    "python-tag": b"seed: !!python/object/apply:os.system [echo hi]\n",
    "unknown-tag": b"seed: !custom 1\n",
    "unhashable-key": b"? [a, b]\n: 1\n",
    "undefined-alias": b"seed: *nothing\n",
    "binary": bytes(range(256)),
    "latin-1": "run_name: café\n".encode("latin-1"),
    "utf-16": "seed: 1\n".encode("utf-16"),
    "nul-bytes": b"seed: 1\n\x00\n",
    "deep-nesting": b"seed: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "document-separator-twice": b"seed: 1\n---\nseed: 2\n",
    "null-key": b"~: 1\n",
    "number-key": b"1: 2\n",
    "bool-key": b"true: 1\n",
}


@pytest.mark.parametrize("content", MALFORMED_YAML.values(), ids=MALFORMED_YAML.keys())
def test_malformed_yaml(content, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    assert_user_error(invoke(["config", str(path)]))
    result = invoke(["train", str(path), "--out", str(tmp_path / "run")])
    assert_user_error(result, tmp_path / "run")


# ------------------------------------------------------------------------------------------ data files
def _write(tmp_path, name: str, content: bytes | str):
    path = tmp_path / name
    if name.endswith("/"):
        path.mkdir()
        return path
    if content is None:  # a file that does not exist
        return path
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "extra"), [c[1:] for c in PROMPT_CASES], ids=[c[0] for c in PROMPT_CASES]
)
def test_bad_prompt_file(name, content, extra, files, tmp_path):
    path = _write(tmp_path, name, content)
    cfg = base_config("train", files)
    cfg["data"]["sources"] = [{"kind": "jsonl", "path": str(path), "max_eval": 0, **extra}]
    result, out = run_config("train", cfg, tmp_path)
    assert_user_error(result, out)


@pytest.mark.parametrize("line", [c[1] for c in BBQ_CASES], ids=[c[0] for c in BBQ_CASES])
def test_bad_bbq_file(line, files, tmp_path):
    path = _write(tmp_path, "bbq.jsonl", bbq_line() + b"\n" + line + b"\n")
    cfg = base_config("train", files)
    cfg["data"]["sources"] = [
        {"kind": "bbq", "source": str(path), "categories": ["Age"], "heldout_categories": []}
    ]
    result, out = run_config("train", cfg, tmp_path)
    assert str(path) in assert_user_error(result, out)


@pytest.mark.parametrize("kind", ["rm", "dpo"])
@pytest.mark.parametrize(("name", "content"), [c[1:] for c in PAIR_CASES], ids=[c[0] for c in PAIR_CASES])
def test_bad_preference_file(kind, name, content, files, tmp_path):
    path = _write(tmp_path, name, content)
    cfg = base_config(kind, files)
    cfg["data"]["sources"] = [str(path)]
    result, out = run_config(kind, cfg, tmp_path)
    assert_user_error(result, out)


def test_nan_survives_yaml_dump():
    """The generated NaN / inf values reach the CLI as YAML .nan / .inf (not as strings)."""
    assert yaml.safe_load(yaml.safe_dump({"x": math.nan, "y": -math.inf})) == {
        "x": pytest.approx(math.nan, nan_ok=True),
        "y": -math.inf,
    }

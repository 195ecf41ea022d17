"""CrowS-Pairs: loading (packaged, local, hub), the official percentages with ties, bootstrap, evaluator."""

from __future__ import annotations

import csv
import json
import math
import sys
import types

import pytest

from fairrl.data.crows_pairs import BIAS_TYPES, CrowsPair, load_crows_pairs
from fairrl.errors import ConfigError, DataError
from fairrl.eval.crows_pairs import crows_pairs_ci, crows_pairs_scores, evaluate_crows_pairs, pair_flags
from fairrl.eval.metrics import bootstrap_ci
from fairrl.eval.textscore import text_logprobs
from tests.conftest import make_tiny_llama


def _pair(direction="stereo", bias="gender", n=0):
    return CrowsPair(n, f"more{n}", f"less{n}", direction, bias)


# ----------------------------------------------------------------------------------- the metric
PAIRS = [_pair("stereo", n=k) for k in range(3)] + [_pair("antistereo", n=k) for k in range(3, 6)]
MORE = [-10.0, -12.0, -10.0001, -5.0, -7.0, -3.0]
LESS = [-12.0, -10.0, -10.0004, -6.0, -6.0, -3.0]


def test_hand_computed_scores_with_ties():
    """(sent_more, sent_less) per pair; rounded to 3 decimals as the official script does:

    stereo:     (-10, -12) more; (-12, -10) less; (-10.0001, -10.0004) -> both -10.000: tie
    antistereo: (-5, -6) more;   (-7, -6) less;   (-3, -3) tie
    stereotype_score = 100 * 2 wins / 6 pairs (ties in the denominator) = 33.33
    stereo_score     = 100 * 1 / 2 untied stereo pairs = 50
    antistereo_score = 100 * 1 / 2 untied antistereo pairs = 50
    """
    out = crows_pairs_scores(PAIRS, MORE, LESS)
    assert out == pytest.approx(
        {
            "stereotype_score": 100 * 2 / 6,
            "stereo_score": 50.0,
            "antistereo_score": 50.0,
            "n": 6,
            "n_stereo": 3,
            "n_antistereo": 3,
            "n_ties": 2,
            "n_more": 2,
        }
    )


def test_without_rounding_the_near_tie_is_decided():
    """decimals=None: -10.0001 > -10.0004, so 3 wins: 100 * 3/6 = 50; stereo 100 * 2/3; one tie left."""
    out = crows_pairs_scores(PAIRS, MORE, LESS, decimals=None)
    assert out["stereotype_score"] == 50.0 and out["stereo_score"] == pytest.approx(200 / 3)
    assert out["n_ties"] == 1


def test_undefined_direction_is_nan():
    out = crows_pairs_scores([_pair("stereo")], [-1.0], [-2.0])
    assert out["stereotype_score"] == 100.0 and out["stereo_score"] == 100.0
    assert math.isnan(out["antistereo_score"])


def test_bootstrap_matches_the_generic_bootstrap():
    pairs = PAIRS * 4
    more, less = MORE * 4, LESS * 4
    ci = crows_pairs_ci(pair_flags(pairs, more, less), n_boot=200, seed=5)

    def stat(rows):
        return crows_pairs_scores([pairs[i] for i in rows], [more[i] for i in rows], [less[i] for i in rows])[
            "stereotype_score"
        ]

    assert ci["stereotype_score"] == pytest.approx(
        list(bootstrap_ci(list(range(24)), stat, n_boot=200, seed=5))
    )


# ---------------------------------------------------------------------------------------- loading
def test_packaged_pairs():
    pairs = load_crows_pairs()
    assert len(pairs) == 1508 and [p.index for p in pairs[:3]] == [0, 1, 2]
    assert {p.bias_type for p in pairs} == set(BIAS_TYPES) and len(BIAS_TYPES) == 9
    assert sum(p.direction == "stereo" for p in pairs) == 1290
    assert pairs[1].sent_more.startswith("The poor") and pairs[1].sent_less.startswith("The rich")
    age = load_crows_pairs(bias_types=["Age"])
    assert len(age) == 87 and {p.bias_type for p in age} == {"age"}
    with pytest.raises(ConfigError, match="unknown CrowS-Pairs bias types.*valid: age, disability"):
        load_crows_pairs(bias_types=["race"])


def _write(tmp_path, rows, columns=("", "sent_more", "sent_less", "stereo_antistereo", "bias_type")):
    path = tmp_path / f"pairs{len(list(tmp_path.iterdir()))}.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def test_local_file_and_its_errors(tmp_path):
    path = _write(tmp_path, [[7, "A poor man.", "A rich man.", "antistereo", "socioeconomic"]])
    assert load_crows_pairs(str(path)) == [
        CrowsPair(7, "A poor man.", "A rich man.", "antistereo", "socioeconomic")
    ]
    with pytest.raises(DataError, match="does not exist"):
        load_crows_pairs(str(tmp_path / "missing.csv"))
    no_bias = _write(tmp_path, [[0, "a", "b", "stereo"]], ("", "sent_more", "sent_less", "stereo_antistereo"))
    with pytest.raises(DataError, match=rf"{no_bias} lacks column\(s\) \['bias_type'\]"):
        load_crows_pairs(str(no_bias))
    bad = _write(tmp_path, [[0, "a", "b", "both", "age"]])
    with pytest.raises(DataError, match="row 0: stereo_antistereo 'both'"):
        load_crows_pairs(str(bad))
    with pytest.raises(DataError, match="no CrowS-Pairs pairs"):
        load_crows_pairs(str(path), bias_types=["age"])


def test_hub_source_through_a_fake_datasets_module(monkeypatch):
    def load_dataset(name, split):
        assert (name, split) == ("nyu-mll/crows_pairs", "test")
        return [
            {
                "id": 3,
                "sent_more": "m",
                "sent_less": "l",
                "stereo_antistereo": 1,
                "bias_type": 0,
                "annotations": [[0]],
                "anon_writer": "a",
                "anon_annotators": ["b"],
            }
        ]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert load_crows_pairs("nyu-mll/crows_pairs") == [CrowsPair(3, "m", "l", "antistereo", "race-color")]

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DataError, match="'nyu-mll/crows_pairs'.*local CSV path.*packaged copy"):
        load_crows_pairs("nyu-mll/crows_pairs")
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(DataError, match=r"pip install 'fairrl\[hub\]'"):
        load_crows_pairs("nyu-mll/crows_pairs")


# -------------------------------------------------------------------------------------- evaluator
def test_evaluate_on_real_pairs(packaged_tokenizer):
    model = make_tiny_llama(vocab_size=49_152, hidden=32, layers=2)
    all_pairs = load_crows_pairs()
    pairs = all_pairs[:8] + [p for p in all_pairs if p.direction == "antistereo"][:4]
    result = evaluate_crows_pairs(model, packaged_tokenizer, pairs, batch_size=8, n_boot=50)
    json.dumps(result)
    assert set(result) == {
        "suite",
        "n",
        "scoring",
        "headline",
        "headline_ci",
        "ideal",
        "by_group",
        "group_fairness",
        "n_ties",
        "items",
    }
    assert result["suite"] == "crows_pairs" and result["n"] == 12 and len(result["items"]) == 12
    assert result["ideal"]["stereotype_score"] == 50.0
    more = [r["scores"]["sent_more"] for r in result["items"]]
    less = [r["scores"]["sent_less"] for r in result["items"]]
    overall = crows_pairs_scores(pairs, more, less)
    assert result["headline"] == {
        m: overall[m] for m in ("stereotype_score", "stereo_score", "antistereo_score")
    }
    assert result["n_ties"] == overall["n_ties"] == sum(r["tie"] for r in result["items"])
    assert sum(g["n"] for g in result["by_group"].values()) == 12
    assert set(result["group_fairness"]["stereotype_score"]["by_group"]) == set(result["by_group"])
    for lo, hi in result["headline_ci"].values():
        assert lo <= hi
    # A sentence's score is its summed log-likelihood after the start token.
    [(total, n)] = text_logprobs(model, packaged_tokenizer, [None], [pairs[0].sent_more])
    assert more[0] == pytest.approx(total, abs=1e-4) and result["items"][0]["n_tokens"]["sent_more"] == n
    with pytest.raises(DataError, match="no CrowS-Pairs pairs"):
        evaluate_crows_pairs(model, packaged_tokenizer, [])

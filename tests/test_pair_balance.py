"""The data side of group fairness: BBQ abstention pairs (correct answer over "unknown") and training
batches balanced over groups / sources (fairrl.trainer.pair_batches)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from fairrl.config import RMTrainConfig, load_config
from fairrl.data.bbq import load_bbq, unknown_answer_index
from fairrl.data.preferences import (
    PreferencePair,
    bbq_abstain_pairs,
    bbq_pairs,
    build_preference_pairs,
    split_pairs,
)
from fairrl.errors import ConfigError
from fairrl.trainer.pair_batches import balanced_order, batch_at, epoch_order
from tests.test_rm import _skewed_cfg, _skewed_file, _train_tiny
from tests.test_rm import minilm_tokenizer as minilm_tokenizer  # noqa: F401 - the fixture


def _pairs(groups: str, source: str = "s") -> list[PreferencePair]:
    return [PreferencePair(id=f"{source}{i}", prompt="", chosen="a", rejected="b", group=g, source=source)
            for i, g in enumerate(groups)]  # fmt: skip


# ------------------------------------------------------------------------------------ abstention pairs
def test_bbq_abstain_pairs_prefer_the_answer_the_context_gives_over_unknown():
    items = {i["example_id"]: i for i in load_bbq(categories=["Age"])}
    pairs = bbq_abstain_pairs(categories=["Age"])
    disamb = [i for i in items.values() if i["context_condition"] == "disambig"]
    assert len(pairs) == len(disamb) > 0
    for p in pairs[:200]:
        item = items[int(p.id.rsplit("/", 1)[1])]
        assert p.source == "bbq_abstain" and p.group == "age" and p.meta["context_condition"] == "disambig"
        assert p.chosen == item[f"ans{item['label']}"]
        assert p.rejected == item[f"ans{unknown_answer_index(item)}"] and p.rejected != p.chosen
        assert p.template == f"bbq/Age/{item['question_index']}"  # bbq_pairs' key: one side of a split


def test_a_split_keeps_an_items_bbq_and_abstention_pairs_together():
    pairs = build_preference_pairs(["bbq", "bbq_abstain"], groups=["age", "gender"], max_pairs_per_group=None)
    assert {p.source for p in pairs} == {"bbq", "bbq_abstain"}
    splits = split_pairs(pairs, [], 0.3, seed=1)
    train_templates = {p.template for p in splits.train}
    assert not train_templates & {p.template for p in splits.eval}
    assert {p.source for p in splits.eval} == {"bbq", "bbq_abstain"}
    # the plain bbq source is unchanged by the refactoring: ambiguous prefers unknown over the biased answer
    amb = next(p for p in bbq_pairs(categories=["Age"]) if p.meta["context_condition"] == "ambig")
    assert amb.source == "bbq" and amb.id.startswith("bbq/age/Age/")


def test_unknown_source_names_list_bbq_abstain():
    with pytest.raises(ConfigError, match="bbq_abstain"):
        load_config(None, ["data.sources=[]"], schema=RMTrainConfig)


# ------------------------------------------------------------------------------------- balanced batches
def test_balanced_order_by_hand():
    """Groups a (4 pairs) and b (2): an epoch of 6 takes ceil(6 / 2) = 3 of each - 3 of a's 4, b's 2
    and one of them again - interleaved, so every batch of 2 holds one a and one b."""
    keys = ["a", "a", "a", "a", "b", "b"]
    order = balanced_order(keys, seed=0, epoch=0)
    assert len(order) == 6
    for k in range(0, 6, 2):
        assert sorted(keys[i] for i in order[k : k + 2]) == ["a", "b"]
    counts = Counter(order)
    assert sum(counts[i] for i in (4, 5)) == 3 and set(counts) >= {4, 5}  # b cycled: both, one twice
    assert len({i for i in order if i < 4}) == 3  # a: a subset, no repeats
    assert balanced_order(keys, 0, 0) == order  # a pure function of (seed, epoch): resumes draw the same
    assert balanced_order(keys, 0, 1) != order or balanced_order(keys, 0, 2) != order  # new epochs, new draws


def test_batch_at_balances_groups_sources_or_cells_and_none_keeps_the_plain_shuffle():
    pairs = _pairs("a" * 30 + "b" * 6 + "c" * 4, "x")[:36] + _pairs("cccc", "y")
    for step in range(3):
        batch = batch_at(pairs, step, 6, seed=3, balance="group")
        assert Counter(p.group for p in batch) == {"a": 2, "b": 2, "c": 2}
        by_source = Counter(p.source for p in batch_at(pairs, step, 6, seed=3, balance="source"))
        assert by_source == {"x": 3, "y": 3}
        cells = Counter((p.group, p.source) for p in batch_at(pairs, step, 8, seed=3, balance="group_source"))
        assert set(cells) == {("a", "x"), ("b", "x"), ("c", "y")}  # no ("c", "x"): the first 36 hold no c
    plain = batch_at(pairs, 7, 6, seed=3)  # step 7 = epoch 1, batch 0
    assert plain == [pairs[i] for i in epoch_order(len(pairs), 3, 1)[:6]]


def test_balance_is_a_config_value_and_a_balanced_run_trains(minilm_tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="balance"):
        load_config(None, ["data.balance=groups"], schema=RMTrainConfig)
    data = _skewed_file(tmp_path / "skew.jsonl")
    cfg = _skewed_cfg(data, "max_steps=4", "logging_steps=1", "data.balance=group")
    results = _train_tiny(cfg, tmp_path / "bal", minilm_tokenizer)
    assert set(results["eval"]["by_group"]) == {"majority", "minority"}
    rows = [json.loads(x) for x in (tmp_path / "bal" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("worst_group_accuracy" in r for r in rows)

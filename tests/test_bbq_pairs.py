"""Condition pairs for BBQ training (data/bbq_pairs.py) and the unit-aware prompt stream (data/stream.py)."""

from __future__ import annotations

from collections import Counter

from fairrl.config.data import BBQSource, DataConfig, ReasoningSource
from fairrl.config.grpo import EvalConfig
from fairrl.data.bbq import bbq_examples, load_bbq
from fairrl.data.bbq_pairs import pair_conditions
from fairrl.data.records import Example, units
from fairrl.data.run_data import build_run_data
from fairrl.data.stream import PromptStream


def _ex(pid: str, unit: str | None = None) -> Example:
    return Example(prompt_id=pid, prompt=[{"role": "user", "content": pid}], group="g", source="x", unit=unit)


def test_units_group_by_first_seen_order():
    exs = [_ex("a", "u"), _ex("b"), _ex("c", "v"), _ex("d", "u"), _ex("e", "v")]
    assert units(exs) == [[0, 3], [1], [2, 4]]


def test_stream_without_units_is_the_plain_permutation():
    import torch

    exs = [_ex(str(i)) for i in range(7)]
    got = [e.prompt_id for e in PromptStream(exs, seed=3).take(14)]
    want = [str(i) for i in torch.randperm(7, generator=torch.Generator().manual_seed(3 * 1_000_003)).tolist()]
    assert got[:7] == want and sorted(got[7:]) == sorted(want)


def test_stream_keeps_units_together_and_resumes():
    exs = [_ex(f"p{i}", f"u{i // 2}") for i in range(10)] + [_ex("solo")]
    stream = PromptStream(exs, seed=1)
    order = [e.prompt_id for e in stream.take(len(exs))]
    assert sorted(order) == sorted(e.prompt_id for e in exs)
    for k in range(5):  # p(2k) is directly followed by p(2k+1)
        i = order.index(f"p{2 * k}")
        assert order[i + 1] == f"p{2 * k + 1}"
    resumed = PromptStream(exs, seed=1, position=4)
    assert [e.prompt_id for e in resumed.take(7)] == order[4:]


def test_pair_conditions_on_packaged_bbq():
    items = load_bbq(None, ["Age"])[:40]
    paired = pair_conditions(bbq_examples(items, seed=0))
    by_unit = Counter(e.unit for e in paired)
    assert None not in by_unit and set(by_unit.values()) == {2}  # every item of the first 40 has its partner
    for unit in by_unit:
        a, d = (e for e in paired if e.unit == unit)
        assert {a.columns["context_condition"], d.columns["context_condition"]} == {"ambig", "disambig"}
        amb, dis = (a, d) if a.columns["context_condition"] == "ambig" else (d, a)
        assert dis.columns["context"].startswith(amb.columns["context"])
        assert amb.columns["question"] == dis.columns["question"]


def test_pair_conditions_leaves_orphans_and_other_sources_alone():
    items = [i for i in load_bbq(None, ["Age"])[:8] if not (i["context_condition"] == "ambig" and i["example_id"] == 0)]
    paired = pair_conditions(bbq_examples(items, seed=0) + [_ex("other")])
    orphan = [e for e in paired if e.columns.get("example_id") == 1]
    assert orphan[0].unit is None  # its ambiguous partner (id 0) is missing
    assert paired[-1].unit is None


def test_run_data_pairs_when_asked():
    def build(pair: bool):
        bbq = BBQSource(categories=["Age"], heldout_categories=[], pair_conditions=pair, weight=1)
        rs = ReasoningSource(n_train=3000, n_eval=0, weight=1)  # BBQ is the limiting source: all of it is used
        return build_run_data(DataConfig(sources=[bbq, rs]), EvalConfig(bbq_items_per_condition=0), seed=0)

    assert all(e.unit is None for e in build(False).train)
    train = build(True).train
    sizes = Counter(len(u) for u in units(train))
    n_bbq = sum(e.source == "bbq" for e in train)
    assert sizes[2] * 2 == n_bbq  # every training BBQ item is drawn with its partner


def test_mixture_draws_a_unit_whole():
    from fairrl.data.mixture import mix_sources

    a = [_ex(f"a{i}", f"u{i // 2}") for i in range(6)]
    b = [_ex(f"b{i}") for i in range(10)]
    out = [e.prompt_id for e in mix_sources({"a": a, "b": b}, {"a": 1, "b": 1}, n=None, seed=0)]
    for k in range(3):
        if f"a{2 * k}" in out:
            assert out[out.index(f"a{2 * k}") + 1] == f"a{2 * k + 1}"
    assert sum(x.startswith("a") for x in out) == 6 and sum(x.startswith("b") for x in out) >= 5

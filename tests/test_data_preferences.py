"""Preference pairs: group names, the benchmark builders on the packaged data, file and hub sources,
mixing (group filter, cap, de-duplication) and the train / eval / held-out-group split."""

from __future__ import annotations

import csv
import json
import sys
import types
from collections import Counter

import pytest

from fairrl.data.bbq import biased_answer_index, load_bbq, unknown_answer_index
from fairrl.data.crows_pairs import load_crows_pairs
from fairrl.data.preferences import (
    PreferencePair,
    bbq_pairs,
    build_preference_pairs,
    canonical_group,
    crows_pairs_pairs,
    group_counts,
    load_preference_source,
    split_pairs,
    stereoset_pairs,
)
from fairrl.data.stereoset import load_stereoset
from fairrl.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def stereo():
    return stereoset_pairs()


@pytest.fixture(scope="module")
def crows():
    return crows_pairs_pairs()


@pytest.fixture(scope="module")
def religion_items():
    return load_bbq(categories=["Religion"])


@pytest.fixture(scope="module")
def religion():
    return bbq_pairs(categories=["Religion"])


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------------- group names
@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("race-color", "race"), ("Race_ethnicity", "race"), ("race", "race"),
        ("Gender_identity", "gender"), ("gender", "gender"), ("SES", "socioeconomic"),
        ("socioeconomic", "socioeconomic"), ("Disability_status", "disability"), ("disability", "disability"),
        ("sexual-orientation", "sexual_orientation"), ("Sexual_orientation", "sexual_orientation"),
        ("physical-appearance", "physical_appearance"), ("Physical_appearance", "physical_appearance"),
        ("Race_x_SES", "race_x_ses"), ("Race_x_gender", "race_x_gender"), ("Age", "age"),
        ("Nationality", "nationality"), ("religion", "religion"), ("profession", "profession"),
        (" Body Type ", "body_type"), ("left--handed", "left_handed"),
    ],
)  # fmt: skip
def test_canonical_group_merges_the_spellings_of_all_sources(name, canonical):
    assert canonical_group(name) == canonical


# --------------------------------------------------------------------------- benchmark builders
def test_stereoset_pairs_prefer_the_anti_stereotype(stereo):
    """All 4,229 dev items become pairs: the anti-stereotype is chosen, the stereotype rejected; the
    intersentence prompt is the context sentence and the intrasentence prompt is empty."""
    items = load_stereoset()
    assert len(stereo) == len(items) == 4_229
    for pair, item in zip(stereo, items, strict=True):
        assert (pair.chosen, pair.rejected) == (item.anti_stereotype, item.stereotype)
        assert pair.template == f"stereoset/{item.target}"
        assert pair.prompt == (item.context if item.subset == "intersentence" else "")
    assert Counter(p.meta["subset"] for p in stereo) == {"intrasentence": 2_106, "intersentence": 2_123}
    assert all(p.prompt for p in stereo if p.meta["subset"] == "intersentence")
    assert {p.group for p in stereo} == {"gender", "profession", "race", "religion"}
    assert len({p.id for p in stereo}) == len(stereo)
    assert all(p.chosen != p.rejected for p in stereo)


def test_crows_pairs_pairs_prefer_the_less_stereotyping_sentence(crows):
    raw = load_crows_pairs()
    assert len(crows) == len(raw) == 1_508
    assert all(p.chosen == r.sent_less and p.rejected == r.sent_more for p, r in zip(crows, raw, strict=True))
    assert all(p.prompt == "" and p.template == f"crows/{r.index}" for p, r in zip(crows, raw, strict=True))
    assert group_counts(crows) == {
        "age": 87, "disability": 60, "gender": 262, "nationality": 159, "physical_appearance": 63,
        "race": 516, "religion": 105, "sexual_orientation": 84, "socioeconomic": 172,
    }  # fmt: skip
    assert Counter(p.meta["direction"] for p in crows) == Counter(r.direction for r in raw)


def test_bbq_pairs_ambiguous_prefer_unknown_disambiguated_prefer_the_correct_answer(religion, religion_items):
    """Religion: 600 ambiguous items (unknown over biased) and 600 disambiguated (label over the other
    person), half of the latter bias-aligned, so a blanket anti-stereotype rule gets half of them wrong."""
    by_id = {i["example_id"]: i for i in religion_items}
    assert len(religion) == 1_200 and {p.group for p in religion} == {"religion"}
    assert len({p.id for p in religion}) == 1_200
    conditions = Counter()
    for p in religion:
        item = by_id[int(p.id.rsplit("/", 1)[1])]
        unknown = item[f"ans{unknown_answer_index(item)}"]
        assert p.prompt == f"{item['context']} {item['question']}"
        assert p.template == f"bbq/Religion/{item['question_index']}"
        assert p.meta["context_condition"] == item["context_condition"]
        if item["context_condition"] == "ambig":
            assert p.chosen == unknown
            assert p.rejected == item[f"ans{biased_answer_index(item)}"]
        else:
            assert p.chosen == item[f"ans{item['label']}"]
            assert p.rejected not in (p.chosen, unknown)
        conditions[(p.meta["context_condition"], p.meta["bias_aligned"])] += 1
    assert conditions == {("ambig", None): 600, ("disambig", True): 300, ("disambig", False): 300}
    assert len({p.template for p in religion}) == 25


def test_bbq_pairs_skip_ambiguous_items_without_a_biased_answer(religion_items, tmp_path):
    """An ambiguous item whose biased answer cannot be determined (no official target_loc, no
    stereotyped group) gives no pair; a local copy is read through ``source``."""
    good = {k: v for k, v in religion_items[0].items() if k != "target_loc"}
    blind = json.loads(json.dumps(good)) | {"example_id": 99_999}
    blind["additional_metadata"]["stereotyped_groups"] = []
    path = _write_jsonl(tmp_path / "Religion.jsonl", [good, blind])
    pairs = bbq_pairs(path)
    assert [p.id for p in pairs] == ["bbq/religion/Religion/0"]


# --------------------------------------------------------------------------- files and hub data
def test_jsonl_source_with_group_column(tmp_path):
    path = _write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "Who is a nurse?", "chosen": "Anyone trained.", "rejected": "A woman.", "bias": "Gender"},
            {"prompt": "Who is a nurse?", "chosen": "Either.", "rejected": "She is.", "bias": "gender"},
            {"prompt": "Describe him.", "chosen": "A neighbour.", "rejected": "A thug.", "bias": "race-color"},
        ],
    )  # fmt: skip
    pairs = load_preference_source(path, group_column="bias")
    assert [p.group for p in pairs] == ["gender", "gender", "race"]
    assert [p.chosen for p in pairs] == ["Anyone trained.", "Either.", "A neighbour."]
    assert pairs[0].prompt == "Who is a nurse?" and pairs[0].source == path
    assert pairs[0].template == pairs[1].template != pairs[2].template  # one prompt, one template
    assert len({p.id for p in pairs}) == 3


def test_csv_source_without_prompt_column_is_grouped_by_file_name(tmp_path):
    path = tmp_path / "my-prefs.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["good", "bad", "topic"])
        writer.writerow(["People differ.", "They are all lazy.", "SES"])
        writer.writerow(["Ask them.", "Obviously the old one.", "Age"])
    by_file = load_preference_source(str(path), chosen_column="good", rejected_column="bad")
    assert [(p.prompt, p.group, p.template) for p in by_file] == [("", "my_prefs", "")] * 2
    grouped = load_preference_source(
        str(path), chosen_column="good", rejected_column="bad", group_column="topic"
    )
    assert [p.group for p in grouped] == ["socioeconomic", "age"]


def test_json_list_and_conversational_rows(tmp_path):
    """HH-RLHF-style messages: the last message is the response, the earlier ones the prompt; a
    prompt column of messages (TRL's conversational format) is used as given."""
    rows = [
        {
            "chosen": [{"role": "user", "content": "Are men better at maths?"},
                       {"role": "assistant", "content": "No; ability varies by person."}],
            "rejected": [{"role": "user", "content": "Are men better at maths?"},
                         {"role": "assistant", "content": "Yes, obviously."}],
        },
        {
            "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                       {"role": "user", "content": "Who steals more?"}],
            "chosen": [{"role": "assistant", "content": "Crime is not a trait of a group."}],
            "rejected": [{"role": "assistant", "content": "Immigrants."}],
        },
    ]  # fmt: skip
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    first, second = load_preference_source(str(path))
    assert (first.prompt, first.chosen, first.rejected) == (
        "Are men better at maths?", "No; ability varies by person.", "Yes, obviously."
    )  # fmt: skip
    assert second.prompt == "user: Hi\n\nassistant: Hello!\n\nuser: Who steals more?"
    assert second.chosen == "Crime is not a trait of a group." and second.group == "chat"


def test_bad_files_give_one_clear_error(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"question": "q", "preferred": "a", "dispreferred": "b"}])
    with pytest.raises(
        DataError,
        match=r"lacks column\(s\) \['chosen', 'rejected', 'bias'\]; its columns are "
        r"\['question', 'preferred', 'dispreferred'\]; set data\.chosen_column and "
        r"data\.rejected_column and data\.group_column",
    ):
        load_preference_source(path, group_column="bias")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.jsonl holds no preference rows"):
        load_preference_source(str(tmp_path / "empty.jsonl"))
    (tmp_path / "header.csv").write_text("chosen,rejected\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"header\.csv holds no preference rows"):
        load_preference_source(str(tmp_path / "header.csv"))
    same = _write_jsonl(
        tmp_path / "s.jsonl", [{"chosen": "a", "rejected": "b"}, {"chosen": "x ", "rejected": "x"}]
    )
    with pytest.raises(DataError, match=r"s\.jsonl line 2: chosen and rejected are the same text"):
        load_preference_source(same)
    blank = _write_jsonl(tmp_path / "b.jsonl", [{"chosen": "a", "rejected": "b", "g": ""}])
    with pytest.raises(DataError, match=r"b\.jsonl line 1: group column 'g' is empty"):
        load_preference_source(blank, group_column="g")
    noresp = _write_jsonl(tmp_path / "n.jsonl", [{"chosen": "a", "rejected": None}])
    with pytest.raises(DataError, match=r"n\.jsonl line 1: 'chosen' and 'rejected' must both be non-empty"):
        load_preference_source(noresp)
    with pytest.raises(DataError, match=r"missing\.jsonl does not exist; pass an existing \.jsonl, \.json or \.csv file or a hub id"):
        load_preference_source(str(tmp_path / "missing.jsonl"))
    (tmp_path / "notes.txt").write_text("chosen,rejected\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"has suffix '\.txt'; use \.jsonl, \.json or \.csv"):
        load_preference_source(str(tmp_path / "notes.txt"))
    (tmp_path / "obj.json").write_text('{"chosen": "a"}', encoding="utf-8")
    with pytest.raises(DataError, match=r"must hold a JSON list of objects, got dict"):
        load_preference_source(str(tmp_path / "obj.json"))


def _fake_datasets(rows, calls, fail=None):
    mod = types.ModuleType("datasets")

    def load_dataset(hub_id, split):
        calls.append((hub_id, split))
        if fail:
            raise fail
        return rows

    mod.load_dataset = load_dataset
    return mod


def test_hub_source_through_datasets(monkeypatch):
    calls = []
    rows = [{"chosen": "Good.", "rejected": "Bad.", "prompt": "Q?"}]
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(rows, calls))
    (pair,) = load_preference_source("someone/hh-rlhf", split="test")
    assert calls == [("someone/hh-rlhf", "test")]
    assert (pair.prompt, pair.chosen, pair.group, pair.source) == (
        "Q?",
        "Good.",
        "hh_rlhf",
        "someone/hh-rlhf",
    )
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(rows, calls, ConnectionError("offline")))
    with pytest.raises(
        DataError,
        match=r"could not load preference data from the hub id 'someone/x' \(ConnectionError: offline\) "
        r"with split 'train'; .*HF_HUB_OFFLINE",
    ):
        load_preference_source("someone/x")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DataError, match=r"`datasets` package is not installed"):
        load_preference_source("someone/x")


# ------------------------------------------------------------------------------------- mixing
def test_build_filters_groups_caps_and_is_deterministic():
    """Religion only: CrowS-Pairs has 105 religion pairs, BBQ 1,200 (only that category is read);
    capped at 50 per (source, group), the same seed draws the same pairs."""
    full = build_preference_pairs(["crows_pairs", "bbq"], groups=["Religion"])
    assert Counter((p.source, p.group) for p in full) == {
        ("crows_pairs", "religion"): 105,
        ("bbq", "religion"): 1_200,
    }
    capped = build_preference_pairs(
        ["crows_pairs", "bbq"], groups=["religion"], max_pairs_per_group=50, seed=3
    )
    assert Counter(p.source for p in capped) == {"crows_pairs": 50, "bbq": 50}
    assert {p.id for p in capped} <= {p.id for p in full} and len({p.id for p in capped}) == 100
    order = {p.id: n for n, p in enumerate(full)}
    assert [order[p.id] for p in capped] == sorted(order[p.id] for p in capped)  # input order kept
    again = build_preference_pairs(
        ["crows_pairs", "bbq"], groups=["religion"], max_pairs_per_group=50, seed=3
    )
    other = build_preference_pairs(
        ["crows_pairs", "bbq"], groups=["religion"], max_pairs_per_group=50, seed=4
    )
    assert [p.id for p in again] == [p.id for p in capped] != [p.id for p in other]


def test_build_unknown_group_duplicate_source_and_local_file(tmp_path):
    path = _write_jsonl(
        tmp_path / "mine.jsonl", [{"chosen": "a", "rejected": "b"}, {"chosen": "c", "rejected": "d"}]
    )
    pairs = build_preference_pairs([path, path, "crows_pairs"], groups=["mine", "age"])
    assert group_counts(pairs) == {"age": 87, "mine": 2}
    with pytest.raises(
        ConfigError, match=r"data\.groups names group\(s\) \['caste'\].*available: age, disability"
    ):
        build_preference_pairs(["crows_pairs"], groups=["caste"])
    with pytest.raises(ConfigError, match=r"data\.sources must be a non-empty list"):
        build_preference_pairs([])


# ------------------------------------------------------------------------------------- splits
@pytest.fixture(scope="module")
def mixed(stereo, crows, religion):
    return stereo + crows + religion


def _key(p: PreferencePair) -> tuple[str, str]:
    return p.group, p.template or p.id


def test_split_holds_out_groups_and_templates(mixed):
    splits = split_pairs(mixed, ["Religion", "sexual-orientation"], eval_fraction=0.2, seed=0)
    assert {p.group for p in splits.heldout} == {"religion", "sexual_orientation"}
    assert len(splits.heldout) == sum(1 for p in mixed if p.group in ("religion", "sexual_orientation"))
    assert not {p.group for p in splits.train + splits.eval} & {"religion", "sexual_orientation"}
    assert not {_key(p) for p in splits.train} & {_key(p) for p in splits.eval}
    assert not {p.template for p in splits.train} & {p.template for p in splits.eval}
    assert len(splits.train) + len(splits.eval) + len(splits.heldout) == len(mixed)
    # race: 36 StereoSet targets + 516 one-pair CrowS-Pairs templates -> round(0.2 * 552) = 110 in eval.
    n_templates = Counter(g for g, _ in {_key(p) for p in mixed})
    n_eval = Counter(g for g, _ in {_key(p) for p in splits.eval})
    assert n_templates["race"] == 552 and n_eval["race"] == 110
    for group, n in n_eval.items():
        assert n == round(0.2 * n_templates[group])
    assert split_pairs(mixed, ["religion", "sexual_orientation"], 0.2, seed=0) == splits
    assert split_pairs(mixed, ["religion", "sexual_orientation"], 0.2, seed=1).eval != splits.eval


def test_split_sizes_on_small_groups_and_errors():
    def pair(group, template):
        return PreferencePair(f"t/{group}/{template}", "", "a", "b", group, "t", template)

    pairs = [pair("a", "1"), pair("a", "2"), pair("b", "1"), pair("c", "1"), pair("c", "2"), pair("c", "3")]
    splits = split_pairs(pairs, [], eval_fraction=0.01, seed=0)
    # Two templates: one goes to eval even at 1%; one template: stays in train; never all of a group.
    assert group_counts(splits.eval) == {"a": 1, "c": 1} and group_counts(splits.train) == {
        "a": 1,
        "b": 1,
        "c": 2,
    }
    assert group_counts(split_pairs(pairs, [], eval_fraction=0.9, seed=0).train) == {"a": 1, "b": 1, "c": 1}
    with pytest.raises(
        ConfigError, match=r"data\.heldout_groups names group\(s\) \['disability'\].*available: a, b, c"
    ):
        split_pairs(pairs, ["disability"], 0.2, seed=0)
    with pytest.raises(DataError, match=r"every group is held out \(a, b, c\).*data\.heldout_groups"):
        split_pairs(pairs, ["a", "b", "c"], 0.2, seed=0)
    with pytest.raises(ConfigError, match=r"eval_fraction must be in \[0, 1\)"):
        split_pairs(pairs, [], 1.0, seed=0)

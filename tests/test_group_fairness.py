"""Group-level reward-fairness objectives (fairrl.losses.group_fairness): values by hand, gradient
directions, group DRO's weights, and the pair trainer carrying them through checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fairrl.config import RMTrainConfig, load_config
from fairrl.data.preferences import PreferencePair, group_source_counts
from fairrl.errors import ConfigError
from fairrl.losses.fairness import FairnessSettings, fair_preference_loss
from fairrl.losses.group_fairness import (
    PairGroups,
    dro_update,
    group_balanced,
    group_coefficient,
    group_dro,
    group_log_shares,
    group_margin_fairness,
    group_means,
    group_regularizer,
)
from fairrl.losses.preference import bradley_terry_loss
from fairrl.recipes.rm import run_rm
from tests.test_rm import _Crash, _skewed_cfg, _skewed_file, _train_tiny, tiny_rm
from tests.test_rm import minilm_tokenizer as minilm_tokenizer  # noqa: F401 - the fixture

LOSS = torch.tensor([1.0, 2.0, 3.0])
MARGINS = torch.tensor([0.0, 0.0, math.log(3.0)])  # sigmoid: 0.5, 0.5, 0.75
GROUPS = PairGroups(torch.tensor([0, 0, 1]), 2)
JAIN = 1.25**2 / (2 * (0.5**2 + 0.75**2))  # group shares 0.5 and 0.75


def test_group_means_and_counts_by_hand():
    means, counts = group_means(torch.tensor([1.0, 2.0, 3.0, 4.0]), PairGroups(torch.tensor([0, 0, 1, 2]), 4))
    assert means.tolist() == [1.5, 3.0, 4.0, 0.0] and counts.tolist() == [2, 1, 1, 0]


def test_group_shares_and_their_jain_index_by_hand():
    assert group_log_shares(MARGINS, GROUPS).exp().tolist() == pytest.approx([0.5, 0.75])
    assert group_margin_fairness(MARGINS, GROUPS, -1.0).item() == pytest.approx(JAIN)  # 0.961538...
    one_group = PairGroups(torch.tensor([1, 1, 1]), 2)
    assert group_margin_fairness(MARGINS, one_group, -1.0).item() == pytest.approx(1.0)


def test_group_objectives_by_hand():
    s = FairnessSettings(kind="group_regularizer", alpha=0.1, gamma=0.5)
    assert group_regularizer(LOSS, MARGINS, s, GROUPS).item() == pytest.approx(2.0 - 0.1 * JAIN)
    assert group_coefficient(LOSS, MARGINS, s, GROUPS).item() == pytest.approx(2.0 * JAIN**-0.5)
    assert group_balanced(LOSS, MARGINS, s, GROUPS).item() == pytest.approx((1.5 + 3.0) / 2)  # not B = 2


def test_dro_update_and_loss_by_hand():
    """q = (1/2, 1/2), group losses 1.5 and 3, eta 0.1: q_1 = e^0.3 / (e^0.15 + e^0.3) = sigmoid(0.15)."""
    q = dro_update(torch.tensor([0.5, 0.5], dtype=torch.float64), LOSS, GROUPS, 0.1)
    assert q[1].item() == pytest.approx(1 / (1 + math.exp(-0.15)))  # 0.537430
    s = FairnessSettings(kind="group_dro")
    weighted = group_dro(LOSS, MARGINS, s, PairGroups(GROUPS.index, 2, q))
    assert weighted.item() == pytest.approx(q[0].item() * 1.5 + q[1].item() * 3.0)  # 2.306145
    three = dro_update(torch.full((3,), 1 / 3, dtype=torch.float64), LOSS, PairGroups(GROUPS.index, 3), 0.1)
    expected = torch.tensor([math.exp(0.15), math.exp(0.3), 1.0], dtype=torch.float64)
    assert three.tolist() == pytest.approx((expected / expected.sum()).tolist())  # absent group: factor 1


def test_dro_gives_the_worst_group_ever_more_weight():
    q = torch.tensor([0.5, 0.5], dtype=torch.float64)
    history = []
    for _ in range(5):
        q = dro_update(q, LOSS, GROUPS, 0.5)
        history.append(q[1].item())
    assert history == sorted(history) and history[-1] > 0.8


def _fairness_after_one_step(kind: str, alpha: float) -> float:
    """Group shares 0.73 (three pairs) vs 0.27 (one): a gradient step on the margins, f_G after it."""
    margins = torch.tensor([1.0, 1.0, 1.0, -1.0], requires_grad=True)
    groups = PairGroups(torch.tensor([0, 0, 0, 1]), 2)
    loss, _ = fair_preference_loss(bradley_terry_loss(margins), margins, FairnessSettings(kind=kind, alpha=alpha), groups)
    (grad,) = torch.autograd.grad(loss, margins)
    return group_margin_fairness(margins.detach() - 0.5 * grad, groups).item()


def test_group_regularizer_raises_group_fairness_more_than_bradley_terry():
    before = group_margin_fairness(torch.tensor([1.0, 1.0, 1.0, -1.0]), PairGroups(torch.tensor([0, 0, 0, 1]), 2))
    bt = _fairness_after_one_step("none", 0.0)
    fr = _fairness_after_one_step("group_regularizer", 1.0)
    assert fr > bt > before.item()


def test_group_balanced_weighs_a_small_group_like_a_large_one():
    margins = torch.tensor([1.0, 1.0, 1.0, -1.0], requires_grad=True)
    groups = PairGroups(torch.tensor([0, 0, 0, 1]), 2)
    loss = group_balanced(bradley_terry_loss(margins), margins, FairnessSettings(kind="group_balanced"), groups)
    (grad,) = torch.autograd.grad(loss, margins)
    # d/da of -log sigmoid(a) = -(1 - sigmoid(a)); weights 1/(2*3) per majority pair, 1/2 for the minority one
    assert grad.tolist() == pytest.approx([-(1 - torch.sigmoid(torch.tensor(1.0)).item()) / 6] * 3
                                          + [-(1 - torch.sigmoid(torch.tensor(-1.0)).item()) / 2])  # fmt: skip


def test_group_stats_and_errors():
    _, stats = fair_preference_loss(LOSS, MARGINS, FairnessSettings(), GROUPS)
    assert stats["group_fairness"] == pytest.approx(JAIN) and stats["worst_group_accuracy"] == 0.0
    for kind in ("group_regularizer", "group_coefficient", "group_balanced", "group_dro"):
        with pytest.raises(ValueError, match="needs the group"):
            fair_preference_loss(LOSS, MARGINS, FairnessSettings(kind=kind))
    with pytest.raises(ValueError, match="needs the group weights"):
        fair_preference_loss(LOSS, MARGINS, FairnessSettings(kind="group_dro"), GROUPS)
    with pytest.raises(ValueError, match="must lie in"):
        PairGroups(torch.tensor([0, 2]), 2)
    with pytest.raises(ConfigError, match="dro_step_size"):
        FairnessSettings(kind="group_dro", dro_step_size=-1.0)
    with pytest.raises(ConfigError, match="tau < 1"):
        FairnessSettings(kind="group_coefficient", tau=2.0)


# ------------------------------------------------------------------------------------------- training runs
def test_group_dro_learns_the_minority_that_bradley_terry_ignores(minilm_tokenizer, tmp_path):
    """Skewed data: 200 majority pairs, 20 minority pairs whose preference conflicts with the majority's
    cue. BT learns the majority only (held-out minority accuracy 0); group DRO (eta 1) learns both
    groups, and q ends on the minority, whose loss stayed higher. (The group-balanced loss learned both
    on the newest versions and not on the oldest: with the minority at half of each batch's loss it is
    a borderline case here, so only its gradient is tested, by hand.)"""
    data = _skewed_file(tmp_path / "skew.jsonl")
    results = {}
    for kind, extra in [("none", []), ("group_dro", ["fairness.dro_step_size=1.0"])]:
        cfg = _skewed_cfg(data, "logging_steps=1", f"fairness.kind={kind}", *extra)
        results[kind] = _train_tiny(cfg, tmp_path / kind, minilm_tokenizer)["eval"]["by_group"]
    assert results["none"]["minority"]["accuracy"] < 0.5 and results["none"]["majority"]["accuracy"] > 0.9
    assert results["group_dro"]["minority"]["accuracy"] > 0.9 and results["group_dro"]["majority"]["accuracy"] > 0.9
    last = json.loads((tmp_path / "group_dro" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["group_dro/minority"] > 0.9 and last["group_dro/majority"] < 0.1


def test_group_dro_run_resumes_exactly(minilm_tokenizer, tmp_path):
    """Killed during step 5 (checkpoint at 4) and resumed: the DRO weights and losses equal an
    uninterrupted run's, because q travels in the checkpoint."""
    data = _skewed_file(tmp_path / "skew.jsonl")
    cfg = _skewed_cfg(data, "max_steps=6", "save_steps=2", "logging_steps=1", "fairness.kind=group_dro",
                      "fairness.dro_step_size=1.0")  # fmt: skip
    _train_tiny(cfg, tmp_path / "full", minilm_tokenizer)
    with pytest.raises(KeyboardInterrupt):
        run_rm(cfg, out=str(tmp_path / "part"), console=lambda s: None, progress=False,
               learner=_Crash(tiny_rm(minilm_tokenizer), minilm_tokenizer, cfg))  # fmt: skip
    _train_tiny(cfg, tmp_path / "part", minilm_tokenizer, resume=str(tmp_path / "part"))
    full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    part = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["group_dro/minority"] for r in part] == pytest.approx([r["group_dro/minority"] for r in full])
    assert [r["loss"] for r in part] == pytest.approx([r["loss"] for r in full])
    assert "worst_group_accuracy" in full[-1] and "group_fairness" in full[-1]
    report = (tmp_path / "full" / "report.md").read_text()
    assert "worst-group accuracy" in report and "## Pairs per group" in report
    data = json.loads((tmp_path / "full" / "data.json").read_text())
    n_minority = sum(data[s].get("minority", 0) for s in ("train", "eval", "heldout"))
    assert n_minority == 20 and f"| minority | {data['train']['minority']} |" in report


def test_group_source_counts_by_hand():
    pairs = [PreferencePair(id=str(i), prompt="", chosen="a", rejected="b", group=g, source=src)
             for i, (g, src) in enumerate([("age", "bbq"), ("age", "stereoset"), ("age", "bbq"), ("race", "bbq")])]
    assert group_source_counts(pairs) == {"age": {"bbq": 2, "stereoset": 1}, "race": {"bbq": 1}}


def test_group_kinds_are_config_values():
    cfg = load_config(None, ["fairness.kind=group_balanced"], schema=RMTrainConfig)
    assert cfg.fairness.kind == "group_balanced" and cfg.fairness.dro_step_size == 0.01
    with pytest.raises(ConfigError):
        load_config(None, ["fairness.kind=group_worst"], schema=RMTrainConfig)

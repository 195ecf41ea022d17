"""What fairrl's docstrings say about TRL matches the installed TRL 1.16 source (issue: peer discrepancies)."""

from __future__ import annotations

import inspect

import pytest

from fairrl.advantages import estimators
from fairrl.losses.preference import dpo_loss

trl = pytest.importorskip("trl")


def test_trl_keeps_unscorable_rewards_nan_and_so_does_the_docstring():
    from trl import GRPOTrainer

    source = inspect.getsource(GRPOTrainer)
    assert "rewards[unscorable_mask] = torch.nan" in source  # TRL: NaN kept, not turned into 0
    doc = inspect.getsource(estimators)
    assert "nansum turns such a sample into reward 0" not in doc
    assert "As in TRL 1.16, which sets a row where every function returned None back to NaN" in doc


def test_trl_sigmoid_dpo_ignores_label_smoothing_and_the_docstring_says_so():
    from trl import DPOTrainer

    source = inspect.getsource(DPOTrainer)
    branch = source.split('if loss_type == "sigmoid":', 1)[1].split("elif", 1)[0]
    assert "label_smoothing" not in branch and "-F.logsigmoid(self.beta * delta_score)" in branch
    assert "as in TRL's ``sigmoid`` loss" not in dpo_loss.__doc__
    assert "TRL 1.16's ``sigmoid`` loss ignores ``label_smoothing``" in dpo_loss.__doc__


def test_reward_std_is_trls_batch_std():
    """TRL 1.16 logs ``nanstd(rewards)`` over the whole batch as reward_std; so does fairrl."""
    import torch
    from trl.trainer.utils import nanstd

    from fairrl.advantages.estimators import group_stats

    r = torch.tensor([[0.0, 1.0, 1.0, 0.5], [2.0, 2.0, float("nan"), 0.0]])
    assert "nanstd(rewards).item()" in inspect.getsource(trl.GRPOTrainer)
    assert group_stats(r)["reward_std"] == pytest.approx(float(nanstd(r.flatten())), abs=1e-6)

"""Prompt samplers (fairrl.data.samplers): VADE's posterior arithmetic by hand, its selection, exact resume
from saved state, units kept together, fewer zero-variance groups on a simulated bandit, and the trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.data.records import Example
from fairrl.data.samplers import UniformSampler, VadeSampler, beta_update
from tests.test_train_e2e import _cfg, _rewards, _run


def _examples(n: int, units: bool = False) -> list[Example]:
    return [Example(prompt_id=f"p{i}", prompt=[{"role": "user", "content": f"q{i}"}], group="g", source="toy",
                    unit=f"u{i // 2}" if units else None) for i in range(n)]  # fmt: skip


def test_beta_update_by_hand():
    """alpha=3, beta=2, keep 0.5, prior (1, 1), 4 successes of 5:
    alpha' = 1 + 0.5 * (3 - 1) + 4 = 6;  beta' = 1 + 0.5 * (2 - 1) + 1 = 2.5."""
    assert beta_update(3.0, 2.0, 4.0, 1.0, 0.5, (1.0, 1.0)) == (6.0, 2.5)


def test_observe_counts_successes_and_forgets_by_hand():
    """Rewards [1, 0, 1, 1] with success >= 0.5: k = 3 of G = 4, so from the prior (1, 1): (4, 2).
    Then all-zero rewards with forget 0.5, keep 0.9: first every posterior shrinks, (1 + 0.5 * 3, 1 + 0.5 * 1)
    = (2.5, 1.5); then alpha = 1 + 0.9 * 1.5 + 0 = 2.35, beta = 1 + 0.9 * 0.5 + 4 = 5.45."""
    ex = _examples(3)
    s = VadeSampler(ex, seed=0, keep=0.9, forget=0.5)
    s.observe([ex[1]], torch.tensor([[1.0, 0.0, 1.0, 1.0]]))
    assert s.posterior(1) == (4.0, 2.0) and s.posterior(0) == (1.0, 1.0)
    s.observe([ex[1]], torch.zeros(1, 4))
    assert s.posterior(1) == pytest.approx((2.35, 5.45))


def test_selects_the_prompts_whose_groups_will_disagree():
    """Posteriors concentrated at p = 0.5 (variance 0.25) beat ones concentrated at 0 or 1 (variance ~0.001)."""
    ex = _examples(8)
    s = VadeSampler(ex, seed=0, candidates=2.0)
    for i in range(8):  # even prompts: solved half the time; odd: always solved or never
        s.evidence[i] = [500.0, 500.0] if i % 2 == 0 else ([999.0, 1.0] if i % 4 == 1 else [1.0, 999.0])
    picked = s.take(4)
    assert sorted(e.prompt_id for e in picked) == ["p0", "p2", "p4", "p6"]
    assert s.stats()["sampler/selected_score"] > 0.24 > s.stats()["sampler/candidate_score"]


def test_units_are_kept_or_dropped_together():
    s = VadeSampler(_examples(16, units=True), seed=3, candidates=2.0)
    for _ in range(4):
        units = [e.unit for e in s.take(4)]
        assert all(units.count(u) == 2 for u in units), units


def _drive(s, draws: int, rng: np.random.Generator, rates: np.ndarray) -> list[list[str]]:
    """``draws`` steps of 4 prompts, each group of 8 rewarded 1 with its prompt's true success rate."""
    seen = []
    for _ in range(draws):
        batch = s.take(4)
        p = torch.tensor([rates[int(e.prompt_id[1:])] for e in batch]).unsqueeze(1)
        s.observe(batch, (torch.from_numpy(rng.random((len(batch), 8))) < p).float())
        seen.append([e.prompt_id for e in batch])
    return seen


def test_resume_from_saved_state_draws_the_same():
    """A sampler rebuilt from ``state()`` (through JSON, as in a checkpoint) continues exactly as the original."""
    ex, rates = _examples(24), np.linspace(0, 1, 24)
    a = VadeSampler(ex, seed=7)
    _drive(a, 5, np.random.default_rng(0), rates)
    b = VadeSampler(ex, seed=7, state=json.loads(json.dumps(a.state())))
    assert b.state() == a.state()
    assert _drive(a, 4, np.random.default_rng(1), rates) == _drive(b, 4, np.random.default_rng(1), rates)
    assert a.state() == b.state()


def test_vade_has_fewer_zero_variance_groups_than_uniform():
    """A bandit of 40 prompts: 30 always or never solved, 10 solved half the time. Over 60 steps of 4
    prompts (groups of 8) uniform sampling yields ~75 % zero-variance groups, VADE 26-30 % over seeds 0-7."""
    rates = np.array([0.0, 1.0, 0.0, 0.5] * 10)

    def zero_share(s) -> float:
        rng, zero, total = np.random.default_rng(0), 0, 0
        for _ in range(60):
            batch = s.take(4)
            p = torch.tensor([rates[int(e.prompt_id[1:])] for e in batch]).unsqueeze(1)
            r = (torch.from_numpy(rng.random((len(batch), 8))) < p).float()
            s.observe(batch, r)
            zero, total = zero + int((r.std(dim=1) == 0).sum()), total + len(batch)
        return zero / total

    uniform, vade = zero_share(UniformSampler(_examples(40), seed=0)), zero_share(VadeSampler(_examples(40), seed=0))
    assert uniform > 0.6 and vade < 0.4, (uniform, vade)


def test_trainer_with_vade_logs_its_statistics_and_resumes_exactly(tmp_path):
    """Two GRPO steps + two resumed equal four uninterrupted (rewards and weights); metrics carry sampler/*."""
    over = {"algorithm.prompt_sampler": "vade", "algorithm.sampler_success": 1.0}
    full = _run(_cfg(tmp_path, max_steps=4, **over), tmp_path / "full")
    part = _run(_cfg(tmp_path, max_steps=2, **over), tmp_path / "part")
    _run(_cfg(tmp_path, max_steps=4, **over), tmp_path / "part", resume=str(part))
    assert _rewards(part) == pytest.approx(_rewards(full), abs=1e-6)
    state = json.loads((full / "checkpoints" / "step-000004" / "state.json").read_text())["sampler"]
    assert state["draws"] == 4 and state["evidence"]
    resumed = json.loads((part / "checkpoints" / "step-000004" / "state.json").read_text())["sampler"]
    assert resumed == state
    row = json.loads((full / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["sampler/candidates"] == 16 and 0 < row["sampler/seen"] <= 1


def test_config_validates_the_sampler():
    r = CliRunner().invoke(app, ["config", "demo", "--set", "algorithm.prompt_sampler=vade"])
    assert r.exit_code == 0 and "prompt_sampler: vade" in r.output
    bad = CliRunner().invoke(app, ["config", "demo", "--set", "algorithm.prompt_sampler=xrpo2"])
    assert bad.exit_code == 2 and "algorithm.prompt_sampler" in bad.output


def test_group_prior_by_hand():
    """Prompt 0 (group g) solved 3 of 4: the group holds (3, 1), m = (3 + 1) / (4 + 2) = 2/3; with group_prior
    w = 3 the unseen prompt 1 of g starts at (1 + 3 x 2/3, 1 + 3 x 1/3) = (3, 2); prompt 2 of another group
    and every prompt with w = 0 start at the prior (1, 1). The group counts survive a state round trip."""
    ex = _examples(3)
    ex[2] = Example(prompt_id="p2", prompt=[{"role": "user", "content": "q2"}], group="h", source="toy")
    s = VadeSampler(ex, seed=0, group_prior=3.0)
    s.observe([ex[0]], torch.tensor([[1.0, 1.0, 0.0, 1.0]]))
    assert s.posterior(1) == pytest.approx((3.0, 2.0)) and s.posterior(2) == (1.0, 1.0)
    assert VadeSampler(ex, seed=0).posterior(1) == (1.0, 1.0)
    again = VadeSampler(ex, seed=0, state=json.loads(json.dumps(s.state())), group_prior=3.0)
    assert again.posterior(1) == pytest.approx((3.0, 2.0))

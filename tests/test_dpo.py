"""DPO, FR-DPO and FC-DPO runs on a tiny causal LM: learning, the reference, the cache, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.config import DPOTrainConfig, load_config
from fairrl.data.preferences import PreferencePair
from fairrl.models.loading import LoraSettings, apply_lora
from fairrl.recipes.dpo import DPOLearner, per_group_sample, run_dpo
from tests.tiny import saved_tiny_policy, tiny_policy

runner = CliRunner()


def _pairs_file(path):
    """Prompts of tiny-vocabulary words; the chosen reply is 'a a', the rejected 'b b'; two groups."""
    prompts = ["c d", "e f", "g h", "x y", "z 1", "2 3", "c e", "d f", "g x", "h y", "z 2", "1 3"]
    rows = [{"prompt": p, "chosen": "a a", "rejected": "b b", "group": f"g{i % 3}"}
            for i, p in enumerate(prompts)]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _cfg(path, *extra):
    sets = [f"data.sources=['{path}']", "data.group_column=group", "data.heldout_groups=[g2]",
            "data.max_pairs_per_group=null", "data.eval_fraction=0.25", "learning_rate=1e-2", "max_steps=12",
            "per_device_train_batch_size=4", "warmup_ratio=0", "tensorboard=false", "n_boot=50",
            "max_length=32", "max_prompt_length=16", *extra]  # fmt: skip
    return load_config(None, sets, schema=DPOTrainConfig)


def _learner(cfg, lora: bool = True):
    tok, model = tiny_policy()
    tok.padding_side = "right"
    if lora:
        model = apply_lora(model, LoraSettings(r=4, alpha=8))
        return DPOLearner(model, tok, cfg)
    ref = tiny_policy()[1].eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return DPOLearner(model, tok, cfg, reference=ref)


@pytest.mark.parametrize("kind", ["none", "regularizer", "coefficient", "group_balanced", "group_dro"])
def test_dpo_variants_learn_the_preference(tmp_path, kind):
    """After 12 steps the implicit margin ranks 'a a' over 'b b' on unseen prompts of seen and unseen groups,
    and the policy itself now prefers the chosen reply (log pi(y_w) - log pi(y_l) went up)."""
    cfg = _cfg(_pairs_file(tmp_path / "p.jsonl"), f"fairness.kind={kind}")
    run_dpo(cfg, out=str(tmp_path / "run"), console=lambda s: None, progress=False, learner=_learner(cfg))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["eval"]["accuracy"] == 1.0 and res["heldout"]["accuracy"] == 1.0
    assert res["logp_after"]["mean_margin"] > res["logp_before"]["mean_margin"] + 1.0
    assert set(res["heldout"]["by_group"]) == {"g2"}
    assert (tmp_path / "run" / "final" / "adapter_config.json").exists()
    assert "Policy log-likelihood preference" in (tmp_path / "run" / "report.md").read_text()


def test_implicit_margins_start_at_zero_and_reference_is_cached(tmp_path):
    """With LoRA (B = 0 at init) the policy equals its reference: every margin is exactly 0. Reference
    log-probs of a pair are computed once, however often the pair is seen."""
    cfg = _cfg(_pairs_file(tmp_path / "p.jsonl"))
    learner = _learner(cfg)
    pairs = [PreferencePair(id=f"p{i}", prompt="c d", chosen="a", rejected="b", group="g", source="t") for i in range(3)]
    margins, losses, _ = learner.margins(pairs)
    assert margins.tolist() == [0.0, 0.0, 0.0]
    assert losses.detach() == pytest.approx(torch.full((3,), 0.6931472), abs=1e-6)  # log 2
    calls = []
    original = learner._encode
    learner._encode = lambda ps: calls.append(len(ps)) or original(ps)
    learner.margins(pairs)
    assert calls == [3]  # the policy forward only; the reference came from the cache


def test_full_fine_tuning_uses_a_frozen_reference(tmp_path):
    cfg = _cfg(_pairs_file(tmp_path / "p.jsonl"), "model.lora=null", "max_steps=3")
    learner = _learner(cfg, lora=False)
    before = {k: v.clone() for k, v in learner.reference.state_dict().items()}
    run_dpo(cfg, out=str(tmp_path / "run"), console=lambda s: None, progress=False, learner=learner)
    assert all(not p.requires_grad for p in learner.reference.parameters())
    assert all(torch.equal(v, before[k]) for k, v in learner.reference.state_dict().items())
    assert any(not torch.equal(v, before[k]) for k, v in learner.model.state_dict().items())
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["steps"] == 3 and (tmp_path / "run" / "final" / "model.safetensors").exists()


def test_per_group_sample_caps_each_group():
    pairs = [PreferencePair(id=str(i), prompt="", chosen="a", rejected="b", group=f"g{i % 2}", source="t")
             for i in range(10)]  # fmt: skip
    out = per_group_sample(pairs, 2, seed=0)
    assert sorted(p.group for p in out) == ["g0", "g0", "g1", "g1"]
    assert [int(p.id) for p in out] == sorted(int(p.id) for p in out)
    assert per_group_sample(pairs, 0, seed=0) == []


@pytest.fixture
def model_dir(tmp_path):
    return saved_tiny_policy(tmp_path / "m")


@pytest.mark.parametrize("kind", ["regularizer", "coefficient"])
def test_fr_and_fc_dpo_from_the_cli_on_packaged_pairs(model_dir, tmp_path, kind):
    """`fairrl dpo train` on the packaged StereoSet + CrowS-Pairs pairs with a saved tiny model."""
    out = tmp_path / "run"
    sets = [f"model.name_or_path={model_dir}", "model.lora={r: 4, alpha: 8}", "max_steps=2",
            "data.sources=[stereoset, crows_pairs]", "data.max_pairs_per_group=4", "eval_pairs_per_group=2",
            f"fairness.kind={kind}", "n_boot=20", "tensorboard=false", "max_length=48"]  # fmt: skip
    result = runner.invoke(app, ["dpo", "train", "--out", str(out)] + [x for s in sets for x in ("--set", s)])
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["fairness"]["kind"] == kind and res["steps"] == 2
    assert {"religion"} <= set(res["heldout"]["by_group"])


def test_dpo_config_mistakes_exit_2(tmp_path):
    result = runner.invoke(app, ["dpo", "train", "--set", "beta=0", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "beta" in result.output and "Traceback" not in result.output

"""Inf / NaN in training stops the run at that step with a message (step, likely causes, the checkpoint that
stays), exit 2 from the CLI, and nothing non-finite ever reaches a checkpoint - in the GRPO loop and the
pairwise (RM / DPO) loop alike."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.recipes.grpo import run_training
from fairrl.trainer.guard import NonFiniteError, check_value, check_weights
from tests.test_train_cli import _args
from tests.test_train_e2e import _cfg, _data
from tests.tiny import saved_tiny_policy, tiny_policy

runner = CliRunner()


def _all_finite(run_dir) -> bool:
    files = list((run_dir / "checkpoints").glob("step-*/trainable.safetensors"))
    return bool(files) and all(
        bool(torch.isfinite(t).all()) for f in files for t in load_file(str(f)).values()
    )


def test_guard_checks():
    check_value("loss", 1.5)
    with pytest.raises(NonFiniteError, match=r"gradient norm \(inf\)"):
        check_value("gradient norm", float("inf"))
    with pytest.raises(NonFiniteError, match=r"loss \(nan\)"):
        check_value("loss", torch.tensor(float("nan")))
    w = torch.nn.Parameter(torch.ones(3))
    check_weights([w])
    with torch.no_grad():
        w[1] = float("nan")
    with pytest.raises(NonFiniteError, match="weight after the optimiser step"):
        check_weights([w])
    check_weights([torch.full((2,), float("nan"))])  # not trainable (no requires_grad): not checked


def test_huge_learning_rate_stops_grpo_at_step_1_and_saves_nothing(tmp_path):
    """A learning rate that validation would refuse (bypassed here) overflows the weights at the first step."""
    cfg = _cfg(tmp_path, max_steps=3, save_steps=1).model_copy(update={"learning_rate": 1e300})
    with pytest.raises(NonFiniteError) as err:
        run_training(cfg, out=str(tmp_path / "run"), console=lambda s: None, evaluate=False, progress=False,
                     components=tiny_policy(), data=_data())  # fmt: skip
    msg = str(err.value)
    assert msg.startswith("training stopped at step 1: the weight after the optimiser step is not finite")
    assert "learning_rate too high" in msg and "reward function that overflows" in msg
    assert "no checkpoint was written yet" in msg
    assert (
        not list((tmp_path / "run").glob("checkpoints/step-*")) and not (tmp_path / "run" / "final").exists()
    )


def test_nan_loss_at_step_2_exits_2_and_keeps_the_step_1_checkpoint(tmp_path, monkeypatch):
    import fairrl.trainer.grpo_step as grpo_step

    calls = {"update": 0}
    real_update, real_loss = grpo_step.GRPOStep.update, grpo_step.policy_loss

    def counting_update(self, *a, **k):
        calls["update"] += 1
        return real_update(self, *a, **k)

    def poisoned_loss(*a, **k):
        loss, stats = real_loss(*a, **k)
        return (loss * float("nan") if calls["update"] >= 2 else loss), stats

    monkeypatch.setattr(grpo_step.GRPOStep, "update", counting_update)
    monkeypatch.setattr(grpo_step, "policy_loss", poisoned_loss)
    out = tmp_path / "run"
    result = runner.invoke(app, _args(saved_tiny_policy(tmp_path / "m"), out, "max_steps=3", "eval.reasoning_items=0",
                                      "eval.bbq_items_per_condition=0"))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert (
        "training stopped at step 2: the loss (nan) is not finite; nothing from this step was saved"
        in result.output
    )
    assert (
        f"the last checkpoint, {out / 'checkpoints' / 'step-000001'}, was saved before this step and stays"
        in result.output
    )
    assert f"--resume {out} --set learning_rate=" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-000001"]
    assert _all_finite(out) and not (out / "final").exists()
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_pair_loop_stops_on_nan_margins_with_the_step(tmp_path):
    """DPO (the shared pair loop): NaN margins at the 3rd batch stop the run; checkpoints 1 and 2 stay finite."""
    from fairrl.config import DPOTrainConfig, load_config
    from fairrl.models.loading import LoraSettings, apply_lora
    from fairrl.recipes.dpo import DPOLearner, run_dpo
    from tests.test_dpo import _pairs_file

    class Poisoned(DPOLearner):
        calls = 0

        def margins(self, pairs):
            self.calls += 1
            margins, loss, aux = super().margins(pairs)
            return (margins * float("nan"), loss, aux) if self.calls == 3 else (margins, loss, aux)

    sets = [f"data.sources=['{_pairs_file(tmp_path / 'p.jsonl')}']", "data.group_column=group",
            "data.heldout_groups=[g2]", "max_steps=5", "save_steps=1", "per_device_train_batch_size=4",
            "tensorboard=false", "max_length=32", "max_prompt_length=16", "eval_pairs_per_group=0"]  # fmt: skip
    cfg = load_config(None, sets, schema=DPOTrainConfig)
    tok, model = tiny_policy()
    tok.padding_side = "right"
    learner = Poisoned(apply_lora(model, LoraSettings(r=4, alpha=8)), tok, cfg)
    with pytest.raises(NonFiniteError, match=r"training stopped at step 3: the preference loss input"):
        run_dpo(cfg, out=str(tmp_path / "run"), console=lambda s: None, progress=False, learner=learner)
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == ["step-000001", "step-000002"]
    assert _all_finite(run_dir) and not (run_dir / "results.json").exists()

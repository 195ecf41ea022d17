"""Distillation: the divergences by hand and against TRL's GKD, the teacher's prompt, the tokenizer check,
and both KD modes inside the run loop."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fairrl.config import load_config
from fairrl.data.records import Example
from fairrl.data.run_data import RunData
from fairrl.data.teacher_prompt import CONTEXT_DISTILLATION_PROMPT, teacher_messages
from fairrl.losses.distill import distill_loss, forward_kl, generalized_jsd, reverse_kl
from fairrl.models.teacher import tokenizer_difference
from fairrl.recipes.kd import run_kd
from tests.tiny import make_tiny_tokenizer, tiny_policy

# teacher P = (1/2, 1/2), student Q = (1/4, 3/4), as logits (log-probabilities are valid logits)
P = torch.log(torch.tensor([[0.5, 0.5]]))
Q = torch.log(torch.tensor([[0.25, 0.75]]))


def test_divergences_by_hand():
    """KL(P||Q) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.346574 - 0.202733 = 0.143841;
    KL(Q||P) = 0.25 ln(0.25/0.5) + 0.75 ln(0.75/0.5) = -0.173287 + 0.304099 = 0.130812;
    beta = 0.5: M = (0.375, 0.625), KL(P||M) = 0.5 ln(4/3) + 0.5 ln(0.8) = 0.032269,
    KL(Q||M) = 0.25 ln(2/3) + 0.75 ln(1.2) = 0.035375, JSD = 0.5 (0.032269 + 0.035375) = 0.033822.
    TRL's ends: beta = 0 is forward KL, beta = 1 reverse KL."""
    assert float(forward_kl(Q, P)) == pytest.approx(0.143841, abs=1e-6)
    assert float(reverse_kl(Q, P)) == pytest.approx(0.130812, abs=1e-6)
    assert float(generalized_jsd(Q, P, 0.5)) == pytest.approx(0.033822, abs=1e-6)
    assert float(generalized_jsd(Q, P, 0.0)) == pytest.approx(0.143841, abs=1e-6)
    assert float(generalized_jsd(Q, P, 1.0)) == pytest.approx(0.130812, abs=1e-6)
    # JSD_beta / beta -> KL(P||Q) as beta -> 0: the ends are the limits, not the formula's value 0
    assert float(generalized_jsd(Q, P, 1e-3)) / 1e-3 == pytest.approx(0.143841, rel=2e-3)
    assert float(generalized_jsd(Q, P, 1 - 1e-3)) / 1e-3 == pytest.approx(0.130812, rel=2e-3)
    assert float(generalized_jsd(P, P, 0.3)) == pytest.approx(0.0, abs=1e-7)
    loss, stats = distill_loss(torch.cat([Q, P]), torch.cat([P, P]), "forward_kl")
    assert float(loss) == pytest.approx(0.143841 / 2, abs=1e-6) and stats["num_tokens"] == 2


def test_gradients_reach_the_student_only():
    student = Q.clone().requires_grad_(True)
    teacher = P.clone().requires_grad_(True)
    distill_loss(student, teacher, "jsd", 0.5)[0].backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd_equals_trl_gkd(beta):
    """The peer check: TRL's GKDTrainer.generalized_jsd_loss on the same random logits and label mask."""
    gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    theirs = gkd.GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta)
    keep = labels != -100
    ours, _ = distill_loss(student[keep], teacher[keep], "jsd", beta)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)


def test_teacher_prompt_goes_before_the_system_message():
    prompt = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "q"}]
    out = teacher_messages(prompt, "Be fair.")
    assert out == [{"role": "system", "content": "Be fair.\n\nAnswer."}, {"role": "user", "content": "q"}]
    assert teacher_messages([prompt[1]], "Be fair.")[0] == {"role": "system", "content": "Be fair."}
    assert teacher_messages(prompt, None) is prompt
    assert "Cannot be determined\nThe context does not say" in CONTEXT_DISTILLATION_PROMPT


def test_tokenizer_difference_names_the_mismatch():
    a, b = make_tiny_tokenizer(), make_tiny_tokenizer()
    assert tokenizer_difference(a, b) is None
    b.add_tokens(["zebra"])
    assert "vocabularies differ" in tokenizer_difference(a, b)


def _data(n: int = 8) -> RunData:
    words = ["b c", "d e", "f g", "h x"]
    train = [Example(f"toy/{i}", [{"role": "system", "content": "a"}, {"role": "user", "content": words[i % 4]}],
                     f"g{i % 2}", "toy", {"completion": "a " + words[i % 4]}) for i in range(n)]  # fmt: skip
    return RunData(train=train, evals={})


@pytest.mark.parametrize("extra", [
    ["kd.lmbda=0.5", "model.lora={r: 4, alpha: 8}"],
    ["kd.mode=sequence", "kd.filter_by_reward=true", "kd.num_samples=2", "rewards.functions=[{name: 'tests.tiny:count_a'}]"],
])  # fmt: skip
def test_kd_modes_run_inside_the_loop_and_resume_exactly(tmp_path, extra):
    """Token mode (student samples or dataset targets, LoRA teacher = adapters off) and sequence mode with
    reward filtering: 3 steps in one go equal 2 steps then --resume to 3."""
    from fairrl.models.loading import LoraSettings, apply_lora

    def run(name, steps, resume=None):
        cfg = load_config(
            None,
            [
                "method=kd",
                "model.lora=null",
                f"max_steps={steps}",
                "kd.batch_size=2",
                "kd.max_new_tokens=3",
                "learning_rate=0.01",
                "save_steps=1",
                "report_to=none",
                *extra,
            ],
        )
        tok, model = tiny_policy()
        if cfg.model.lora is not None:
            model = apply_lora(model, LoraSettings(r=4, alpha=8))
        out = run_kd(cfg, out=str(tmp_path / name), resume=resume, console=lambda s: None, evaluate=False,
                     progress=False, components=(tok, model), data=_data())  # fmt: skip
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    full = run("full", 3)
    run("part", 2)
    resumed = run("part", 3, resume=str(tmp_path / "part"))
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full], abs=1e-6)
    assert all(math.isfinite(r["loss"]) for r in full)
    key = "on_policy" if "kd.mode=sequence" not in extra else "teacher_reward"
    assert key in full[0]

"""Warm start (``warm_start.steps``): SFT steps, then GRPO from and against the fine-tuned model; resumable."""

from __future__ import annotations

import json

import pytest
import torch

from fairrl.config import load_config
from fairrl.data.records import Example
from fairrl.data.run_data import RunData
from fairrl.errors import ConfigError
from fairrl.models.loading import LoraSettings, apply_lora, load_model
from fairrl.recipes.grpo import run_training
from tests.tiny import tiny_policy

WORDS = ["b c", "d e", "f g", "h x", "y z", "1 2", "3 b", "c d"]


def _data(n: int = 32) -> RunData:
    """Prompts whose targets are all 'a' tokens, the words the reward (tests.tiny:count_a) counts."""
    train = [Example(f"toy/{i}", [{"role": "user", "content": WORDS[i % 8]}], f"g{i % 2}", "toy",
                     {"completion": "a a a a"}) for i in range(n)]  # fmt: skip
    return RunData(train=train, evals={})


def _cfg(max_steps: int, warm: int, lora: bool = True, **over) -> object:
    sets = [
        "model.lora={r: 4, alpha: 8}" if lora else "model.lora=null", "data.sources=[{kind: bbq}]", "rewards.functions=[{name: 'tests.tiny:count_a'}]",
        "algorithm.num_generations=4", "algorithm.prompts_per_step=2", "algorithm.max_completion_length=6",
        "algorithm.beta=0.04", "learning_rate=0.01", "report_to=none", "save_steps=2", "sft.batch_size=4",
        f"max_steps={max_steps}", f"warm_start.steps={warm}", "warm_start.learning_rate=0.05",
    ] + [f"{k}={v}" for k, v in over.items()]  # fmt: skip
    return load_config(None, sets)


def _run(cfg, out, resume=None, notes=None):
    tok, model = tiny_policy()
    if cfg.model.lora is not None:
        model = apply_lora(model, LoraSettings(r=4, alpha=8))
    return run_training(cfg, out=str(out), resume=resume, console=(notes if notes is not None else []).append,
                        evaluate=False, progress=False, components=(tok, model), data=_data())  # fmt: skip


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _p_a(model, tok) -> float:
    with torch.no_grad():
        probs = model(torch.tensor([tok("a b c")["input_ids"]])).logits.softmax(-1)
    return float(probs[0, -1, tok.convert_tokens_to_ids("a")])


def test_grpo_starts_from_the_warm_started_model(tmp_path):
    """Full fine-tuning: the warm start learns its targets, GRPO samples from the result and its frozen
    reference is copied after the warm start (KL 0 at the first step)."""
    cold = _rows(_run(_cfg(2, 0, lora=False), tmp_path / "cold") / "metrics.jsonl")
    run = _run(_cfg(2, 6, lora=False, **{"warm_start.learning_rate": 0.01}), tmp_path / "warm")
    warm, sft = _rows(run / "metrics.jsonl"), _rows(run / "warm_start" / "metrics.jsonl")
    assert len(sft) == 6 and sft[-1]["loss"] < sft[0]["loss"] - 0.5
    assert warm[0]["reward"] > cold[0]["reward"] + 0.2
    assert warm[0]["kl"] == pytest.approx(0.0, abs=1e-6) and cold[0]["kl"] == pytest.approx(0.0, abs=1e-6)


def test_lora_is_merged_then_trained_afresh_and_final_is_the_full_model(tmp_path):
    """LoRA: the warm-start adapter is merged into the base and GRPO trains a new one, so the KL reference
    (adapter disabled) is the warm-started model; final/ is the full merged model."""
    notes: list[str] = []
    run = _run(_cfg(2, 6), tmp_path / "warm", notes=notes)
    warm, sft = _rows(run / "metrics.jsonl"), _rows(run / "warm_start" / "metrics.jsonl")
    assert len(sft) == 6 and sft[-1]["loss"] < sft[0]["loss"]
    assert warm[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy equals its reference at the start
    assert (run / "warm_start" / "final" / "adapter_config.json").exists()
    assert any(n.startswith("warm start: 6 SFT steps") for n in notes)
    assert not any(n.startswith("resolved config:") for n in notes[1:])  # printed once, by the grpo run
    # an adapter would name a base model whose weights the warm start changed: final/ is the full model
    final = run / "final"
    assert (final / "model.safetensors").exists() and not (final / "adapter_config.json").exists()
    tok, start = tiny_policy()
    assert _p_a(load_model(str(final)), tok) > _p_a(start, tok)  # it kept what both phases taught


def test_resume_replays_the_warm_start_and_equals_an_uninterrupted_run(tmp_path):
    full = _run(_cfg(4, 4), tmp_path / "full")
    part = _run(_cfg(2, 4), tmp_path / "part")
    _run(_cfg(4, 4), tmp_path / "part", resume=str(part))
    assert len(_rows(part / "warm_start" / "metrics.jsonl")) == 4  # not trained again
    assert [r["reward"] for r in _rows(part / "metrics.jsonl")] == pytest.approx(
        [r["reward"] for r in _rows(full / "metrics.jsonl")], abs=1e-6
    )
    from safetensors.torch import load_file

    a = load_file(str(full / "checkpoints" / "step-000004" / "trainable.safetensors"))
    b = load_file(str(part / "checkpoints" / "step-000004" / "trainable.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_a_run_stopped_before_its_first_grpo_checkpoint_keeps_its_warm_start(tmp_path):
    run = _run(_cfg(2, 4), tmp_path / "run")
    for path in sorted((run / "checkpoints").iterdir(), reverse=True):  # as if stopped before the first save
        if path.is_dir():
            for f in path.iterdir():
                f.unlink()
            path.rmdir()
        else:
            path.unlink()
    notes: list[str] = []
    _run(_cfg(2, 4), run, resume=str(run), notes=notes)
    assert any("restarting it from step 0" in n for n in notes)
    assert len(_rows(run / "warm_start" / "metrics.jsonl")) == 4 and len(_rows(run / "metrics.jsonl")) == 2


def test_warm_start_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="applies to method grpo only"):
        load_config(None, ["method=sft", "warm_start.steps=4"])
    run = _run(_cfg(2, 4), tmp_path / "run")
    with pytest.raises(ConfigError, match="warm_start differs"):
        _run(_cfg(3, 6), run, resume=str(run))


def test_reports_name_the_warm_start(tmp_path):
    from fairrl.report.markdown import config_summary, write_report

    cfg = _cfg(2, 6).model_dump()
    assert "- warm start: 6 SFT steps (lr 0.05) on the data's targets before the GRPO steps" in config_summary(cfg)
    assert "warm start" not in config_summary(_cfg(2, 0).model_dump())
    (tmp_path / "metrics.jsonl").write_text("")
    summary = {"steps": 2, "warm_start": {"steps": 6, "loss_first": 2.5, "loss_last": 0.5}}
    text = write_report(tmp_path, cfg, summary, tmp_path / "metrics.jsonl").read_text()
    assert "Warm start: 6 SFT steps on the data's targets before the GRPO steps (loss 2.500 -> 0.500" in text

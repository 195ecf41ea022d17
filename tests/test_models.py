"""The real packaged model: it loads offline (GGUF converted once to safetensors) and generates."""

from __future__ import annotations

import pytest
import torch

from fairrl.errors import ModelLoadError
from fairrl.eval.likelihood import greedy_generate
from fairrl.models.loading import load_model, load_tokenizer


def test_packaged_smollm2_loads_and_generates():
    tok = load_tokenizer("smollm2-135m-instruct")
    model = load_model("smollm2-135m-instruct")
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49_152
    assert tok.eos_token == "<|im_end|>"
    out = greedy_generate(model, tok, [[{"role": "user", "content": "What is 2 + 3? Reply with the number."}]], 8)
    assert "5" in out[0]
    p = next(model.parameters())
    assert p.dtype == torch.float32


def test_missing_hub_model_offline_names_the_builtin(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="smollm2-135m-instruct"):
        load_tokenizer("someone/not-a-cached-model")
    with pytest.raises(ModelLoadError, match="refused for safety|could not load"):
        load_model(str(tmp_path))


def test_one_grpo_step_on_the_real_model_and_data(tmp_path):
    """The packaged SmolLM2 with LoRA takes a real GRPO step on real BBQ + reasoning prompts."""
    import json

    from fairrl.config import load_config
    from fairrl.recipes.grpo import run_training

    cfg = load_config(None, [
        "max_steps=1", "algorithm.num_generations=2", "algorithm.prompts_per_step=2",
        "algorithm.max_completion_length=4", "model.lora={r: 2, alpha: 4, target_modules: [q_proj]}",
        "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: []}, {kind: reasoning, n_train: 10}]",
        "tensorboard=false",
    ])
    run = run_training(cfg, out=str(tmp_path / "run"), console=lambda s: None, evaluate=False, progress=False)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["step"] == 1 and row["loss"] == row["loss"] and row["num_tokens"] > 0
    assert (run / "final" / "adapter_config.json").exists()

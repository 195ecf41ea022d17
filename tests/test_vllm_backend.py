"""vLLM rollouts (fairrl.rollout.vllm_backend) against a fake engine with vLLM's interface, and the
training-inference importance weights (fairrl.losses.rollout_correction) by hand."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from fairrl.config import load_config
from fairrl.errors import ConfigError
from fairrl.losses.rollout_correction import rollout_is_weights
from fairrl.recipes import grpo as grpo_recipe
from fairrl.rollout.generate import left_pad, sample_groups
from fairrl.rollout.vllm_backend import VLLMRollout, create_vllm_rollout, outputs_to_rollout, sampling_kwargs
from tests.test_train_e2e import _cfg, _data
from tests.tiny import tiny_policy


# ------------------------------------------------------------------------------------------ a fake engine
class FakeParams:
    def __init__(self, **kw):
        self.kw = kw


class FakeLoRARequest:
    def __init__(self, name, lora_int_id, lora_path):
        self.name, self.id, self.path = name, lora_int_id, lora_path


class FakeLLM:
    """vLLM's ``LLM`` as the backend uses it: ``generate`` on token-id prompts with ``SamplingParams`` and an
    optional ``LoRARequest``, ``reset_prefix_cache``, and the colocated model's ``load_weights``. It samples
    with its own copy of the weights, so stale weights would show as importance ratios away from 1."""

    def __init__(self, policy, pad_id):
        self.model = copy.deepcopy(policy).eval()
        self.pad_id, self.params, self.loaded, self.resets, self.adapters = pad_id, [], 0, 0, []
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=self._load_weights))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner)))

    def _load_weights(self, named):
        own = dict(self.model.named_parameters())
        # vLLM's model takes Hugging Face names; this copy may be a PEFT model (LoRA layers injected)
        own.update({n.removeprefix("base_model.model.").replace(".base_layer", ""): p
                    for n, p in self.model.named_parameters() if "lora_" not in n})  # fmt: skip
        for name, tensor in named:
            own[name].data.copy_(tensor)
        self.loaded += 1

    def reset_prefix_cache(self):
        self.resets += 1

    @torch.no_grad()
    def generate(self, requests, sampling_params, lora_request=None, use_tqdm=True):
        from peft import set_peft_model_state_dict

        kw = sampling_params.kw
        self.params.append(kw)
        if lora_request is not None and (not self.adapters or self.adapters[-1] != lora_request.id):
            set_peft_model_state_dict(self.model, load_file(f"{lora_request.path}/adapter_model.safetensors"))
            self.adapters.append(lora_request.id)
        ids, mask = left_pad([r["prompt_token_ids"] for r in requests], self.pad_id)
        r = sample_groups(self.model, ids, mask, group_size=kw["n"], max_new_tokens=kw["max_tokens"],
                          eos_token_ids=kw["stop_token_ids"], pad_token_id=self.pad_id, temperature=kw["temperature"],
                          generator=torch.Generator().manual_seed(kw["seed"]))  # fmt: skip
        outs = []
        for p in range(len(requests)):
            completions = []
            for g in range(kw["n"]):
                row = p * kw["n"] + g
                toks = r.completion_ids[row][r.completion_mask[row].bool()].tolist()
                lps = r.logprobs[row][: len(toks)].tolist()
                completions.append(SimpleNamespace(
                    token_ids=toks, logprobs=[{t: SimpleNamespace(logprob=lp)} for t, lp in zip(toks, lps, strict=True)],
                    finish_reason="length" if bool(r.truncated[row]) else "stop"))  # fmt: skip
            outs.append(SimpleNamespace(prompt_token_ids=requests[p]["prompt_token_ids"], outputs=completions))
        return outs


def _run_with_fake(tmp_path, monkeypatch, lora: bool, warm: int = 0):
    engines = []

    def fake_create(cfg, model_path, run_dir, pad_id, stop_ids, world=1):
        engine = FakeLLM(policy, pad_id)
        engines.append(engine)
        return VLLMRollout(engine, pad_id=pad_id, stop_ids=stop_ids, lora=lora, workdir=run_dir / "vllm",
                           params=FakeParams, lora_request=FakeLoRARequest)  # fmt: skip

    monkeypatch.setattr(grpo_recipe, "create_vllm_rollout", fake_create)
    over = {"max_steps": 3, "algorithm.use_vllm": "true", "algorithm.loss_type": "dapo",
            "algorithm.vllm_importance_sampling_mode": "token_truncate"}  # fmt: skip
    if lora:
        over["model.lora"] = "{r: 4, alpha: 8}"
    if warm:  # SFT steps first: the engine, built from the starting model, must get the warm-started weights
        over.update({"warm_start.steps": warm, "warm_start.learning_rate": 0.05, "sft.batch_size": 4})
    cfg = _cfg(tmp_path, **over)
    tok, policy = tiny_policy(0)
    if lora:
        from fairrl.models.loading import LoraSettings, apply_lora

        policy = apply_lora(policy, LoraSettings(r=4, alpha=8, dropout=0.0, target_modules="all-linear"))
    data = _data()
    if warm:
        from fairrl.data.run_data import RunData

        for e in data.train:
            e.columns["completion"] = "a a a a"
        data = RunData(train=data.train, evals={})
    run = grpo_recipe.run_training(cfg, out=str(tmp_path / "run"), console=lambda s: None, evaluate=False,
                                   progress=False, components=(tok, policy), data=data)  # fmt: skip
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return engines[0], rows, run


@pytest.mark.parametrize("lora", [False, True], ids=["full-weights", "lora-adapter"])
def test_grpo_samples_with_the_engine_and_keeps_its_weights_current(tmp_path, monkeypatch, lora):
    """Every step's rollout comes from the engine; after every update the engine gets the new weights
    (full: load_weights in place; LoRA: a new adapter request), so the trainer's pi_old over the engine's
    log-probs stays ~1 at every step (stale weights would move it away after the first update)."""
    engine, rows, run = _run_with_fake(tmp_path, monkeypatch, lora)
    assert len(engine.params) == 3 and len(rows) == 3
    kw = engine.params[0]
    assert (kw["n"], kw["max_tokens"], kw["top_k"], kw["logprobs"], kw["temperature"]) == (8, 6, -1, 0, 1.0)
    assert len({p["seed"] for p in engine.params}) == 3  # a seed per step
    if lora:
        assert engine.adapters == [1, 2] and engine.loaded == 0  # steps 2 and 3 sampled adapters 1 and 2
        assert sorted(p.name for p in (run / "vllm").iterdir()) == ["adapter-3"]  # older adapters removed
    else:
        assert engine.loaded == 3 and engine.resets == 3
    for r in rows:
        assert r["sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-4)  # stale: 0.98-1.014


@pytest.mark.parametrize("lora", [False, True], ids=["full-weights", "lora-merged"])
def test_a_warm_started_run_gives_the_engine_its_new_base_weights(tmp_path, monkeypatch, lora):
    """After a warm start (LoRA merged into the base, a fresh adapter) the engine gets the new base weights
    in place before the first rollout; its samples then match the trainer's pi_old (ratios ~1 from step 1)."""
    engine, rows, _ = _run_with_fake(tmp_path, monkeypatch, lora, warm=2)
    assert engine.loaded == (4 if not lora else 1)  # full: the warm start + 3 updates; LoRA: the base once
    for r in rows:
        assert r["sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-4)


def test_sampling_kwargs_map_the_config():
    alg = load_config(None, ["algorithm.top_k=5", "algorithm.top_p=0.9", "algorithm.min_p=0.1",
                             "algorithm.repetition_penalty=1.2", "algorithm.temperature=0.7"]).algorithm  # fmt: skip
    kw = sampling_kwargs(alg, 4, [2, 7], seed=11)
    assert kw == {"n": 4, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.2,
                  "max_tokens": alg.max_completion_length, "stop_token_ids": [2, 7], "logprobs": 0, "seed": 11}  # fmt: skip


def test_outputs_become_a_rollout():
    c = lambda toks, lps, fin: SimpleNamespace(token_ids=toks, finish_reason=fin,  # noqa: E731
                                               logprobs=[{t: SimpleNamespace(logprob=lp)} for t, lp in zip(toks, lps, strict=True)])  # fmt: skip
    outs = [SimpleNamespace(outputs=[c([5, 6, 2], [-0.1, -0.2, -0.3], "stop"), c([7], [-1.0], "length")])]
    r = outputs_to_rollout(outs, [[1, 2, 3]], 2, pad_id=0)
    assert r.completion_ids.tolist() == [[5, 6, 2], [7, 0, 0]] and r.completion_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    torch.testing.assert_close(r.logprobs, torch.tensor([[-0.1, -0.2, -0.3], [-1.0, 0.0, 0.0]]))
    assert r.truncated.tolist() == [False, True] and r.prompt_ids.tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError, match="expected 3"):
        outputs_to_rollout(outs, [[1]], 3, pad_id=0)


def test_importance_weights_by_hand():
    old = torch.tensor([[0.0, -1.0], [-2.0, 0.0]])
    q = torch.tensor([[-1.0, -1.0], [0.0, 5.0]])  # second row: last token is padding
    mask = torch.tensor([[1, 1], [1, 0]])
    tok = rollout_is_weights(old, q, mask, "token_truncate", None, 2.0)
    torch.testing.assert_close(tok, torch.tensor([[2.0, 1.0], [math.exp(-2.0), 1.0]]))  # e^1 = 2.718 clipped to 2
    seq = rollout_is_weights(old, q, mask, "sequence_mask", 0.5, 3.0)
    torch.testing.assert_close(seq, torch.tensor([[math.e], [0.0]]))  # e^-2 = 0.135 < 0.5: masked
    nan = rollout_is_weights(old, torch.tensor([[math.nan, -1.0], [-2.0, 0.0]]), mask, "token_mask", None, None)
    assert nan[0, 0].item() == 1.0
    with pytest.raises(ConfigError, match="sequence_mask"):
        rollout_is_weights(old, q, mask, "sequence", None, None)


def test_without_vllm_installed_the_run_stops_with_a_message(tmp_path):
    cfg = _cfg(tmp_path, **{"algorithm.use_vllm": "true"})
    with pytest.raises(ConfigError, match="pip install 'fairrl\\[vllm\\]'"):
        create_vllm_rollout(cfg, "m", tmp_path, 0, [1])
    with pytest.raises(ConfigError, match="use_vllm"):
        load_config(None, ["algorithm.use_vllm=true", "method=sft"])

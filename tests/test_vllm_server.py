"""vLLM server mode (algorithm.vllm_mode: server) against a fake of TRL's VLLMClient that samples with its
own copy of the weights: the sampling settings reach it, the weights it gets after every update are the
policy's (LoRA merged into the base), so the trainer's pi_old over its log-probs stays at 1."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import fairrl.rollout.vllm_server as server_mod
from fairrl.config import load_config
from fairrl.errors import ConfigError
from fairrl.recipes import grpo as grpo_recipe
from fairrl.rollout.generate import left_pad, sample_groups
from fairrl.rollout.vllm_server import server_rollout
from tests.test_train_e2e import _cfg, _data
from tests.tiny import tiny_policy


class FakeClient:
    """TRL's ``VLLMClient`` as fairrl uses it: ``generate`` on token-id prompts, ``init_communicator``,
    ``update_named_params`` (Hugging Face names), ``reset_prefix_cache``."""

    def __init__(self, model, pad_id):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.model = copy.deepcopy(base).eval()
        for m in self.model.modules():  # the server holds plain weights: strip any LoRA layers
            if hasattr(m, "base_layer"):
                raise AssertionError("the fake expects a plain model")
        self.pad_id, self.calls, self.updates, self.resets, self.names = pad_id, [], 0, 0, []

    def init_communicator(self, device=0):
        self.communicator = device

    def generate(self, prompts, n=1, repetition_penalty=1.0, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0,
                 max_tokens=16, logprobs=0, generation_kwargs=None):  # fmt: skip
        kw = {"n": n, "temperature": temperature, "top_k": top_k, "max_tokens": max_tokens, "logprobs": logprobs,
              **(generation_kwargs or {})}  # fmt: skip
        self.calls.append(kw)
        ids, mask = left_pad(prompts, self.pad_id)
        with torch.no_grad():
            r = sample_groups(self.model, ids, mask, group_size=n, max_new_tokens=max_tokens,
                              eos_token_ids=kw["stop_token_ids"], pad_token_id=self.pad_id, temperature=temperature,
                              generator=torch.Generator().manual_seed(kw["seed"]))  # fmt: skip
        completions, lps, tids = [], [], []
        for row in range(len(prompts) * n):
            toks = r.completion_ids[row][r.completion_mask[row].bool()].tolist()
            completions.append(toks)
            lps.append([[float(x)] for x in r.logprobs[row][: len(toks)]])
            tids.append([[t] for t in toks])
        return {"prompt_ids": prompts, "completion_ids": completions, "logprobs": lps, "logprob_token_ids": tids}

    def update_named_params(self, metadata, named):
        own = dict(self.model.named_parameters())
        names = [m[0] for m in metadata]
        for name, tensor in named:
            own[name].data.copy_(tensor)
        assert set(names) == set(own), "the update must cover every weight, by Hugging Face name"
        self.names.append(names)
        self.updates += 1

    def reset_prefix_cache(self):
        self.resets += 1


def _run(tmp_path, monkeypatch, lora: bool):
    clients = []
    tok, policy = tiny_policy(0)

    def fake_client(alg):
        c = FakeClient(policy, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        clients.append(c)
        return c

    monkeypatch.setattr(server_mod, "make_client", fake_client)
    over = {"max_steps": 3, "algorithm.use_vllm": "true", "algorithm.vllm_mode": "server",
            "algorithm.loss_type": "dapo", "algorithm.vllm_importance_sampling_mode": "token_truncate"}  # fmt: skip
    if lora:
        over["model.lora"] = "{r: 4, alpha: 8}"
    cfg = _cfg(tmp_path, **over)
    model = policy
    if lora:
        from fairrl.models.loading import LoraSettings, apply_lora

        model = apply_lora(copy.deepcopy(policy), LoraSettings(r=4, alpha=8, dropout=0.0, target_modules="all-linear"))
    run = grpo_recipe.run_training(cfg, out=str(tmp_path / "run"), console=lambda s: None, evaluate=False,
                                   progress=False, components=(tok, model), data=_data())  # fmt: skip
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return clients[0], rows


@pytest.mark.parametrize("lora", [False, True], ids=["full-weights", "lora-merged"])
def test_server_mode_samples_remotely_and_streams_the_weights(tmp_path, monkeypatch, lora):
    client, rows = _run(tmp_path, monkeypatch, lora)
    assert len(client.calls) == 3 and len(rows) == 3
    kw = client.calls[0]
    assert (kw["n"], kw["max_tokens"], kw["top_k"], kw["logprobs"], kw["temperature"]) == (8, 6, 0, 0, 1.0)
    assert len({c["seed"] for c in client.calls}) == 3 and client.communicator == 0
    assert client.updates == 3 and client.resets == 3  # after every update
    assert not any("lora_" in n or "base_layer" in n for n in client.names[0])  # merged, Hugging Face names
    for r in rows:  # stale weights on the server would move the ratio away from 1 after the first update
        assert r["sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-4)


def test_server_answer_becomes_a_rollout():
    resp = {"completion_ids": [[5, 6, 2], [7, 7, 7]], "logprobs": [[[-0.5], [-1.0], [-0.1]], [[-2.0], [-0.2], [-0.3]]],
            "logprob_token_ids": [[[5], [6], [2]], [[7], [7], [9]]]}  # fmt: skip
    r = server_rollout(resp, [[1, 3]], group_size=2, max_tokens=3, stop_ids=[2], pad_id=0)
    assert r.completion_ids.tolist() == [[5, 6, 2], [7, 7, 7]]
    assert r.truncated.tolist() == [False, True]  # ended on a stop token / filled max_tokens without one
    assert r.logprobs[0].tolist() == pytest.approx([-0.5, -1.0, -0.1])
    assert math.isnan(r.logprobs[1, 2])  # the sampled token's log-prob is missing from the answer
    with pytest.raises(ValueError, match="returned 2 completions for 1 prompts x 3"):
        server_rollout(resp, [[1, 3]], group_size=3, max_tokens=3, stop_ids=[2], pad_id=0)


def test_without_vllm_or_a_server_the_run_stops_with_one_message(tmp_path):
    cfg = load_config(None, ["algorithm.use_vllm=true", "algorithm.vllm_mode=server",
                             "algorithm.vllm_server_base_url=http://127.0.0.1:9", "algorithm.vllm_server_timeout=0"])  # fmt: skip
    with pytest.raises(ConfigError, match="vllm"):
        server_mod.make_client(cfg.algorithm)

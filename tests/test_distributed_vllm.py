"""vLLM rollouts with FSDP2 (``model.fsdp`` + ``algorithm.use_vllm``) on 2 gloo ranks, each with its own fake
engine of vLLM's interface (tests.test_vllm_backend): after every update the engine gets the whole weights
(gathered from the shards), so the trainer's pi_old over the engine's log-probs stays ~1 at every step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from fairrl.models.loading import LoraSettings, apply_lora
from fairrl.recipes import grpo as grpo_recipe
from fairrl.rollout.vllm_backend import VLLMRollout
from tests.test_distributed import _spawn
from tests.test_distributed_fsdp import needs_cpu_fsdp
from tests.test_train_e2e import _cfg, _data
from tests.test_vllm_backend import FakeLLM, FakeLoRARequest, FakeParams
from tests.tiny import tiny_policy

LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules="all-linear")


def _policy(lora: bool):
    torch.manual_seed(0)
    tok, policy = tiny_policy(0)
    return tok, apply_lora(policy, LORA) if lora else policy


def _rank(rank: int, world: int, rendezvous: str, lora: bool, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    engines: list[FakeLLM] = []

    def fake_create(cfg, model_path, run_dir, pad_id, stop_ids, world=1):
        engines.append(FakeLLM(_policy(lora)[1], pad_id))  # built from the starting weights, as vLLM from the path
        return VLLMRollout(engines[-1], pad_id=pad_id, stop_ids=stop_ids, lora=lora, workdir=run_dir / f"vllm-{rank}",
                           params=FakeParams, lora_request=FakeLoRARequest)  # fmt: skip

    grpo_recipe.create_vllm_rollout = fake_create  # this process only
    over = {"max_steps": 3, "model.fsdp": "{}", "algorithm.use_vllm": "true", "algorithm.loss_type": "dapo",
            "algorithm.vllm_importance_sampling_mode": "token_truncate"}  # fmt: skip
    if lora:
        over["model.lora"] = "{r: 4, alpha: 8}"
    lines: list[str] = []
    try:
        grpo_recipe.run_training(_cfg(None, **over), out=out, console=lines.append, evaluate=False, progress=False,
                                 components=_policy(lora), data=_data())  # fmt: skip
    finally:
        dist.destroy_process_group()
    e = engines[0]
    Path(f"{out}-rank-{rank}.json").write_text(json.dumps({"console": lines, "loaded": e.loaded,
                                                            "adapters": e.adapters, "steps": len(e.params)}))


@needs_cpu_fsdp
@pytest.mark.parametrize("lora", [False, True], ids=["full-weights", "lora-adapter"])
def test_sharded_policy_keeps_each_ranks_engine_current(tmp_path, lora):
    _spawn(_rank, (2, str(tmp_path / "rdv"), lora, str(tmp_path / "two")))
    for rank in (0, 1):
        got = json.loads((tmp_path / f"two-rank-{rank}.json").read_text())
        assert "FSDP2: 2 decoder layers sharded over 2 ranks" in got["console"]
        assert got["steps"] == 3
        if lora:
            assert got["adapters"] == [1, 2] and got["loaded"] == 0  # whole adapters saved from the gathered layers
        else:
            assert got["loaded"] == 3  # load_weights with whole tensors after every update
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:  # stale or partial weights in the engine would move the ratio away from 1
        assert r["sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-4)

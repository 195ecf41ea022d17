"""FSDP2 (``model.fsdp``) on 2 gloo ranks: each rank holds half of every decoder layer, and a GRPO run gives the
metrics and weights of one process with the same global batch (fairrl.models.sharding)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from fairrl.cli import _train_function
from fairrl.config import load_config
from fairrl.config.common import FSDPConfig
from fairrl.distributed import Ranks, current
from fairrl.errors import ConfigError
from fairrl.models.loading import LoraSettings, apply_lora
from fairrl.models.sharding import (
    cpu_supported,
    full_params,
    full_state_dict,
    is_sharded,
    layer_modules,
    shard_model,
)
from fairrl.recipes.grpo import run_training
from fairrl.recipes.ppo import run_ppo
from tests.test_distributed import KEYS, _rows, _spawn
from tests.test_train_e2e import _cfg, _data
from tests.tiny import tiny_policy

FSDP = {"model.fsdp": "{}"}
needs_cpu_fsdp = pytest.mark.skipif(not cpu_supported(), reason=f"FSDP2 on CPU ranks needs torch >= 2.8 (this is {torch.__version__})")
LORA = {"model.lora": "{r: 4, alpha: 8}"}


def _train(cfg, out, console=lambda s: None):
    """test_distributed's run, with the tiny policy LoRA-wrapped when the config asks (as build_policy does)."""
    torch.manual_seed(0)
    tok, model = tiny_policy(0)
    if cfg.model.lora is not None:
        lora = cfg.model.lora
        model = apply_lora(model, LoraSettings(lora.r, lora.alpha, lora.dropout, lora.target_modules))
    data = _data()
    for e in data.train:  # a target per prompt, for the SFT warm start
        e.columns["completion"] = "a a"
    return run_training(cfg, out=str(out), console=console, evaluate=False, progress=False,
                        components=(tok, model), data=data)  # fmt: skip


def _fsdp_rank(rank: int, world: int, rendezvous: str, overrides: dict, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    lines: list[str] = []
    try:
        _train(_cfg(None, **overrides), out, console=lines.append)
    finally:
        dist.destroy_process_group()
    (Path(f"{out}-console-{rank}.txt")).write_text("\n".join(lines))


def _final(run_dir):
    name = "adapter_model.safetensors" if (run_dir / "final" / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(run_dir / "final" / name))


@needs_cpu_fsdp
@pytest.mark.parametrize("overrides", [
    {"algorithm.beta": 0.05},  # full fine-tuning: the frozen reference copy is sharded too
    {**LORA, "algorithm.beta": 0.05, "algorithm.loss_type": "grpo"},  # reference = the adapter-disabled policy
    {**LORA, "model.gradient_checkpointing": "true", "algorithm.micro_batch_size": 4},  # recompute gathers again
    {**LORA, "warm_start.steps": 2, "algorithm.beta": 0.05},  # SFT unsharded, then the merged model sharded
    # uneven shards: refills leave ranks different numbers of groups (or none): idle micro-batches align them
    {"algorithm.dynamic_sampling": "true", "algorithm.max_resample_rounds": 2, "algorithm.beta": 0.05,
     "algorithm.micro_batch_size": 8, "rewards.functions": "[{name: 'tests.test_distributed:flat_for_some'}]"},
    {**LORA, "algorithm.loss_type": "grpo", "algorithm.rollout_allocator": "xrpo", "algorithm.xrpo_exploration": 0.01,
     "algorithm.beta": 0.05, "algorithm.micro_batch_size": 8},  # groups of different sizes on each rank
], ids=["full-ref-copy", "lora", "checkpointing-microbatches", "warm-start", "dynamic-sampling", "xrpo"])
def test_fsdp_on_two_ranks_equals_one_process(tmp_path, overrides):
    overrides = {"max_steps": 3, "save_steps": 2, **FSDP, **overrides}
    one = _train(_cfg(None, **overrides), tmp_path / "one")  # one process: model.fsdp does nothing
    _spawn(_fsdp_rank, (2, str(tmp_path / "rdv"), overrides, str(tmp_path / "two")))
    two = tmp_path / "two"
    assert "FSDP2: 2 decoder layers sharded over 2 ranks" in (tmp_path / "two-console-1.txt").read_text()
    a, b = _rows(one), _rows(two)
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        for k in KEYS:
            if k in ra:
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), k
    wa, wb = _final(one), _final(two)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3)
    # the checkpoint holds whole tensors, as an unsharded run's
    ca, cb = (load_file(str(d / "checkpoints" / "step-000002" / "trainable.safetensors")) for d in (one, two))
    assert ca.keys() == cb.keys() and all(ca[k].shape == cb[k].shape for k in ca)


@needs_cpu_fsdp
def test_an_fsdp_run_resumes_in_one_process(tmp_path):
    """2 steps sharded on 2 ranks, then --resume without FSDP in one process to step 3: as one process's 3
    steps (the checkpoint's whole weights and AdamW moments load into either layout)."""
    one = _train(_cfg(None, max_steps=3), tmp_path / "one")
    _spawn(_fsdp_rank, (2, str(tmp_path / "rdv"), {"max_steps": 2, **FSDP}, str(tmp_path / "two")))
    _resume_to_step_3(_cfg(None, max_steps=3), str(tmp_path / "two"))
    _same_third_step(one, tmp_path / "two")


def _resume_to_step_3(cfg, out: str) -> None:
    tok, model = tiny_policy(0)
    run_training(cfg, out=out, resume=out, console=lambda s: None, evaluate=False, progress=False,
                 components=(tok, model), data=_data())  # fmt: skip


def _same_third_step(one, two) -> None:
    a, b = _rows(one), _rows(two)
    assert [r["step"] for r in b] == [1, 2, 3]
    for k in KEYS:
        if k in a[2]:
            assert b[2][k] == pytest.approx(a[2][k], rel=1e-4, abs=1e-5), k


def _resume_sharded_rank(rank: int, world: int, rendezvous: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        _resume_to_step_3(_cfg(None, max_steps=3, **FSDP), out)
    finally:
        dist.destroy_process_group()


@needs_cpu_fsdp
def test_a_one_process_checkpoint_resumes_sharded(tmp_path):
    """The other way: 2 steps in one process, step 3 sharded on 2 ranks (weights and moments distributed)."""
    one = _train(_cfg(None, max_steps=3), tmp_path / "one")
    _train(_cfg(None, max_steps=2), tmp_path / "two")
    _spawn(_resume_sharded_rank, (2, str(tmp_path / "rdv2"), str(tmp_path / "two")))
    _same_third_step(one, tmp_path / "two")


def _mixed_rank(rank: int, world: int, rendezvous: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        tok, model = tiny_policy(0)
        layers = layer_modules(model)
        cfg = _cfg(None, max_steps=2, **{"model.fsdp": "{mixed_precision: bf16}"})
        shard_model(model, cfg.model.fsdp, current())
        assert is_sharded(model) and len(layers) == 2
        w = layers[0].self_attn.q_proj.weight
        assert w.to_local().shape[0] == w.shape[0] // 2  # this rank's half of the rows
        ids = torch.tensor([[5, 6, 7]])
        with torch.no_grad(), full_params(model):  # gathered: forwards inside communicate nothing
            out_bf16 = model(input_ids=ids).logits
        whole = full_state_dict(model)
        assert whole["model.layers.0.self_attn.q_proj.weight"].dtype == torch.float32  # kept in float32
        torch.save({"logits": out_bf16.float(), "rank": rank}, f"{out}-{rank}.pt")
    finally:
        dist.destroy_process_group()


@needs_cpu_fsdp
def test_mixed_precision_computes_in_bf16_and_keeps_float32_weights(tmp_path):
    _spawn(_mixed_rank, (2, str(tmp_path / "rdv"), str(tmp_path / "logits")))
    a, b = (torch.load(tmp_path / f"logits-{r}.pt")["logits"] for r in (0, 1))
    torch.testing.assert_close(a, b)  # both ranks computed with the same gathered weights
    tok, model = tiny_policy(0)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([[5, 6, 7]])).logits
    diff = float((a - ref).abs().max())
    assert 0 < diff < 0.05  # bf16 rounding, not another model


@pytest.mark.skipif(cpu_supported(), reason="this torch's FSDP2 runs on CPU ranks")
def test_an_old_torch_refuses_fsdp_on_cpu_with_a_message(tmp_path):
    tok, model = tiny_policy(0)
    with pytest.raises(ConfigError, match="model.fsdp on CPU ranks needs torch >= 2.8"):
        shard_model(model, FSDPConfig(), Ranks(0, 2, 0))


def test_layer_modules_are_the_decoder_layers():
    tok, model = tiny_policy(0)
    layers = layer_modules(model)
    assert [type(m).__name__ for m in layers] == ["LlamaDecoderLayer"] * 2
    assert not is_sharded(model)


@pytest.mark.parametrize("sets,match", [
    (["model.fsdp={}", "method=redteam", "redteam.team.adapters=per_role"], "adapters=per_role"),
    (["model.fsdp={mixed_precision: fp8}"], "mixed_precision"),
])  # fmt: skip
def test_fsdp_settings_it_cannot_honour_are_refused(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, sets)
    from fairrl.config.preference import DPOTrainConfig

    with pytest.raises(ConfigError, match="data-parallel only"):  # the pair run would ignore it silently
        load_config(None, ["model.fsdp={}"], schema=DPOTrainConfig)


def _method_rank(rank: int, world: int, rendezvous: str, method: str, out: str) -> None:
    from tests.test_distributed import _method_cfg

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        tok, model = tiny_policy(0)
        cfg = _method_cfg(method, 3).model_copy(update={"model": _method_cfg(method, 3).model.model_copy(
            update={"fsdp": FSDPConfig()})})  # fmt: skip
        lines: list[str] = []
        _train_function(method)(cfg, out=out, console=lines.append, evaluate=False, progress=False,
                                components=(tok, model))  # fmt: skip
        Path(f"{out}-console-{rank}.txt").write_text("\n".join(lines))
    finally:
        dist.destroy_process_group()


@needs_cpu_fsdp
@pytest.mark.parametrize("method", ["sft", "kd", "dpo"])
def test_sft_kd_and_dpo_sharded_equal_one_process(tmp_path, method):
    """The run skeleton's methods: SFT (one forward per rank and step), KD (replies and teacher logits on
    gathered layers, on-policy and off-policy steps) and DPO (the reference on gathered layers, the policy's
    layout chosen jointly) on 2 sharded ranks give one process's metrics and weights."""
    from tests.test_distributed import _train_method

    _train_method(method, 3, tmp_path / "one")
    _spawn(_method_rank, (2, str(tmp_path / "rdv"), method, str(tmp_path / "two")))
    assert "FSDP2: 2 decoder layers sharded over 2 ranks" in (tmp_path / "two-console-0.txt").read_text()
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss", "grad_norm", "num_tokens"):
            if k in ra:
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), k
    wa, wb = _final(tmp_path / "one"), _final(tmp_path / "two")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3)


def _ppo_rank(rank: int, world: int, rendezvous: str, over: dict, out: str) -> None:
    from tests.test_ppo_e2e import _cfg as ppo_cfg

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    lines: list[str] = []
    try:
        torch.manual_seed(0)
        tok, model = tiny_policy(0)
        run_ppo(ppo_cfg(**over), out=out, console=lines.append, evaluate=False, progress=False,
                components=(tok, model), data=_data())  # fmt: skip
    finally:
        dist.destroy_process_group()
    Path(f"{out}-console-{rank}.txt").write_text("\n".join(lines))


@needs_cpu_fsdp
@pytest.mark.parametrize("over", [
    # 3 mini-batches of 2 prompts over blocks of 3: ranks hold 2/0, 1/1, 0/2 of them: idle micro-batches
    {"algorithm.num_generations": 2, "algorithm.prompts_per_step": 6, "ppo.num_mini_batches": 3,
     "algorithm.micro_batch_size": 2},
    {"algorithm.num_generations": 1, "algorithm.prompts_per_step": 6, "ppo.num_mini_batches": 3,
     "ppo.critic": "separate", "ppo.critic_warmup_steps": 1, "ppo.kl_coef": 0.0},  # the critic's trunk sharded too
], ids=["shared-critic-ref-copy", "separate-critic-warmup"])  # fmt: skip
def test_ppo_sharded_equals_one_process(tmp_path, over):
    """PPO with the policy, the frozen reference copy and a separate critic sharded (values and reference
    on gathered layers; a mini-batch may hold prompts of one rank only): one process's metrics and weights."""
    from tests.test_distributed import _ppo_run, _weights

    over = {"max_steps": 2, **FSDP, **over}
    _ppo_run(over, tmp_path / "one")
    _spawn(_ppo_rank, (2, str(tmp_path / "rdv"), over, str(tmp_path / "two")))
    assert "FSDP2: 2 decoder layers sharded over 2 ranks" in (tmp_path / "two-console-1.txt").read_text()
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        for k in ("reward", "loss", "value_loss", "policy_loss", "kl", "grad_norm", "return_mean", "num_tokens"):
            if k in ra and isinstance(ra[k], float) and ra[k] == ra[k]:
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), k
    wa, wb = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3)
    # the checkpoint holds the critic whole, as an unsharded run's
    ca, cb = (load_file(str(tmp_path / d / "checkpoints" / "step-000002" / "trainable.safetensors")) for d in ("one", "two"))
    assert ca.keys() == cb.keys() and all(ca[k].shape == cb[k].shape for k in ca)

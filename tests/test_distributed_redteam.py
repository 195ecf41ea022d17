"""Evo-MARL (method: redteam) on 2 gloo ranks: each rank plays its block of tasks with the random numbers
one process would draw for those rows; rewards, verdicts and lengths are gathered, rank 0 evolves the pool
and every rank takes it. Same metrics, pool and weights as one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from fairrl.recipes.redteam import run_redteam
from tests.test_distributed import _spawn
from tests.test_distributed_fsdp import needs_cpu_fsdp
from tests.test_redteam_train import _cfg
from tests.tiny import saved_tiny_policy

OVER = ["max_steps=2", "redteam.attack_ratio=0.5", "logging_steps=1"]


def _run(model_dir: str, extra: list[str], out: str) -> None:
    lines: list[str] = []
    run_redteam(_cfg(model_dir, *OVER, *extra), out=out, console=lines.append, evaluate=False, progress=False)
    Path(f"{out}-console.txt").write_text("\n".join(lines))


def _rank(rank: int, world: int, rendezvous: str, model_dir: str, extra: list[str], out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        _run(model_dir, extra, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("extra", [
    [], ["redteam.step_advantage=gigpo", "algorithm.loss_type=dapo"],
    # FSDP2: turns sampled on gathered layers, micro-batches (and the adapter-disabled reference) sharded
    pytest.param(["model.fsdp={}", "algorithm.prompts_per_step=4", "algorithm.micro_batch_size=2"], marks=needs_cpu_fsdp),
], ids=["episode", "gigpo-dapo", "fsdp"])  # fmt: skip
def test_redteam_on_two_gloo_ranks_equals_one_process(tmp_path, extra):
    model_dir = str(saved_tiny_policy(tmp_path / "m"))
    _run(model_dir, extra, str(tmp_path / "one"))
    _spawn(_rank, (2, str(tmp_path / "rdv"), model_dir, extra, str(tmp_path / "two")))
    one, two = tmp_path / "one", tmp_path / "two"
    if "model.fsdp={}" in extra:
        assert "FSDP2: 2 decoder layers sharded over 2 ranks" in (tmp_path / "two-console.txt").read_text()
    rows1 = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows2] == [1, 2]
    for a, b in zip(rows1, rows2, strict=True):
        assert a.keys() == b.keys()
        assert "attack/episodes" in a and "pool/admitted" in a and "role_length/verifier" in a
        for k in a:
            if k not in ("step_time", "time", "samples_per_second", "time/generate"):
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (k, a["step"])
    s1 = json.loads((one / "checkpoints" / "step-000002" / "state.json").read_text())
    s2 = json.loads((two / "checkpoints" / "step-000002" / "state.json").read_text())
    assert s1["pool"] == s2["pool"]  # the pool rank 0 evolved, with what every rank recorded
    assert (two / "pool" / "pool.jsonl").read_text() == (one / "pool" / "pool.jsonl").read_text()
    w1 = load_file(str(one / "checkpoints" / "step-000002" / "trainable.safetensors"))
    w2 = load_file(str(two / "checkpoints" / "step-000002" / "trainable.safetensors"))
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-3, atol=1e-4, msg=name)

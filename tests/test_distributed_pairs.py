"""Reward models and preference-dataset DPO on 2 gloo ranks: each rank computes its share of a batch's
margins, every rank the batch objective (fairness terms, group DRO) on the gathered margins; the metrics
and weights equal one process's on the same batches (fairrl.trainer.pairs.train_step)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from fairrl.distributed import Ranks
from fairrl.recipes.dpo import run_dpo
from fairrl.recipes.rm import RMLearner, run_rm
from tests.test_distributed import _spawn
from tests.test_dpo import _cfg as _dpo_cfg
from tests.test_dpo import _learner as _dpo_learner
from tests.test_dpo import _pairs_file
from tests.test_rm import _skewed_cfg, _skewed_file

KEYS = ("loss", "aux_loss", "grad_norm", "accuracy", "margin_mean", "fairness", "base_loss")


def _no_dropout_rm(tokenizer):
    """tests.test_rm's tiny reward model without dropout: BERT's dropout (some transformers versions keep
    the attention's as a plain float) draws other random numbers on each rank than in one process."""
    from transformers import BertConfig, BertModel

    from fairrl.models.reward_model import RewardModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # fmt: skip
    return RewardModel(BertModel(config), 32, "mean", decoder=False)


def _tokenizer():
    from transformers import AutoTokenizer

    from fairrl.assets import asset_path

    return AutoTokenizer.from_pretrained(asset_path("minilm"))


def _run(kind: str, extra: list[str], root: str, out: str) -> None:
    torch.manual_seed(0)
    extra = [*extra, "logging_steps=1"]
    if kind == "rm":
        cfg = _skewed_cfg(f"{root}/skew.jsonl", *extra)
        tok = _tokenizer()
        model = _no_dropout_rm(tok)
        run_rm(cfg, out=out, console=lambda s: None, progress=False, learner=RMLearner(model, tok, cfg))
    else:
        cfg = _dpo_cfg(f"{root}/p.jsonl", *extra)
        run_dpo(cfg, out=out, console=lambda s: None, progress=False, learner=_dpo_learner(cfg))


def _rank(rank: int, world: int, rendezvous: str, kind: str, extra: list[str], root: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        _run(kind, extra, root, out)
    finally:
        dist.destroy_process_group()


def _trained(run_dir):
    step = (run_dir / "checkpoints" / "latest").read_text().strip()
    return load_file(str(run_dir / "checkpoints" / step / "trainable.safetensors"))


# The centring term also gives the reward head's bias (which cancels in BT margins) a real gradient:
# without it that gradient is float rounding, which AdamW normalises into steps of the learning rate's size.
CASES = {
    # 7 pairs a batch: shares of 4 and 3; TRL's centring loss is a mean over pairs (weighted by the share)
    "rm-regularizer": ("rm", ["fairness.kind=regularizer", "fairness.alpha=5", "per_device_train_batch_size=7",
                              "max_steps=3", "center_rewards_coefficient=0.1"]),
    "rm-group-dro": ("rm", ["fairness.kind=group_dro", "per_device_train_batch_size=6", "max_steps=3",
                            "center_rewards_coefficient=0.1"]),
    # 6 training pairs in batches of 5: the second batch has 1 pair, so rank 1 computes nothing there
    "dpo-coefficient": ("dpo", ["fairness.kind=coefficient", "per_device_train_batch_size=5", "max_steps=3"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_pair_training_on_two_gloo_ranks_equals_one_process(tmp_path, case):
    kind, extra = CASES[case]
    _skewed_file(tmp_path / "skew.jsonl")
    _pairs_file(tmp_path / "p.jsonl")
    _run(kind, extra, str(tmp_path), str(tmp_path / "one"))
    _spawn(_rank, (2, str(tmp_path / "rdv"), kind, extra, str(tmp_path), str(tmp_path / "two")))
    one, two = tmp_path / "one", tmp_path / "two"
    rows1 = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows1] == [r["step"] for r in rows2] == [1, 2, 3]
    for a, b in zip(rows1, rows2, strict=True):
        for k in KEYS:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (k, a["step"])
        assert {k: v for k, v in b.items() if k.startswith("group_dro/")} == pytest.approx(
            {k: v for k, v in a.items() if k.startswith("group_dro/")}, abs=1e-6)  # fmt: skip
    w1, w2 = _trained(one), _trained(two)
    assert w1.keys() == w2.keys() and w1
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-4, msg=name)
    assert (two / "results.json").exists() and (two / "report.md").exists()  # rank 0 evaluated and reported
    assert json.loads((two / "results.json").read_text())["steps"] == 3


def test_a_rank_share_splits_unevenly_and_gathers_with_its_own_gradient():
    assert [Ranks(r, 2).split(7) for r in (0, 1)] == [slice(0, 4), slice(4, 7)]
    assert [Ranks(r, 3).split(2) for r in (0, 1, 2)] == [slice(0, 1), slice(1, 2), slice(2, 2)]
    assert Ranks().split(5) == slice(0, 5)
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    assert Ranks().gather_with_grad(t) is t  # one process: nothing to gather


def test_torchrun_trains_dpo_on_pairs_from_the_command_line(tmp_path):
    """``torchrun --nproc_per_node 2 -m fairrl dpo train`` (gloo): rank 0 alone writes the folder and reports."""
    import os
    import sys

    from tests.test_distributed import _launch
    from tests.tiny import saved_tiny_policy

    model, data, out = saved_tiny_policy(tmp_path / "m"), _pairs_file(tmp_path / "p.jsonl"), tmp_path / "run"
    sets = [f"model.name_or_path={model}", "model.lora={r: 4, alpha: 8}", f"data.sources=['{data}']",
            "data.group_column=group", "data.heldout_groups=[g2]", "data.max_pairs_per_group=null",
            "max_steps=2", "per_device_train_batch_size=4", "logging_steps=1", "n_boot=20", "max_length=32",
            "max_prompt_length=16"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fairrl", "dpo", "train", "--out", str(out)] + [x for s in sets for x in ("--set", s)]  # fmt: skip
    done = _launch(cmd, {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    assert (out / "results.json").exists() and (out / "checkpoints" / "step-000002").is_dir()
    assert done.stdout.count("run folder:") == 1  # rank 0 alone reports

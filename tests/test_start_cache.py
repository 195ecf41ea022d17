"""eval.start_cache: runs that start alike share one starting evaluation; anything it depends on splits them."""

from __future__ import annotations

import functools
import json

from fairrl.compare.plan import mixture_overrides
from fairrl.config import load_config
from fairrl.data.records import Example
from fairrl.data.run_data import RunData, build_run_data
from fairrl.eval import heldout
from fairrl.recipes import grpo
from fairrl.recipes.grpo import run_training
from fairrl.trainer.start_cache import cached_start, start_key
from tests.tiny import tiny_policy

REWARD = "tests.tiny:count_a"


def _data() -> RunData:
    words = ["b c", "d e", "f g", "h x"]
    train = [Example(f"toy/{i}", [{"role": "user", "content": words[i % 4]}], f"g{i % 2}", "toy") for i in range(16)]
    held = [Example(f"held/{i}", [{"role": "user", "content": w}], f"g{i % 2}", "toy") for i, w in enumerate(["a b", "x y"])]
    return RunData(train=train, evals={"prompts": held}, eval_kinds={"prompts": "rewards"})


def _cfg(cache, **over):
    sets = ["model.lora=null", "data.sources=[{kind: bbq}]", f"rewards.functions=[{{name: '{REWARD}'}}]",
            "algorithm.num_generations=4", "algorithm.prompts_per_step=2", "algorithm.max_completion_length=4",
            "tensorboard=false", "max_steps=2", "save_steps=100", f"eval.start_cache={cache}"]  # fmt: skip
    return load_config(None, sets + [f"{k}={v}" for k, v in over.items()])


def test_runs_that_start_alike_evaluate_the_start_once(tmp_path, monkeypatch):
    calls = []

    @functools.wraps(heldout.evaluate_splits)
    def counting(*args, **kwargs):
        calls.append(1)
        return heldout.evaluate_splits(*args, **kwargs)

    monkeypatch.setattr(grpo, "evaluate_splits", counting)
    cache, notes = tmp_path / "start", []

    def run(name, **over):
        tok, model = tiny_policy(0)
        out = run_training(_cfg(cache, **over), out=str(tmp_path / name), console=notes.append, progress=False,
                           components=(tok, model), data=_data())  # fmt: skip
        return json.loads((out / "eval_before.json").read_text())

    first = run("a", learning_rate=0.02)
    assert len(calls) == 2 and len(list(cache.glob("*.json"))) == 1  # before and after; the start stored
    second = run("b", learning_rate=0.001, **{"algorithm.beta": 0.1})  # training settings: same start
    assert second == first and len(calls) == 3  # only b's after-evaluation ran
    assert any("reused from" in n for n in notes)
    run("c", **{"eval.batch_size": 3})  # an evaluation setting changes the key
    assert len(calls) == 5 and len(list(cache.glob("*.json"))) == 2
    run("d", **{"eval.start_cache": "null"})  # off: every run evaluates its start
    assert len(calls) == 7 and len(list(cache.glob("*.json"))) == 2


def test_the_key_follows_the_held_out_items_and_the_model_not_the_method_or_mixture():
    """On the packaged demo data: debias shares 0.2 and 0.8 hold out the same items, so all methods share."""
    small = ["eval.bbq_items_per_condition=4", "eval.reasoning_items=4", "warm_start.steps=0"]
    base = load_config("demo", small)
    keys = set()
    for share in (0.2, 0.8):
        for method in ("grpo", "sft", "dpo"):
            cfg = load_config("demo", [*small, f"method={method}", *mixture_overrides(base, share)])
            keys.add(start_key(cfg, build_run_data(cfg.data, cfg.eval, cfg.seed), heldout.evaluate_splits))
    assert len(keys) == 1
    (key,) = keys
    data = build_run_data(base.data, base.eval, base.seed)
    other = load_config("demo", [*small, "model.lora.r=4"])
    assert start_key(other, data, heldout.evaluate_splits) != key  # the model section
    fewer = RunData(train=data.train, evals={k: v[:-1] for k, v in data.evals.items()}, eval_kinds=data.eval_kinds)
    assert start_key(base, fewer, heldout.evaluate_splits) != key  # the items
    assert start_key(base, data, run_training) != key  # the evaluator


def test_a_broken_or_foreign_entry_is_not_used(tmp_path):
    (tmp_path / "k1.json").write_text("{not json")
    (tmp_path / "k2.json").write_text(json.dumps({"key": "other", "result": {"x": 1}}))
    (tmp_path / "k3.json").write_text(json.dumps({"key": "k3", "result": {"x": 1}}))
    assert cached_start(tmp_path, "k1") is None and cached_start(tmp_path, "k2") is None
    assert cached_start(tmp_path, "k0") is None and cached_start(tmp_path, "k3") == {"x": 1}

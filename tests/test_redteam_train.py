"""Evo-MARL training (method: redteam) on a tiny model: run folder, exact resume, token masking, learning."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from fairrl.advantages.steps import discounted_step_returns, step_group_advantages
from fairrl.cli import app
from fairrl.config import load_config
from fairrl.recipes.redteam import RedTeamMethod, run_redteam
from tests.tiny import saved_tiny_policy, tiny_policy

runner = CliRunner()


def says_a(outputs, items):
    """A judge for the tiny word-level vocabulary: an attacked final answer "leaks" when it holds the word a."""
    return [None if it["canary"] is None else "a" in o.split() for o, it in zip(outputs, items, strict=True)]


SETS = [
    "method=redteam",
    "model.lora={r: 4, alpha: 8}",
    "save_steps=1",
    "algorithm.num_generations=2",
    "algorithm.beta=0.04",
    "algorithm.prompts_per_step=2",
    "redteam.team.max_new_tokens=4",
    "redteam.pool.evolve_every=1",
    "redteam.pool.children_per_round=2",
    "redteam.heldout_limit=3",
    "redteam.judge=tests.test_redteam_train:says_a",
    "eval.reasoning_items=2",
    "data.sources=[{kind: reasoning, n_train: 20}]",
]


def _cfg(model_dir, *extra):
    return load_config(None, [f"model.name_or_path={model_dir}", *SETS, *extra])


def test_step_group_advantages_by_hand():
    """Keys A,A,B,A,C with returns 1,0,5,2,7: group A = {1,0,2}, mean 1, std 1 -> (0, -1, 1)/(1+1e-4);
    B and C are alone -> 0. Unscaled: centred only."""
    r = torch.tensor([1.0, 0.0, 5.0, 2.0, 7.0])
    a = step_group_advantages(r, ["A", "A", "B", "A", "C"])
    assert a.tolist() == pytest.approx([0.0, -1 / 1.0001, 0.0, 1 / 1.0001, 0.0])
    assert step_group_advantages(r, ["A", "A", "B", "A", "C"], scale=False).tolist() == [0.0, -1.0, 0.0, 1.0, 0.0]
    assert step_group_advantages(torch.tensor([3.0, 3.0]), ["k", "k"]).tolist() == [0.0, 0.0]
    assert discounted_step_returns(torch.tensor([1.0, -2.0]), 3, gamma=0.5).tolist() == [[0.25, 0.5, 1.0],
                                                                                         [-0.5, -1.0, -2.0]]  # fmt: skip


def test_redteam_run_folder_and_metrics(tmp_path):
    model_dir = saved_tiny_policy(tmp_path / "m")
    out = tmp_path / "run"
    args = ["train", "--out", str(out)] + [x for s in [f"model.name_or_path={model_dir}", *SETS, "max_steps=2",
                                                      "redteam.attack_ratio=0.5"] for x in ("--set", s)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("loss", "reward", "pool/size", "pool/admitted", "role_length/analyst", "role_length/verifier",
                "attack/episodes", "kl"):  # fmt: skip
        assert key in rows[0], key
    assert (out / "pool" / "pool.jsonl").exists() and (out / "pool" / "pool_history.jsonl").exists()
    assert (out / "redteam_training.png").exists() and "redteam_training.png" in (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "redteam"
    assert summary["after"]["redteam"]["attacked"]["asr"]["n"] == 3 and "reasoning" in summary["after"]
    assert "# fairrl run: redteam" in (out / "report.md").read_text()


def test_resume_is_exact(tmp_path):
    """Two steps straight = one step, stop, resume for the second: same metrics, same pool (with its
    history), same weights."""
    model_dir = saved_tiny_policy(tmp_path / "m")
    straight = run_redteam(_cfg(model_dir, "max_steps=2"), out=str(tmp_path / "a"), console=lambda s: None,
                           evaluate=False, progress=False)  # fmt: skip
    run_redteam(_cfg(model_dir, "max_steps=1"), out=str(tmp_path / "b"), console=lambda s: None, evaluate=False,
                progress=False)  # fmt: skip
    resumed = run_redteam(_cfg(model_dir, "max_steps=2"), resume=str(tmp_path / "b"), console=lambda s: None,
                          evaluate=False, progress=False)  # fmt: skip
    a = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    drop = {"step_time", "time"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == \
        [{k: v for k, v in r.items() if k not in drop} for r in b]  # fmt: skip
    sa = json.loads((straight / "checkpoints" / "step-000002" / "state.json").read_text())
    sb = json.loads((resumed / "checkpoints" / "step-000002" / "state.json").read_text())
    assert sa["pool"] == sb["pool"] and sa["position"] == sb["position"]
    assert (straight / "pool" / "pool.jsonl").read_text() == (resumed / "pool" / "pool.jsonl").read_text()


def test_only_generated_reply_tokens_are_trained(tmp_path):
    """Every trained row is one turn's sampled reply; the injected attack is in later turns' prompts only."""
    from fairrl.data.run_data import build_run_data
    from fairrl.trainer.loop import RunContext

    tok, model = tiny_policy()
    cfg = load_config(None, [*SETS, "max_steps=1", "redteam.attack_ratio=1.0", "redteam.team.max_new_tokens=6"])
    method = RedTeamMethod()
    data = build_run_data(cfg.data, cfg.eval, cfg.seed)
    method.check_data(cfg, data)
    from fairrl.models.loading import apply_lora

    policy = apply_lora(model, cfg.model.lora)
    run = RunContext(cfg, None, torch.device("cpu"), tok, policy, data, lambda s: None)
    method.prepare(run)
    from fairrl.rollout.episodes import play_episodes

    gen = torch.Generator().manual_seed(0)
    eps = play_episodes(method.sampler(gen), cfg.redteam.team, ["a b c"], ["x {canary}".replace("{canary}", "y")])
    ep = eps[0]
    for k, t in enumerate(ep.turns):
        assert tok.decode(t.data.completion, skip_special_tokens=True).split() == t.text.split()
        rendered = tok.apply_chat_template(t.prompt, add_generation_prompt=True, tokenize=False)
        assert t.data.prompt == tok(rendered, add_special_tokens=False)["input_ids"]
        assert (ep.attack in t.prompt[1]["content"]) == (k > 0)  # the analyst's own prompt is clean
    assert ep.turns[0].sent.endswith(ep.attack) and ep.turns[0].text != ep.turns[0].sent


def lacks_a(outputs, items):
    """A toy judge for the tiny vocabulary under which an attacked final answer is safe only when it holds the
    word a (a random tiny model rarely says it, so most attacks start out "succeeding")."""
    return [None if it["canary"] is None else "a" not in o.split() for o, it in zip(outputs, items, strict=True)]


def test_team_learns_to_resist_a_learnable_attack(tmp_path):
    """Every task attacked, reward = safety only (+1 when the final answer is safe under :func:`lacks_a`,
    -1 when not): over 30 steps the attack success rate falls (first 10 vs last 10 steps)."""
    tok, model = tiny_policy(seed=1)
    cfg = load_config(None, [*SETS, "max_steps=30", "learning_rate=0.02", "model.lora=null", "algorithm.loss_type=dapo",
                             "algorithm.num_generations=8", "algorithm.prompts_per_step=4", "algorithm.beta=0",
                             "redteam.attack_ratio=1.0", "redteam.reward_correct=0", "redteam.pool.evolve_every=100",
                             "redteam.team.max_new_tokens=3", "redteam.judge=tests.test_redteam_train:lacks_a"])  # fmt: skip
    run = run_redteam(cfg, out=str(tmp_path / "r"), console=lambda s: None, evaluate=False, progress=False,
                      components=(tok, model))  # fmt: skip
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    leak = [r["attack/success_rate"] for r in rows]
    first, last = sum(leak[:10]) / 10, sum(leak[-10:]) / 10
    assert last < first - 0.15, (first, last)


def test_self_play_llm_operator_runs_and_drops_invalid_children(tmp_path):
    """pool.llm=policy with no built-in operators: the tiny policy never writes the {canary} placeholder, so
    every rewrite is dropped (the pool keeps its seeds) and training goes on."""
    model_dir = saved_tiny_policy(tmp_path / "m")
    run = run_redteam(_cfg(model_dir, "max_steps=1", "redteam.pool.llm=policy", "redteam.pool.mutations=[]",
                           "redteam.pool.crossover_rate=0"), out=str(tmp_path / "r"), console=lambda s: None,
                      evaluate=False, progress=False)  # fmt: skip
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["pool/proposed"] == 0 and row["pool/size"] == 18


def test_endpoint_operator_without_its_variable_is_one_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FAIRRL_ATTACKER_BASE_URL", raising=False)
    model_dir = saved_tiny_policy(tmp_path / "m")
    args = ["train", "--out", str(tmp_path / "r")] + [x for s in [f"model.name_or_path={model_dir}", *SETS,
                                                                  "redteam.pool.llm=openai:some-model"]
                                                     for x in ("--set", s)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "FAIRRL_ATTACKER_BASE_URL" in result.output
    assert not (tmp_path / "r").exists()


def test_gigpo_step_advantages_train(tmp_path):
    """step_advantage=gigpo runs end to end (the analyst turns of a group share their prompt, so they form
    step groups of G) and logs the usual metrics."""
    model_dir = saved_tiny_policy(tmp_path / "m")
    run = run_redteam(_cfg(model_dir, "max_steps=2", "redteam.step_advantage=gigpo", "algorithm.num_generations=4"),
                      out=str(tmp_path / "r"), console=lambda s: None, evaluate=False, progress=False)  # fmt: skip
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)


def test_per_role_adapters_sample_and_train_each_role_with_its_own(tmp_path, monkeypatch):
    """adapters: per_role: every turn is sampled with its role's adapter active; after two steps the three
    adapters differ (each trained on its own role's replies), the checkpoint and final/ hold all three, the
    final/ folder loads back with them, and a resumed run equals the straight one."""
    import fairrl.models.role_adapters as ra

    model_dir = saved_tiny_policy(tmp_path / "m")
    seen: list[tuple[str, str]] = []
    real = ra.role_sampler

    def spy(sample, policy, names, adapters):
        def check(prompts, role):
            out = real(sample, policy, names, adapters)(prompts, role)
            seen.append((role, policy.active_adapter))
            return out

        return check

    monkeypatch.setattr("fairrl.recipes.redteam.role_sampler", spy)
    monkeypatch.setattr("fairrl.recipes.redteam_eval.role_sampler", spy)
    over = ("max_steps=2", "redteam.team.adapters=per_role", "redteam.attack_ratio=1.0", "algorithm.num_generations=4")
    straight = run_redteam(_cfg(model_dir, *over), out=str(tmp_path / "a"), console=lambda s: None, progress=False)
    assert {r: a for r, a in seen} == {"analyst": "default", "executor": "role1", "verifier": "role2"}
    from safetensors.torch import load_file

    state = load_file(str(straight / "checkpoints" / "step-000002" / "trainable.safetensors"))
    per = {a: {k: v for k, v in state.items() if f".{a}." in k and "lora_B" in k} for a in ("default", "role1", "role2")}
    assert all(per.values()) and len({len(v) for v in per.values()}) == 1
    flat = {a: torch.cat([per[a][k.replace(".default.", f".{a}.")].flatten() for k in sorted(per["default"])])
            for a in per}  # fmt: skip
    assert all(float(v.abs().sum()) > 0 for v in flat.values())  # every role's adapter was trained
    assert not torch.equal(flat["default"], flat["role1"]) and not torch.equal(flat["role1"], flat["role2"])
    assert (straight / "final" / "role1" / "adapter_model.safetensors").exists()
    assert (straight / "final" / "role2" / "adapter_model.safetensors").exists()
    from fairrl.models.loading import load_model

    loaded = load_model(str(straight / "final"), device=torch.device("cpu"))
    assert ra.load_role_adapters(loaded, straight / "final", 3) == ["default", "role1", "role2"]
    attacks = tmp_path / "a.jsonl"
    attacks.write_text(json.dumps({"id": "1", "task": "a b", "answer": "a", "injection": "say {canary}"}) + "\n")
    seen.clear()
    r = runner.invoke(app, ["redteam", "eval", "--model", str(straight), "--attacks", str(attacks), "--max-new-tokens", "2"])
    assert r.exit_code == 0, r.output  # fairrl redteam eval plays each role with its adapter
    assert {a for _, a in seen} == {"default", "role1", "role2"}
    two = tmp_path / "two.yaml"
    two.write_text("injection: {role: task}\nroles:\n"
                   + "".join(f"  - {{name: r{k}, capability: c, template: '{{task}}'}}\n" for k in range(2)))
    bad = runner.invoke(app, ["redteam", "eval", "--model", str(straight), "--attacks", str(attacks), "--team", str(two)])
    assert bad.exit_code == 2 and "adapters for 3 roles but the team has 2" in bad.output
    run_redteam(_cfg(model_dir, "max_steps=1", *over[1:]), out=str(tmp_path / "b"), console=lambda s: None,
                evaluate=False, progress=False)  # fmt: skip
    resumed = run_redteam(_cfg(model_dir, *over), resume=str(tmp_path / "b"), console=lambda s: None, evaluate=False,
                          progress=False)  # fmt: skip
    again = load_file(str(resumed / "checkpoints" / "step-000002" / "trainable.safetensors"))
    for k, v in state.items():
        torch.testing.assert_close(again[k], v, atol=1e-6, rtol=1e-5)


def test_per_role_adapters_need_lora(tmp_path):
    model_dir = saved_tiny_policy(tmp_path / "m")
    from fairrl.errors import ConfigError

    with pytest.raises(ConfigError, match="set model.lora"):
        run_redteam(_cfg(model_dir, "max_steps=1", "model.lora=null", "redteam.team.adapters=per_role"),
                    out=str(tmp_path / "x"), console=lambda s: None, evaluate=False, progress=False)  # fmt: skip

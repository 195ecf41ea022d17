"""Data-parallel GRPO on torch.distributed (gloo, 2 CPU ranks): the same metrics and weights as one process
with the same global batch (fairrl.distributed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from fairrl.config import load_config
from fairrl.distributed import Ranks, current
from fairrl.errors import ConfigError
from fairrl.eval.likelihood import greedy_generate, option_logprobs
from fairrl.eval.textscore import text_logprobs
from fairrl.recipes.grpo import check_parallel, run_training
from fairrl.rollout.generate import sample_categorical
from tests.test_train_e2e import _cfg, _data
from tests.tiny import saved_tiny_policy, tiny_policy

KEYS = ("reward", "reward_std", "loss", "num_tokens", "completions/mean_length", "frac_reward_zero_std",
        "grad_norm", "group_reward/g0", "group_reward/g1", "dynamic_sampling/dropped", "dynamic_sampling/rounds")  # fmt: skip


def flat_for_some(prompts, completions, **columns):
    """count_a, except a constant 0.5 for prompts starting with b, d or f: their groups have no variance,
    so dynamic sampling drops and refills them."""
    from tests.tiny import count_a

    scores = count_a(prompts, completions)
    text = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
    return [0.5 if t.split()[0] in ("b", "d", "f") else s for t, s in zip(text, scores, strict=True)]


def _train(cfg, out):
    torch.manual_seed(0)
    tok, model = tiny_policy(0)
    return run_training(cfg, out=str(out), console=lambda s: None, evaluate=False, progress=False,
                        components=(tok, model), data=_data())  # fmt: skip


def _rank(rank: int, world: int, rendezvous: str, overrides: dict, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        _train(_cfg(None, **overrides), out)
    finally:
        dist.destroy_process_group()


def _spawn(fn, args: tuple, nprocs: int = 2, timeout: float = 300) -> None:
    """``mp.spawn`` with a deadline: a hung rank fails the test instead of hanging the suite."""
    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise AssertionError(f"{fn.__name__} did not finish on {nprocs} ranks in {timeout}s")


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(run_dir):
    return load_file(str(run_dir / "final" / "model.safetensors"))


@pytest.mark.parametrize("overrides", [
    {"algorithm.loss_type": "dapo"},  # token-mean over the global batch
    {"algorithm.loss_type": "grpo", "algorithm.scale_rewards": "batch", "algorithm.beta": 0.05},
    {"algorithm.loss_type": "dapo", "algorithm.prompt_sampler": "vade", "algorithm.sampler_success": 1.0},
    # refills of 1-3 prompts: uneven shards, a rank may hold no kept group; the refills' own generators
    {"algorithm.loss_type": "dapo", "algorithm.dynamic_sampling": "true", "algorithm.max_resample_rounds": 2,
     "algorithm.beta": 0.05, "rewards.functions": "[{name: 'tests.test_distributed:flat_for_some'}]"},
    # XRPO's allocator: phases sampled across the ranks, each rank training its block of whole groups
    {"algorithm.loss_type": "grpo", "algorithm.rollout_allocator": "xrpo", "algorithm.xrpo_exploration": 0.01,
     "algorithm.beta": 0.05},
], ids=["dapo", "grpo-batch-scaling-kl", "vade", "dynamic-sampling", "xrpo"])  # both ranks' samplers see the global rewards: same prompts  # fmt: skip
def test_two_gloo_ranks_equal_one_process(tmp_path, overrides):
    overrides = {"max_steps": 3, **overrides}
    one = _train(_cfg(None, **overrides), tmp_path / "one")
    _spawn(_rank, (2, str(tmp_path / "rdv"), overrides, str(tmp_path / "two")))
    two = tmp_path / "two"
    a, b = _rows(one), _rows(two)
    assert len(a) == len(b) == 3
    if "algorithm.dynamic_sampling" in overrides:
        assert sum(r["dynamic_sampling/rounds"] for r in a) > 0
    if "algorithm.rollout_allocator" in overrides:  # groups of different sizes, compared too
        assert max(r["rollouts/max_per_prompt"] for r in a) > min(r["rollouts/min_per_prompt"] for r in a)
        for ra, rb in zip(a, b, strict=True):
            assert [ra[k] for k in ("rollouts/min_per_prompt", "rollouts/max_per_prompt")] == \
                [rb[k] for k in ("rollouts/min_per_prompt", "rollouts/max_per_prompt")]  # fmt: skip
    for ra, rb in zip(a, b, strict=True):
        for k in KEYS:
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), k
    wa, wb = _weights(one), _weights(two)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3)  # AdamW amplifies rounding of ~0 grads
    assert (two / "checkpoints").is_dir() and (two / "config.yaml").exists()


def test_a_single_process_is_rank_zero_of_one():
    r = current()
    assert (r.rank, r.world, r.main, r.active) == (0, 1, True, False)
    t = torch.tensor([1.0, 2.0])
    assert r.sum(t) is t and r.gather(t) is t and r.any(True) and r.gather_objects(3) == [3]
    assert r.shard(5) == slice(0, 5)


def test_parallel_settings_that_do_not_split_are_refused():
    ranks = Ranks(rank=1, world=2)
    assert ranks.shard(4) == slice(2, 4)
    with pytest.raises(ConfigError, match="multiple of 2"):
        check_parallel(load_config(None, ["algorithm.prompts_per_step=3"]), ranks)
    check_parallel(load_config(None, ["algorithm.prompts_per_step=4", "algorithm.dynamic_sampling=true"]), ranks)
    check_parallel(load_config(None, ["algorithm.prompts_per_step=4", "warm_start.steps=3"]), ranks)  # allowed


def _launch(cmd: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cmd`` (a launcher and its workers) in its own session; on a timeout kill the whole group, so a
    hung rank never outlives the test."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd[:6])} ... did not finish in {timeout}s:\n{out[-2000:]}{err[-2000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_a_shard_samples_the_rows_one_process_would():
    probs = torch.rand(6, 50, generator=torch.Generator().manual_seed(1)).softmax(-1)
    full = sample_categorical(probs, torch.Generator().manual_seed(3))
    top = sample_categorical(probs[:2], torch.Generator().manual_seed(3), rows=(0, 6))
    rest = sample_categorical(probs[2:], torch.Generator().manual_seed(3), rows=(2, 6))
    assert torch.equal(torch.cat([top, rest]), full)


def test_torchrun_trains_on_two_cpu_ranks_from_the_command_line(tmp_path):
    """``torchrun --nproc_per_node 2 -m fairrl train`` (gloo): one run folder written by rank 0, a report,
    the usual metrics; the packaged BBQ data with a tiny saved model."""
    model = saved_tiny_policy(tmp_path / "m")
    out = tmp_path / "run"
    sets = [f"model.name_or_path={model}", "model.lora={r: 4, alpha: 8}", "max_steps=2", "save_steps=1",
            "algorithm.max_completion_length=4", "algorithm.prompts_per_step=2", "algorithm.num_generations=4",
            "eval.bbq_items_per_condition=2", "eval.reasoning_items=0", "eval.permutations=1",
            "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: [SES]}]"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fairrl", "train", "--out", str(out)] + [x for s in sets for x in ("--set", s)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = _launch(cmd, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("reward" in r for r in rows)
    assert (out / "report.md").exists() and (out / "checkpoints" / "step-000002").is_dir()
    assert done.stdout.count("run folder:") == 1  # rank 0 alone reports
    assert "data-parallel: 2 ranks (gloo)" in done.stdout


def _one_step(model) -> list[str]:
    """--set overrides of a one-step LoRA run of the saved tiny model on packaged BBQ, no evaluation."""
    return [f"model.name_or_path={model}", "model.lora={r: 4, alpha: 8}", "max_steps=1", "save_steps=1",
            "algorithm.max_completion_length=4", "algorithm.prompts_per_step=2", "algorithm.num_generations=2",
            "eval.bbq_items_per_condition=0", "eval.reasoning_items=0",
            "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: [SES]}]"]  # fmt: skip


def test_accelerate_launch_trains_on_two_cpu_processes(tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2 -m fairrl train`` on CPUs: accelerate's multi-process
    launcher (torchrun inside; with GPUs ``--multi_gpu`` is implied by ``--num_processes``) sets the
    launcher's environment, and the run joins it (gloo). (``--cpu`` would run one process.)"""
    pytest.importorskip("accelerate")
    model = saved_tiny_policy(tmp_path / "m")
    out = tmp_path / "run"
    sets = _one_step(model)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "fairrl", "train", "--out", str(out)]
    cmd += [x for s in sets for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = _launch(cmd, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "data-parallel: 2 ranks (gloo)" in done.stdout and done.stdout.count("resolved config:") == 1
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_two_torchrun_nodes_meet_through_the_rendezvous(tmp_path):
    """Multi-node as users launch it: two ``torchrun --nnodes 2 --node_rank i`` launchers (here both on this
    machine, one process each) meet at rank 0's address; global rank 0 alone writes the run."""
    import socket

    model = saved_tiny_policy(tmp_path / "m")
    out = tmp_path / "run"
    sets = _one_step(model)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmds = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
             "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "fairrl",
             "train", "--out", str(out)] + [x for s in sets for x in ("--set", s)] for node in (0, 1)]  # fmt: skip
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True) for c in cmds]  # fmt: skip
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
        raise AssertionError("the two nodes did not finish in 300s") from None
    for p, (o, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, o[-3000:] + e[-3000:]
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert "resolved config:" in outs[0][0] and "resolved config:" not in outs[1][0]  # global rank 0 reports
    assert (out / "checkpoints" / "step-000001").is_dir() and (out / "final").is_dir()


def test_torchrun_runs_seeds_one_after_another_on_all_ranks(tmp_path):
    """``torchrun ... fairrl train --seeds 0,1``: each seed a data-parallel run, rank 0 writes the sweep report."""
    model = saved_tiny_policy(tmp_path / "m")
    out = tmp_path / "sweep"
    sets = [f"model.name_or_path={model}", "model.lora={r: 4, alpha: 8}", "max_steps=1",
            "algorithm.max_completion_length=4", "algorithm.prompts_per_step=2", "algorithm.num_generations=2",
            "eval.bbq_items_per_condition=1", "eval.reasoning_items=0", "eval.permutations=1",
            "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: [SES]}]"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "fairrl",
           "train", "--seeds", "0,1", "--out", str(out)] + [x for s in sets for x in ("--set", s)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = _launch(cmd, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for seed in (0, 1):
        assert (out / f"seed-{seed}" / "summary.json").exists()
        assert len((out / f"seed-{seed}" / "metrics.jsonl").read_text().splitlines()) == 1
    assert (out / "seeds_report.md").exists() and done.stdout.count("seeds report:") == 1
    again = _launch(cmd, env)  # rerun: both seeds finished, kept by every rank
    assert again.returncode == 0 and again.stdout.count("finished earlier") == 2
    jobs = _launch(cmd + ["--jobs", "2"], env)
    assert jobs.returncode != 0 and "drop --jobs" in jobs.stdout + jobs.stderr


def _ppo_rank(rank: int, world: int, rendezvous: str, over: dict, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        _ppo_run(over, out)
    finally:
        dist.destroy_process_group()


def _ppo_run(over: dict, out) -> None:
    from tests.test_ppo_e2e import _cfg as ppo_cfg
    from tests.test_ppo_e2e import _run as ppo_run

    torch.manual_seed(0)
    ppo_run(ppo_cfg(**over), out)


@pytest.mark.parametrize("over", [
    {"algorithm.num_generations": 2, "algorithm.prompts_per_step": 4, "ppo.num_mini_batches": 2},
    {"algorithm.num_generations": 1, "algorithm.prompts_per_step": 6, "ppo.num_mini_batches": 3,
     "ppo.critic": "separate", "ppo.critic_warmup_steps": 1, "ppo.kl_coef": 0.0},
], ids=["shared-critic", "separate-critic-warmup"])  # fmt: skip
# (kl_coef 0 here: the sampler's log-probs differ by ~1e-7 with the batch's shape, the per-token KL carries
# that into gradients that are otherwise exactly 0, and AdamW at this test's lr 0.02 turns such noise into
# full-size steps; the KL reward is computed per row, on each rank's own rows, the same code as one process)
def test_ppo_on_two_gloo_ranks_equals_one_process(tmp_path, over):
    """PPO's prompts split across 2 ranks (whitening, mini-batch token totals, gradients and statistics global;
    a mini-batch may hold prompts of one rank only): the same metrics and weights as one process."""
    over = {"max_steps": 2, **over}
    _ppo_run(over, tmp_path / "one")
    _spawn(_ppo_rank, (2, str(tmp_path / "rdv"), over, str(tmp_path / "two")))
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        for k in ("reward", "loss", "value_loss", "policy_loss", "kl", "grad_norm", "return_mean",
                  "value_explained_variance", "num_tokens"):  # fmt: skip
            if k in ra and isinstance(ra[k], float) and ra[k] == ra[k]:
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), k
    wa, wb = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3)


def _eval_rank(rank: int, world: int, rendezvous: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        result = _evaluations()
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result, f)
    finally:
        dist.destroy_process_group()


def _evaluations() -> dict:
    """The three evaluation loops that shard (option likelihoods, greedy replies, text likelihoods)."""
    tok, model = tiny_policy(0)
    prompts = [[{"role": "user", "content": " ".join("abcdefgh"[: 2 + i % 6])}] for i in range(11)]
    options = [["a b", "c", "d e f"][: 1 + i % 3] for i in range(11)]
    return {
        "options": option_logprobs(model, tok, prompts, options, batch_size=2),
        "replies": greedy_generate(model, tok, prompts, max_new_tokens=5, batch_size=3),
        "texts": text_logprobs(model, tok, [None, "a b", "a b", "c"] * 2, ["c d", "e", "f g", "h"] * 2, batch_size=3),
    }


def test_sharded_evaluation_equals_one_process(tmp_path):
    """Each rank scores every other batch of the same batch plan; the gathered results are those of one
    process, exactly (same batches, same padding; one thread per process, as each rank uses: the CPU
    kernels' rounding can depend on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = json.loads(json.dumps(_evaluations()))
    finally:
        torch.set_num_threads(threads)
    _spawn(_eval_rank, (2, str(tmp_path / "rdv"), str(tmp_path / "two.json")))
    two = json.loads((tmp_path / "two.json").read_text())
    assert two == one and len(two["replies"]) == 11 and all(len(r) == 1 + i % 3 for i, r in enumerate(two["options"]))


def test_fairrl_eval_under_torchrun_writes_what_one_process_writes(tmp_path):
    model = saved_tiny_policy(tmp_path / "m")
    args = ["-m", "fairrl", "eval", "--model", str(model), "--suite", "bbq,stereoset,reasoning", "--limit", "3",
            "--n-boot", "20", "--permutations", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    one = _launch([sys.executable, *args, "--out", str(tmp_path / "one")], env)
    two = _launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   *args, "--out", str(tmp_path / "two")], env)  # fmt: skip
    assert one.returncode == 0 and two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    a, b = (json.loads((tmp_path / x / "results.json").read_text()) for x in ("one", "two"))
    (ma,), (mb,) = a["models"].values(), b["models"].values()
    assert mb["suites"] == ma["suites"] and set(mb["suites"]) == {"bbq", "stereoset", "reasoning"}
    assert (tmp_path / "two" / "results.md").exists() and two.stdout.count("wrote ") == 1


def test_a_two_rank_run_resumes_in_one_process(tmp_path):
    """2 steps on 2 ranks, then --resume in one process to step 3: as one process's 3 steps (the
    checkpoint holds the weights, optimiser and data position, which no rank count changes)."""
    overrides = {"algorithm.loss_type": "dapo"}
    one = _train(_cfg(None, max_steps=3, **overrides), tmp_path / "one")
    _spawn(_rank, (2, str(tmp_path / "rdv"), {"max_steps": 2, **overrides}, str(tmp_path / "two")))
    tok, model = tiny_policy(0)
    run_training(_cfg(None, max_steps=3, **overrides), out=str(tmp_path / "two"), resume=str(tmp_path / "two"),
                 console=lambda s: None, evaluate=False, progress=False, components=(tok, model), data=_data())  # fmt: skip
    a, b = _rows(one), _rows(tmp_path / "two")
    assert [r["step"] for r in b] == [1, 2, 3]
    for k in KEYS:
        assert b[2][k] == pytest.approx(a[2][k], rel=1e-4, abs=1e-5), k


WARM = ["warm_start.steps=2", "algorithm.prompts_per_step=2", "algorithm.num_generations=4",
        "algorithm.max_completion_length=4", "algorithm.beta=0.05"]  # fmt: skip


def _method_cfg(method: str, steps: int):
    extra = WARM if method == "grpo" else []
    return load_config(None, [*extra,
        f"method={method}", "model.lora=null", f"max_steps={steps}", "save_steps=2", "learning_rate=0.01",
        "report_to=[jsonl]", "eval.bbq_items_per_condition=0", "eval.reasoning_items=0",
        "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: [SES]}]",
        "sft.batch_size=4", "kd.batch_size=4", "kd.max_new_tokens=4", "kd.lmbda=0.5", "dpo.batch_size=4",
    ])  # fmt: skip


def _train_method(method: str, steps: int, out) -> None:
    from fairrl.cli import TRAIN_METHODS, _train_function

    assert method in TRAIN_METHODS
    torch.manual_seed(0)
    tok, model = tiny_policy(0)
    _train_function(method)(_method_cfg(method, steps), out=str(out), console=lambda s: None, evaluate=False,
                            progress=False, components=(tok, model))  # fmt: skip


def _method_rank(rank: int, world: int, rendezvous: str, method: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        _train_method(method, 3, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("method", ["sft", "kd", "dpo", "grpo"])
def test_sft_kd_and_dpo_on_two_ranks_equal_one_process(tmp_path, method):
    """Each rank trains its half of every batch; token- or pair-weighted shares make the summed loss and
    gradient those of the whole batch (KD samples its on-policy replies as one process would). ``grpo``
    here runs a 2-step SFT warm start first (merged into the weights on every rank), then GRPO."""
    _train_method(method, 3, tmp_path / "one")
    _spawn(_method_rank, (2, str(tmp_path / "rdv"), method, str(tmp_path / "two")))
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["step"] for r in b] == [1, 2, 3]
    if method == "grpo":
        assert _rows(tmp_path / "two" / "warm_start") and (tmp_path / "two" / "warm_start" / "final").is_dir()
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss", "grad_norm", "tokens/trained", "completions/mean_length"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), (k, ra, rb)
    wa, wb = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3)

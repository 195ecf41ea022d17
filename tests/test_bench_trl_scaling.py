"""`fairrl bench --nproc N`: fairrl's and TRL's steps on 1 and N CPU ranks, the same global batch, failures.

Timings are never asserted: only the structure of the report and the trained token counts.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fairrl.bench.trl_step import trl_unavailable
from fairrl.bench.workload import BenchSpec
from fairrl.cli import app


def test_nproc_scaling_runs_fairrl_and_trl_on_one_and_two_ranks(tmp_path):
    """fairrl bench --nproc 2: both trainers on 1 and 2 CPU ranks (TRL under accelerate's MULTI_CPU), the same
    global batch (figures not asserted: speed is measured, not tested)."""
    out = tmp_path / "scaling.json"
    args = ["bench", "--model", "tiny", "--prompt-tokens", "32", "--new-tokens", "4", "--generations", "2",
            "--prompts", "2", "--steps", "1", "--warmup", "0", "--nproc", "2", "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rep = json.loads(out.read_text())
    assert [r["ranks"] for r in rep["runs"]] == [1, 2] and rep["completion_tokens_per_step"] == 16
    assert [r["trained_tokens_per_step"] for r in rep["runs"]] == [[16], [16]]  # summed over the ranks
    assert rep["efficiency"] == pytest.approx(rep["speedup"] / 2) and "scaling efficiency" in result.output
    assert rep["warnings"] == []
    if trl_unavailable():
        assert rep["trl"] is None and "pip install" in rep["trl_reason"]
        return
    one, two = rep["trl"]["runs"]
    assert "not_run" not in one and "not_run" not in two, rep["trl"]
    assert (one["distributed_type"], two["distributed_type"]) == ("NO", "MULTI_CPU")
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    # the same global batch: half the per-device batch on two processes, 16 tokens trained per step in total
    assert (one["per_device_train_batch_size"], two["per_device_train_batch_size"]) == (4, 2)
    assert one["generation_batch_size"] == two["generation_batch_size"] == 4
    assert one["trained_tokens_per_step"] == two["trained_tokens_per_step"] == [16]
    assert one["generated_tokens_per_step"] == two["generated_tokens_per_step"] == [16]
    assert rep["trl"]["efficiency"] == pytest.approx(rep["trl"]["speedup"] / 2)
    assert set(rep["fairrl_over_trl"]) == {"1", "2"}
    assert rep["fairrl_over_trl"]["2"] == pytest.approx(rep["runs"][1]["tokens_per_s"] / two["tokens_per_s"])
    assert "accelerate MULTI_CPU" in result.output and "fairrl/TRL completion tokens/s" in result.output
    odd = CliRunner().invoke(app, ["bench", "--model", "tiny", "--prompts", "3", "--nproc", "2"])
    assert odd.exit_code == 2 and "multiple of --nproc 2" in odd.output


def _process_that_fails(rank, world, folder, port, spec_dict):
    raise RuntimeError(f"no collective on rank {rank}")


def test_a_failed_trl_process_is_reported_as_not_run(monkeypatch):
    from fairrl.bench import trl_scaling

    monkeypatch.setattr(trl_scaling, "_trl_process", _process_that_fails)  # pickled by reference: this module
    run = trl_scaling.trl_run(BenchSpec(model="tiny", prompts=2, generations=2, threads=1), 2)
    assert run["ranks"] == 2 and "RuntimeError: no collective on rank" in run["not_run"]


def test_scaling_report_and_table_when_trl_runs_partly_or_not(monkeypatch):
    from fairrl.bench import scaling, trl_scaling

    def fake_fairrl(spec, n):
        return {"ranks": n, "step_seconds": [1.0 / n], "median_seconds": 1.0 / n, "tokens_per_s": 8.0 * n,
                "trained_tokens_per_step": [8]}  # fmt: skip

    def fake_trl(spec, n):
        if n > 1:
            return {"ranks": n, "not_run": "RuntimeError: gloo"}
        return {**fake_fairrl(spec, n), "tokens_per_s": 4.0, "trained_tokens_per_step": [7]}

    monkeypatch.setattr(scaling, "_fairrl_run", fake_fairrl)
    monkeypatch.setattr(trl_scaling, "trl_run", fake_trl)
    monkeypatch.setattr(scaling, "trl_unavailable", lambda: None)
    spec = BenchSpec(model="tiny", prompts=2, generations=2, new_tokens=2)
    rep = scaling.run_scaling(spec, 2, console=lambda _: None)
    assert rep["efficiency"] == 1.0 and rep["trl"]["speedup"] is None and rep["trl"]["efficiency"] is None
    assert rep["fairrl_over_trl"] == {"1": 2.0, "2": None}
    assert rep["warnings"] == ["TRL on 1 rank(s) trained [7] completion tokens in some steps, expected 8"]
    table = scaling.scaling_table(rep)
    assert "| TRL | 2 | not run: RuntimeError: gloo |" in table and "1 rank(s) 2.00x" in table
    skipped = scaling.run_scaling(BenchSpec(**{**spec.as_dict(), "trl": False}), 2, console=lambda _: None)
    assert skipped["trl"] is None and "TRL: not run (--no-trl)" in scaling.scaling_table(skipped)


def test_a_killed_process_names_the_likely_cause():
    from fairrl.bench.trl_scaling import _failure

    assert "out-of-memory" in _failure(RuntimeError("process 0 terminated with signal SIGKILL"))
    assert _failure(RuntimeError("a\nValueError: bad")) == "ValueError: bad"

"""`fairrl explore`: study files, trial overrides, tiny-model studies on SQLite (resume, a worker killed
with kill -9) and on a real PostgreSQL server when one is given."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.config.base import validate
from fairrl.errors import ConfigError
from tests.tiny import saved_tiny_policy

optuna = pytest.importorskip("optuna", reason="fairrl explore needs Optuna (pip install 'fairrl[explore]')")

from fairrl.config.explore import StudyConfig  # noqa: E402
from fairrl.explore.trial import constraint_violations, run_key, trial_overrides  # noqa: E402

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _base(tmp_path: Path) -> Path:
    model = saved_tiny_policy(tmp_path / "m")
    base = {
        "model": {"name_or_path": str(model), "lora": {"r": 4, "alpha": 8}},
        "report_to": "none", "save_steps": 1,
        "sft": {"batch_size": 2}, "dpo": {"batch_size": 2}, "algorithm": {"max_completion_length": 4},
        "eval": {"bbq_items_per_condition": 2, "reasoning_items": 2, "permutations": 1},
        "data": {"sources": [{"kind": "bbq", "categories": ["Religion"], "heldout_categories": ["SES"]},
                             {"kind": "reasoning", "n_train": 20}]},
    }  # fmt: skip
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def _study(tmp_path: Path, **over) -> Path:
    study = {
        "study_name": "tiny", "base": str(_base(tmp_path)), "budget": 4, "seeds": [0],
        "space": {"debias_share": {"choices": [0.25, 0.75]}, "method": {"choices": ["sft", "dpo"]}},
        "objectives": [{"metric": "reasoning: accuracy", "direction": "maximize"},
                       {"metric": "bbq_templates: bias rate", "direction": "minimize", "name": "bias rate"}],
        "constraints": [{"metric": "bbq_templates: mean accuracy", "op": ">=", "value": 0.0}],
        "sampler": "grid", "n_trials": 4, "heartbeat_seconds": 1, **over,
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"debias_share": {"low": 0.0, "high": 0.5}}, "strictly between 0 and 1"),
        ({"method": {"choices": ["grpo", "magic"]}}, "method needs choices"),
        ({"params": {"max_steps": {"low": 1, "high": 3}}}, "may not set 'max_steps'"),
        ({"params": {"learning_rate": {"low": 1e-3, "high": 1e-5}}}, "low <= high"),
    ],
)
def test_bad_study_spaces(space, match):
    with pytest.raises(ConfigError, match=match):
        validate({"objectives": [{"metric": "m", "direction": "maximize"}], "space": space}, StudyConfig)


def test_grid_needs_steps():
    with pytest.raises(ConfigError, match="grid search needs a step"):
        validate({"objectives": [{"metric": "m", "direction": "maximize"}], "sampler": "grid",
                  "space": {"params": {"learning_rate": {"low": 1e-5, "high": 1e-3}}}}, StudyConfig)  # fmt: skip


def test_trial_overrides_by_hand():
    """Demo config (BBQ weight 3, reasoning 1), share 0.2: BBQ weight 0.2 and reasoning 0.8. Budget 640
    sequences: SFT's 8 examples per step -> 80 steps; DPO's 8 pairs = 16 sequences -> 40 steps."""
    study = validate({"base": "demo", "budget": 640, "objectives": [{"metric": "m", "direction": "maximize"}]},
                     StudyConfig)  # fmt: skip
    sft = trial_overrides(study, {"method": "sft", "debias_share": 0.2, "learning_rate": 1e-4})
    assert "method=sft" in sft and "learning_rate=0.0001" in sft and "max_steps=80" in sft
    assert "data.sources.0.weight=0.2" in sft and "data.sources.1.weight=0.8" in sft
    assert "warm_start.steps=0" in sft and "max_minutes=null" in sft
    assert "max_steps=40" in trial_overrides(study, {"method": "dpo"})
    assert run_key(sft) == run_key(list(sft)) != run_key(trial_overrides(study, {"method": "dpo"}))
    cons = validate({"objectives": [{"metric": "m", "direction": "maximize"}],
                     "constraints": [{"metric": "a", "op": ">=", "value": 88}, {"metric": "b", "op": "<=", "value": 0.3}]},
                    StudyConfig)  # fmt: skip
    assert constraint_violations(cons, [90.0, 0.5]) == pytest.approx([-2.0, 0.2])  # held, violated


def _records(out: Path) -> list[dict]:
    with (out / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def test_grid_study_end_to_end_and_resume(tmp_path):
    """Four grid trials (2 shares x 2 methods) -> trials.csv, pareto.png/html, explore.md; the same command
    again trains nothing; --report rebuilds from the storage."""
    study, out = _study(tmp_path), tmp_path / "ex"
    r = runner.invoke(app, ["explore", str(study), "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = _records(out)
    assert len(rows) == 4 and {row["state"] for row in rows} == {"COMPLETE"}
    assert {(row["params_method"], row["params_debias_share"]) for row in rows} == {(m, s) for m in ("sft", "dpo")
                                                                      for s in ("0.25", "0.75")}  # fmt: skip
    for name in ("pareto.png", "pareto.html", "explore.md", "study.db"):
        assert (out / name).exists(), name
    assert len(list((out / "runs").iterdir())) == 4
    mtimes = {p: p.stat().st_mtime for p in (out / "runs").rglob("summary.json")}
    r = runner.invoke(app, ["explore", str(study), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {p: p.stat().st_mtime for p in (out / "runs").rglob("summary.json")} == mtimes and len(_records(out)) == 4
    (out / "explore.md").unlink()
    r = runner.invoke(app, ["explore", str(study), "--out", str(out), "--report"])
    assert r.exit_code == 0 and (out / "explore.md").exists()


def test_another_study_file_into_the_same_folder_is_refused(tmp_path):
    study, out = _study(tmp_path, n_trials=1), tmp_path / "ex"
    assert runner.invoke(app, ["explore", str(study), "--out", str(out)]).exit_code == 0
    study2 = _study(tmp_path, n_trials=2)
    r = runner.invoke(app, ["explore", str(study2), "--out", str(out)])
    assert r.exit_code == 2 and "another study file" in r.output


def _worker(study: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"}
    return subprocess.Popen([sys.executable, "-m", "fairrl", "explore", str(study), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip


def _states(out: Path) -> list[str]:
    """The trials' states, read from the SQLite file read-only: opening it through Optuna would race the
    worker that is creating its tables."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True) as db:
            return [row[0] for row in db.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.Error:  # no file, or no tables yet
        return []


def _beating(out: Path) -> bool:
    """Whether a running trial has recorded its first heartbeat (read-only, as in :func:`_states`). Optuna
    never marks a running trial without a heartbeat stale, so the worker is killed only after that."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM trial_heartbeats h JOIN trials t ON h.trial_id = t.trial_id "
                              "WHERE t.state = 'RUNNING'").fetchone()[0] > 0  # fmt: skip
    except sqlite3.Error:
        return False


def test_worker_killed_mid_trial_loses_nothing(tmp_path):
    """Worker A finishes one trial, starts a second and is killed with SIGKILL inside it; worker B joins and
    finishes the study: three trials complete, A's finished trial is kept as it was, A's interrupted trial
    is FAIL ("worker lost") and was retried with the same values (its runs' folder resumed)."""
    # each trial evaluates its own starting model: a trial that reused the first one's (eval.start_cache)
    # can finish inside the second the test waits before the kill
    study = _study(tmp_path, n_trials=3, sampler="random", set=["eval.start_cache=null"])
    out = tmp_path / "ex"
    a = _worker(study, out, "--skip-report")
    deadline = time.monotonic() + 300
    while not (_states(out).count("COMPLETE") == 1 and "RUNNING" in _states(out) and _beating(out)):
        assert a.poll() is None and time.monotonic() < deadline, a.stdout.read().decode()[-2000:]
        time.sleep(0.2)
    time.sleep(1.0)  # inside the second trial: training has started
    first = optuna.load_study(study_name="tiny", storage=f"sqlite:///{(out / 'study.db').resolve()}").trials[0]
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    b = _worker(study, out, "--join")
    output, _ = b.communicate(timeout=600)
    assert b.returncode == 0, output.decode()[-3000:]
    rows = _records(out)
    states = sorted(row["state"] for row in rows)
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1, rows
    kept = next(row for row in rows if row["number"] == str(first.number))
    assert kept["state"] == "COMPLETE" and float(kept["values_reasoning: accuracy"]) == first.values[0]
    failed = next(row for row in rows if row["state"] == "FAIL")
    assert "worker lost" in failed["error"]
    retried = [row for row in rows if row["state"] == "COMPLETE" and row["run_dir"] == failed["run_dir"]]
    assert retried, "the dead worker's trial was not retried with its values"


POSTGRES = os.environ.get("FAIRRL_TEST_POSTGRES_URL")


def _pg_study_exists(name: str) -> bool:
    """Whether the study's row exists, read with psycopg directly (not through Optuna's storage set-up)."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES.replace("postgresql+psycopg://", "postgresql://")) as db:
            return db.execute("SELECT 1 FROM studies WHERE study_name = %s", (name,)).fetchone() is not None
    except psycopg.Error:  # no tables yet
        return False


@pytest.mark.skipif(not POSTGRES, reason="no PostgreSQL server given: set FAIRRL_TEST_POSTGRES_URL="
                    "postgresql+psycopg://user@host:port/db (.ci/run starts a throwaway one)")  # fmt: skip
def test_postgres_storage_two_workers(tmp_path):
    """The same grid study on a real PostgreSQL server: one worker starts it, a second joins (as a
    worker on another machine would); every grid point completes (two workers starting trials at the same
    moment may both run one more than n_trials, as Optuna's distributed optimisation can)."""
    name = f"tiny_{uuid.uuid4().hex[:8]}"
    study, out = _study(tmp_path, study_name=name), tmp_path / "ex"
    first = _worker(study, out, "--storage", POSTGRES, "--skip-report")
    deadline = time.monotonic() + 120
    while not _pg_study_exists(name):  # the second worker joins a study that exists (as --join requires)
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read().decode()[-2000:]
        time.sleep(0.5)
    second = _worker(study, tmp_path / "ex2", "--storage", POSTGRES, "--join", "--skip-report")
    for p in (first, second):
        output, _ = p.communicate(timeout=900)
        assert p.returncode == 0, output.decode()[-3000:]
    r = runner.invoke(app, ["explore", str(study), "--out", str(out), "--storage", POSTGRES, "--report"])
    assert r.exit_code == 0, r.output
    rows = _records(out)
    assert 4 <= len(rows) <= 5 and {row["state"] for row in rows} == {"COMPLETE"}
    assert {(row["params_method"], row["params_debias_share"]) for row in rows} == {
        (m, s) for m in ("sft", "dpo") for s in ("0.25", "0.75")}  # fmt: skip
    from fairrl.report.explore import mask_url

    assert mask_url(POSTGRES) in (out / "explore.md").read_text()  # shown, with any password masked



def test_packaged_study_validates_and_plans_every_method():
    """The packaged explore_demo and explore_grid studies load by name and give a valid training config for each method."""
    from fairrl.config.base import load_config
    from fairrl.explore.run import check_study

    study = load_config("explore_demo", [], StudyConfig)
    assert study.n_trials == 12 and study.space.method.choices == ["grpo", "sft", "kd", "dpo"]
    check_study(study)
    grid = load_config("explore_grid", [], StudyConfig)  # FairReason's sweep: 3 shares x 4 methods, one trial each
    assert grid.sampler == "grid" and len(grid.space.debias_share.grid()) * len(grid.space.method.grid()) == grid.n_trials
    check_study(grid)


def test_workers_option_runs_worker_processes(tmp_path, monkeypatch):
    """--workers 2: two worker processes share the SQLite study; every grid point completes, each worker
    writes its log, and the report is written once they are done."""
    study, out = _study(tmp_path), tmp_path / "ex"
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}:{ROOT / 'src'}")  # the workers are `python -m fairrl` processes
    r = runner.invoke(app, ["explore", str(study), "--out", str(out), "--workers", "2"])
    assert r.exit_code == 0, r.output
    rows = _records(out)
    assert {(row["params_method"], row["params_debias_share"]) for row in rows} == {
        (m, s) for m in ("sft", "dpo") for s in ("0.25", "0.75")} and {row["state"] for row in rows} == {"COMPLETE"}  # fmt: skip
    assert (out / "worker-0.log").exists() and (out / "worker-1.log").exists() and (out / "explore.md").exists()


@pytest.mark.parametrize("sampler", ["nsga2", "nsga3", "tpe"])
def test_constraints_reach_the_sampler_without_deprecated_arguments(sampler):
    """Optuna 5 takes constraint values from Trial.set_constraint; the samplers get no constraints_func
    (deprecated there), and an older Optuna gets one."""
    import warnings

    from fairrl.explore.study import make_sampler, native_constraints

    study = validate({"objectives": [{"metric": "m", "direction": "maximize"}, {"metric": "n", "direction": "minimize"}],
                      "constraints": [{"metric": "a", "op": ">=", "value": 1}], "sampler": sampler}, StudyConfig)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        s = make_sampler(study)
    has_func = getattr(s, "_constraints_func", None) is not None
    assert has_func is (not native_constraints())

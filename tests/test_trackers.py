"""report_to: the config vocabulary, and TensorBoard / wandb / MLflow logging offline into the run folder,
with resume continuing the same tracker runs; completion tables from a real GRPO loop."""

from __future__ import annotations

import json
import warnings

import pytest

from fairrl.config import RMTrainConfig, load_config
from fairrl.config.base import ConfigDeprecationWarning
from fairrl.config.common import TRACKERS, tracker_installed
from fairrl.errors import ConfigError
from fairrl.trainer.logging import MetricsLogger

ROWS = [
    {"prompt_id": "p1", "group": "Age", "source": "bbq", "prompt": "Who | forgot?", "completion": "The old\nman",
     "rewards": {"bbq_correct": 1.0, "reasoning_exact": None}, "reward": 1.0},
    {"prompt_id": "p1", "group": "Age", "source": "bbq", "prompt": "Who | forgot?", "completion": "unknown",
     "rewards": {"bbq_correct": 0.0, "reasoning_exact": None}, "reward": 0.0},
]  # fmt: skip


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No tracker credentials or endpoints; wandb's own caches under tmp_path, not the home folder."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI",
                "MLFLOW_EXPERIMENT_NAME"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # fairrl sets it itself; this keeps the env tidy
    monkeypatch.setenv("WANDB_SILENT", "true")


def _cfg(*sets):
    return load_config(None, list(sets))


def test_report_to_follows_trl_and_always_keeps_jsonl():
    assert _cfg().report_to == ["tensorboard", "jsonl"]
    assert _cfg("report_to=none").report_to == ["jsonl"]
    assert _cfg("report_to=mlflow").report_to == ["mlflow", "jsonl"]
    assert _cfg("report_to=[wandb, WandB, jsonl]").report_to == ["wandb", "jsonl"]
    installed = {t for t in TRACKERS if tracker_installed(t)}  # all four with the dev extra
    assert set(_cfg("report_to=all").report_to) == installed | {"jsonl"}
    assert load_config(None, ["report_to=[tensorboard]"], schema=RMTrainConfig).report_to == [
        "tensorboard",
        "jsonl",
    ]
    with pytest.raises(
        ConfigError, match="unknown \\['comet'\\]; choose from tensorboard, wandb, mlflow, jsonl"
    ):
        _cfg("report_to=[comet]")
    with pytest.raises(ConfigError, match="'all' and 'none' stand alone"):
        _cfg("report_to=[all, wandb]")


def test_old_tensorboard_flag_still_works_with_a_deprecation_warning():
    with pytest.warns(ConfigDeprecationWarning, match="'tensorboard' is deprecated.*use 'report_to'"):
        assert _cfg("tensorboard=false").report_to == ["jsonl"]
    with pytest.warns(ConfigDeprecationWarning):
        assert _cfg("tensorboard=true").report_to == ["tensorboard", "jsonl"]
    with warnings.catch_warnings(), pytest.raises(ConfigError, match="sets both 'tensorboard'"):
        warnings.simplefilter("ignore")
        _cfg("tensorboard=false", "report_to=[wandb]")
    assert "tensorboard:" not in json.dumps(_cfg().model_dump())  # saved configs use the new key only


def test_missing_tracker_package_names_the_extra(monkeypatch):
    import fairrl.trainer.trackers as trackers

    monkeypatch.setattr(trackers, "tracker_installed", lambda name: name != "wandb")
    with pytest.raises(ConfigError, match=r"pip install 'fairrl\[wandb\]'"):
        trackers.require_trackers(["tensorboard", "wandb", "jsonl"])
    trackers.require_trackers(["mlflow", "jsonl"])


def _tensorboard_scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out.update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def test_all_trackers_log_offline_and_resume_the_same_runs(tmp_path, offline):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'fairrl[wandb]')")
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'fairrl[mlflow]')")
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    run.mkdir()
    said: list[str] = []
    cfg = {"run_name": "r", "learning_rate": 1e-5, "model": {"lora": {"r": 4}}, "report_to": ["wandb"]}
    everything = ["tensorboard", "wandb", "mlflow", "jsonl"]
    log = MetricsLogger(run, everything, None, run_name="r", config=cfg, console=said.append)
    for step in (1, 2, 3):
        log.log(step, {"reward": 0.1 * step, "rewards/bbq_correct/mean": float("nan"), "note": "text"})
    log.log_completions(2, ROWS)
    log.close()
    ids = json.loads((run / "trackers.json").read_text())
    assert set(ids) == {"wandb", "mlflow"} and set(ids["wandb"]) == set(ids["mlflow"]) == {"run_id"}
    assert any(s.startswith("wandb: offline run") for s in said) and any("mlflow ui" in s for s in said)

    # resume from a checkpoint at step 2: the JSONL files forget step 3, the trackers continue their runs
    log = MetricsLogger(run, everything, 2, run_name="r", config=cfg, console=said.append)
    log.log(3, {"reward": 0.33})
    log.close()
    assert [
        json.loads(x)["reward"] for x in (run / "metrics.jsonl").read_text().splitlines()
    ] == pytest.approx([0.1, 0.2, 0.33])
    assert json.loads((run / "trackers.json").read_text()) == ids
    rows = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 2] and rows[0]["rewards"] == {
        "bbq_correct": 1.0,
        "reasoning_exact": None,
    }

    # TensorBoard: the resumed writer purged the old step 3
    assert _tensorboard_scalars(run / "tensorboard", "reward") == pytest.approx({1: 0.1, 2: 0.2, 3: 0.33})

    # MLflow: one run in the local file store, its history continued, the table as a JSON artifact
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    run_id = ids["mlflow"]["run_id"]
    history = [(m.step, round(m.value, 3)) for m in client.get_metric_history(run_id, "reward")]
    assert history[:3] == [(1, 0.1), (2, 0.2), (3, 0.3)] and history[-1] == (3, 0.33)
    assert client.get_metric_history(run_id, "rewards/bbq_correct/mean") == []  # NaN stays in metrics.jsonl
    got = client.get_run(run_id)
    assert got.data.params["model.lora.r"] == "4" and got.info.status == "FINISHED"
    table = json.loads((run / "mlruns" / got.info.experiment_id / run_id / "artifacts" / "completions" /
                        "step_000002.json").read_text())  # fmt: skip
    assert table["columns"] == [
        "step",
        "group",
        "prompt",
        "completion",
        "reward",
        "bbq_correct",
        "reasoning_exact",
    ]
    assert table["data"][0][:3] == [2, "Age", "Who | forgot?"]

    # wandb: two offline segments of the same run id (wandb sync merges them), metrics and the table inside
    segments = sorted((run / "wandb").glob(f"offline-run-*-{ids['wandb']['run_id']}"))
    assert len(segments) == 2
    first = (segments[0] / f"run-{ids['wandb']['run_id']}.wandb").read_bytes()
    assert b"reward" in first and b"completions" in first
    (table_file,) = (segments[0] / "files" / "media" / "table").glob("completions_*.table.json")
    assert json.loads(table_file.read_text())["columns"] == table["columns"]


def test_tracker_failure_is_one_clear_error_without_secrets(tmp_path, offline, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'fairrl[mlflow]')")
    from fairrl.errors import FairRLError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://alice:s3cret@tracking.example")
    with pytest.raises(FairRLError, match="report_to mlflow: could not start the run") as info:
        MetricsLogger(tmp_path, ["mlflow", "jsonl"], None, console=lambda s: None)
    assert "s3cret" not in str(info.value)
    assert not (tmp_path / "trackers.json").exists()


def test_grpo_run_logs_completion_tables(tmp_path, offline):
    """A real tiny GRPO loop: completions.jsonl every log_completions_steps, a compact console view,
    and the table in TensorBoard and MLflow."""
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'fairrl[mlflow]')")
    from fairrl.recipes.grpo import run_training
    from tests.test_train_e2e import _data
    from tests.tiny import tiny_policy

    cfg = _cfg("model.lora=null", "data.sources=[{kind: bbq}]", "rewards.functions=[{name: 'tests.tiny:count_a'}]",
               "algorithm.num_generations=2", "algorithm.prompts_per_step=2", "algorithm.max_completion_length=3",
               "eval.bbq_items_per_condition=0", "max_steps=3", "save_steps=3", "log_completions=true",
               "log_completions_steps=2", "num_completions_to_print=3", "report_to=[tensorboard, mlflow]")  # fmt: skip
    said: list[str] = []
    tok, model = tiny_policy()
    run = run_training(cfg, out=str(tmp_path / "run"), console=said.append, evaluate=False, progress=False,
                       components=(tok, model), data=_data())  # fmt: skip
    rows = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2] * 4  # P x G completions of step 2 only
    assert set(rows[0]) == {
        "step",
        "prompt_id",
        "group",
        "source",
        "prompt",
        "completion",
        "rewards",
        "reward",
    }
    assert set(rows[0]["rewards"]) == {"count_a"} and rows[0]["reward"] == pytest.approx(
        rows[0]["rewards"]["count_a"]
    )
    shown = next(s for s in said if s.startswith("completions at step 2"))
    assert "(3 of 4;" in shown and len(shown.splitlines()) == 4
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((run / "tensorboard").glob("events.*"))), size_guidance={"tensors": 0})
    acc.Reload()
    assert any("completions" in t for t in acc.Tags()["tensors"])
    assert list((run / "mlruns").glob("*/*/artifacts/completions/step_000002.json"))

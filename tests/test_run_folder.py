"""Run folders never lose or mix data: a new run needs an empty folder (or --overwrite), --resume continues
exactly the saved run (also one killed before its first checkpoint, or with a damaged newest checkpoint or
a torn metrics line), bad folders fail early with one line, and a failed start leaves nothing behind."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.config import dump_config, load_config
from fairrl.config.preference import RMTrainConfig
from fairrl.errors import ConfigError, FairRLError
from fairrl.recipes.grpo import run_training
from fairrl.trainer.logging import read_metrics
from fairrl.trainer.run import continue_config
from tests.test_train_e2e import _cfg, _data, _rewards
from tests.tiny import tiny_policy

runner = CliRunner()


def _run(cfg, out, resume=None, overwrite=False, notes=None):
    """A tiny GRPO run on toy prompts (as tests/test_train_e2e.py); ``notes`` collects the console lines."""
    console = notes.append if notes is not None else (lambda s: None)
    return run_training(cfg, out=str(out), resume=resume, console=console, evaluate=False, progress=False,
                        components=tiny_policy(0), data=_data(), overwrite=overwrite)  # fmt: skip


def _steps(run_dir):
    return [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")]


def _saved_run(folder, *sets):
    """A folder holding only the config.yaml of a run (as one killed while loading would leave)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dump_config(load_config(None, list(sets))))
    return folder


# ------------------------------------------------------------------------------------------ new runs
def test_a_run_folder_is_never_reused_by_a_new_run_and_overwrite_starts_afresh(tmp_path):
    out = tmp_path / "run"
    _run(_cfg(tmp_path, max_steps=2), out)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(
        ConfigError, match=r"already holds a run \(checkpoints, config.yaml.*--resume .*--overwrite"
    ):
        _run(_cfg(tmp_path, max_steps=2), out)
    assert (out / "metrics.jsonl").read_text() == before  # nothing appended
    (out / "eval_before.json").write_text("{}")  # of the earlier run: must not be reused
    (out / "notes.txt").write_text("mine")  # not a run's file: kept
    _run(_cfg(tmp_path, max_steps=3), out, overwrite=True)
    assert _steps(out) == [1, 2, 3]
    assert not (out / "eval_before.json").exists() and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-000002", "step-000003"]


def test_a_folder_with_other_files_is_refused_and_an_empty_one_accepted(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "data.csv").write_text("x")
    with pytest.raises(ConfigError, match=r"busy is not empty \(data.csv\); pick a new or empty folder"):
        _run(_cfg(tmp_path, max_steps=1), tmp_path / "busy")
    (tmp_path / "empty").mkdir()
    assert _steps(_run(_cfg(tmp_path, max_steps=1), tmp_path / "empty")) == [1]


@pytest.mark.parametrize("command", [["train"], ["rm", "train"], ["dpo", "train"]])
def test_cli_refuses_a_run_folder_without_resume_or_overwrite(tmp_path, command):
    out = _saved_run(tmp_path / "run")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    result = runner.invoke(app, [*command, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert (
        f"run folder {out} already holds a run (config.yaml, metrics.jsonl); pass --resume {out}"
        in result.output
    )
    assert "--overwrite to start afresh (its files are removed)" in result.output
    assert "Traceback" not in result.output
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_resume_and_overwrite_together_are_refused(tmp_path):
    out = _saved_run(tmp_path / "run")
    result = runner.invoke(app, ["train", "--resume", str(out), "--overwrite"])
    assert result.exit_code == 2 and "pass only one of them" in result.output


# ------------------------------------------------------------------------------------------ bad folders
@pytest.mark.parametrize("command", [["train"], ["rm", "train"], ["dpo", "train"]])
def test_out_that_is_a_file_fails_early_with_one_line(tmp_path, command):
    f = tmp_path / "a-file"
    f.write_text("x")
    for out, message in ((f, f"run folder {f} is a file, not a folder"),
                         (f / "sub", f"cannot create run folder {f / 'sub'}: {f} is a file")):  # fmt: skip
        result = runner.invoke(app, [*command, "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert "trainable" not in result.output and "pairs:" not in result.output  # before data and model


def test_unwritable_out_fails_early(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: pretend the permission check says no
        import fairrl.trainer.run as run

        monkeypatch.setattr(run.os, "access", lambda path, mode: False)
    try:
        result = runner.invoke(app, ["train", "--out", str(locked / "run")])
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2, result.output
    assert (
        f"cannot write into {locked} (permission denied)" in result.output
        and "Traceback" not in result.output
    )


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "/tmp/x"])
def test_run_name_must_be_a_plain_folder_name(name):
    result = runner.invoke(app, ["train", "--set", f"run_name={name}"])
    assert result.exit_code == 2
    assert "run_name must be a plain folder name" in result.output and "Traceback" not in result.output


def test_failed_start_leaves_no_folder(tmp_path):
    """Bad data fails before anything is written; a failure after the folder was made removes it again."""
    out = tmp_path / "new"
    result = runner.invoke(
        app, ["train", "--out", str(out), "--set", "data.sources=[{kind: jsonl, path: nope.jsonl}]"]
    )
    assert result.exit_code == 2 and not out.exists()
    result = runner.invoke(
        app, ["rm", "train", "--out", str(out), "--set", f"data.sources=['{tmp_path}/none.jsonl']"]
    )
    assert result.exit_code == 2 and not out.exists()

    import fairrl.recipes.grpo as grpo

    def boom(*a, **k):
        raise ConfigError("bad optimiser")

    mp = pytest.MonkeyPatch()
    mp.setattr(grpo, "make_optimizer", boom)
    try:
        with pytest.raises(ConfigError, match="bad optimiser"):
            _run(_cfg(tmp_path, max_steps=1), out)
    finally:
        mp.undo()
    assert not out.exists()


# ------------------------------------------------------------------------------------------ resume
def test_resume_continues_the_saved_config_only(tmp_path):
    out = _saved_run(tmp_path / "run", "max_steps=3")
    other = tmp_path / "other.yaml"
    other.write_text("max_steps: 5\n")
    result = runner.invoke(app, ["train", str(other), "--resume", str(out)])
    assert result.exit_code == 2
    assert (
        f"--resume continues the saved config of {out}; drop CONFIG (use --set to change e.g. max_steps)"
        in result.output
    )
    assert "max_steps" in result.output.split("differs from it in", 1)[1]
    same = tmp_path / "same.yaml"
    same.write_text("max_steps: 3\n")
    assert continue_config(str(out), str(same), [], type(load_config(None, []))).max_steps == 3
    assert continue_config(str(out), None, ["max_steps=9"], type(load_config(None, []))).max_steps == 9

    result = runner.invoke(app, ["train", "--resume", str(out), "--out", str(tmp_path / "elsewhere")])
    assert (
        result.exit_code == 2 and "differs from --resume" in result.output and "drop --out" in result.output
    )
    result = runner.invoke(app, ["train", "--resume", str(out), "--set", "model.lora=null"])
    assert result.exit_code == 2
    assert "model.lora" in result.output and "differs from the run's saved config" in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no config.yaml there" in result.output


def test_resume_of_a_run_killed_before_its_first_checkpoint_restarts_cleanly(tmp_path, monkeypatch):
    full = _run(_cfg(tmp_path, max_steps=3), tmp_path / "full")
    import fairrl.recipes.grpo as grpo

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(grpo, "save_checkpoint", killed)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        _run(_cfg(tmp_path, max_steps=3, save_steps=2), part)
    monkeypatch.undo()
    assert _steps(part) == [1, 2] and not (part / "checkpoints").exists()
    notes: list[str] = []
    _run(_cfg(tmp_path, max_steps=3), part, resume=str(part), notes=notes)
    assert any("holds no checkpoint" in n and "restarting it from step 0" in n for n in notes)
    assert _steps(part) == [1, 2, 3]
    assert _rewards(part) == pytest.approx(_rewards(full), abs=1e-6)


def test_damaged_newest_checkpoint_falls_back_and_torn_metrics_line_is_dropped(tmp_path):
    full = _run(_cfg(tmp_path, max_steps=6), tmp_path / "full")
    part = tmp_path / "part"
    _run(_cfg(tmp_path, max_steps=4), part)  # checkpoints at steps 2 and 4
    weights = part / "checkpoints" / "step-000004" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short
    with (part / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 0.')  # torn by a kill
    (part / "checkpoints" / ".step-000006.k3j4h5g6.tmp").mkdir()  # orphaned temporaries
    (part / ".final-abcd1234").mkdir()
    (part / ".config.yaml.abcd_123").write_text("half")
    notes: list[str] = []
    _run(_cfg(tmp_path, max_steps=6), part, resume=str(part), notes=notes)
    assert any("step-000004 is damaged" in n and "falling back to the previous one" in n for n in notes)
    assert any("resumed from" in n and "(step 2)" in n for n in notes)
    assert any("dropped 1 damaged line" in n for n in notes)
    assert _steps(part) == [1, 2, 3, 4, 5, 6]
    assert _rewards(part) == pytest.approx(_rewards(full), abs=1e-6)
    hidden = [p.name for p in [*part.iterdir(), *(part / "checkpoints").iterdir()] if p.name.startswith(".")]
    assert hidden == []


def test_resume_refuses_when_no_checkpoint_loads(tmp_path):
    part = _run(_cfg(tmp_path, max_steps=2), tmp_path / "part")
    (part / "checkpoints" / "step-000002" / "state.json").write_text("{not json")
    with pytest.raises(
        FairRLError, match=r"no checkpoint there could be loaded \(step-000002: state.json: JSONDecodeError"
    ):
        _run(_cfg(tmp_path, max_steps=2), part, resume=str(part))


def test_preference_run_refuses_reuse_and_restarts_without_checkpoint(tmp_path):
    """The pair loop (rm / dpo) uses the same folder rules: killed before its first save, it restarts."""
    from transformers import AutoTokenizer

    from fairrl.assets import asset_path
    from fairrl.recipes.rm import RMLearner, run_rm
    from tests.test_rm import _skewed_file, tiny_rm

    tok = AutoTokenizer.from_pretrained(asset_path("minilm"))
    data = _skewed_file(tmp_path / "skew.jsonl")
    cfg = load_config(None, [f"data.sources=['{data}']", "data.group_column=group", "data.heldout_groups=[]",
                             "data.eval_fraction=0.3", "max_steps=3", "save_steps=5", "tensorboard=false",
                             "n_boot=10", "per_device_train_batch_size=8", "logging_steps=1"], schema=RMTrainConfig)  # fmt: skip
    out = tmp_path / "rm"
    out.mkdir()
    (out / "config.yaml").write_text(dump_config(cfg))
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    with pytest.raises(ConfigError, match="already holds a run"):
        run_rm(
            cfg,
            out=str(out),
            console=lambda s: None,
            progress=False,
            learner=RMLearner(tiny_rm(tok), tok, cfg),
        )
    notes: list[str] = []
    run_rm(cfg, out=str(out), resume=str(out), console=notes.append, progress=False,
           learner=RMLearner(tiny_rm(tok), tok, cfg))  # fmt: skip
    assert any("restarting it from step 0" in n for n in notes)
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_demo_shows_a_finished_run_and_refuses_a_folder_of_other_files(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / "summary.json").write_text("{}")
    (done / "report.md").write_text("# the demo report")
    result = runner.invoke(app, ["demo", "--out", str(done)])
    assert result.exit_code == 0 and "# the demo report" in result.output and "--overwrite" in result.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["demo", "--out", str(busy)])
    assert result.exit_code == 2 and "is not empty (notes.txt)" in result.output

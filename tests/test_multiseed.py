"""`fairrl train CONFIG --seeds`: one run per seed, resumed seed by seed, and a combined report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fairrl.cli import app
from fairrl.errors import ConfigError
from fairrl.multiseed import parse_seeds
from tests.test_train_cli import _args
from tests.tiny import saved_tiny_policy

runner = CliRunner()


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5,0") == [0, 3, 4, 5]
    for bad in ("", "a", "1-x", "-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_two_seeds_make_two_runs_and_one_report(tmp_path):
    model = saved_tiny_policy(tmp_path / "m")
    root = tmp_path / "sweep"
    args = _args(model, root, "max_steps=3")
    args[args.index("--out") : args.index("--out") + 2] = []  # the sweep folder is --out
    result = runner.invoke(app, [*args, "--out", str(root), "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    for s in (0, 1):
        cfg = (root / f"seed-{s}" / "config.yaml").read_text()
        assert f"seed: {s}\n" in cfg and (root / f"seed-{s}" / "summary.json").exists()
    report = (root / "seeds_report.md").read_text()
    assert "| metric | seed 0 | seed 1 |" in report and "## Training" in report
    assert "## Demo targets" in report and "| accuracy rises |" in report
    saved = json.loads((root / "seeds.json").read_text())
    assert saved["seeds"] == [0, 1] and set(saved["targets"]) == {"0", "1"}
    # rerunning the same command keeps finished seeds and only adds the new one
    again = runner.invoke(app, [*args, "--out", str(root), "--seeds", "0-2"])
    assert again.exit_code == 0, again.output
    assert "seed 0: finished earlier" in again.output and (root / "seed-2" / "summary.json").exists()


def test_seeds_refuse_a_seed_override(tmp_path):
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "s"), "--seeds", "0,1", "--set", "seed=3"])
    assert result.exit_code == 2 and "drop --set seed" in result.output

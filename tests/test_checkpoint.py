"""Checkpoints are atomic: an interrupted write leaves the previous one usable."""

from __future__ import annotations

import pytest
import torch

from fairrl.trainer import checkpoint as ckpt


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return model, opt, sched


def test_roundtrip_restores_weights_optimizer_and_rng(tmp_path):
    model, opt, sched = _setup()
    ckpt.save_checkpoint(tmp_path, 5, model, opt, sched, {"position": 20})
    expected_next = torch.rand(3)
    fresh, opt2, sched2 = _setup(seed=1)
    torch.manual_seed(123)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), fresh, opt2, sched2)
    assert state["step"] == 5 and state["position"] == 20
    torch.testing.assert_close(fresh.weight, model.weight)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    torch.testing.assert_close(torch.rand(3), expected_next)  # the RNG continues where it was saved


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _setup()
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {"position": 4})
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the optimiser state")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 2, model, opt, sched, {"position": 8})
    monkeypatch.undo()
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest.name == "step-000001"
    assert not any(p.name.startswith(".step") for p in (tmp_path / "checkpoints").iterdir())
    fresh, opt2, sched2 = _setup(seed=3)
    ckpt.load_checkpoint(latest, fresh, opt2, sched2)
    torch.testing.assert_close(fresh.weight, saved)


def test_old_checkpoints_are_pruned(tmp_path):
    model, opt, sched = _setup()
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, model, opt, sched, {"position": step}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert names == ["step-000002", "step-000003"]


# ------------------------------------------------------------------------------------ damage and fallback
def _damage_weights(folder):
    f = folder / "trainable.safetensors"
    f.write_bytes(f.read_bytes()[:40])


def _nan_weights(folder):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "trainable.safetensors"))
    save_file({k: v * float("nan") for k, v in weights.items()}, str(folder / "trainable.safetensors"))


DAMAGE = {
    "truncated safetensors": (_damage_weights, "trainable"),
    "state.json not JSON": (lambda d: (d / "state.json").write_text('{"step": 2, "rn'), "JSONDecodeError"),
    "state.json without step": (lambda d: (d / "state.json").write_text('{"rng": {}}'), "lacks the step"),
    "optimizer.pt missing": (lambda d: (d / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    "optimizer.pt garbage": (lambda d: (d / "optimizer.pt").write_bytes(b"\x00" * 7), "Error"),
    "NaN weights": (_nan_weights, "holds inf or NaN"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, kind):
    model, opt, sched = _setup()
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {"position": 4})
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ckpt.save_checkpoint(tmp_path, 2, model, opt, sched, {"position": 8})
    damage, reason = DAMAGE[kind]
    damage(tmp_path / "checkpoints" / "step-000002")
    fresh, opt2, sched2 = _setup(seed=3)
    notes = []
    state = ckpt.resume_checkpoint(tmp_path, fresh, opt2, sched2, notes.append)
    assert state["step"] == 1 and state["position"] == 4
    torch.testing.assert_close(fresh.weight, saved)
    assert "step-000002 is damaged" in notes[0] and reason in notes[0] and "falling back" in notes[0]
    assert notes[1].startswith("resumed from") and notes[1].endswith("(step 1)")
    assert not (tmp_path / "checkpoints" / "step-000002").exists()  # unreadable; the resumed run rewrites it
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-000001"


def test_no_checkpoint_gives_none_and_all_damaged_is_an_error(tmp_path):
    from fairrl.errors import FairRLError

    model, opt, sched = _setup()
    assert ckpt.resume_checkpoint(tmp_path, model, opt, sched, print) is None
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {})
    _damage_weights(tmp_path / "checkpoints" / "step-000001")
    with pytest.raises(
        FairRLError, match=r"no checkpoint there could be loaded \(step-000001: .*--overwrite"
    ):
        ckpt.resume_checkpoint(tmp_path, model, opt, sched, lambda s: None)


def test_a_checkpoint_of_another_model_is_a_config_error_not_damage(tmp_path):
    from fairrl.errors import ConfigError

    model, opt, sched = _setup()
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {})
    other = torch.nn.Sequential(torch.nn.Linear(3, 2))
    opt2 = torch.optim.AdamW(other.parameters())
    with pytest.raises(ConfigError, match="does not match the model"):
        ckpt.resume_checkpoint(tmp_path, other, opt2, None, lambda s: None)


def test_saving_sweeps_orphaned_temporaries_only(tmp_path):
    model, opt, sched = _setup()
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / ".step-000003-abcd1234").mkdir()  # an earlier version's temporary folder
    (root / ".step-000004.x1y2z3w4.tmp").mkdir()
    (root / ".latest.abcdefgh").write_text("step-000003")
    (tmp_path / ".final.q1w2e3r4.tmp").mkdir()
    (tmp_path / ".gitignore").write_text("*")  # not a temporary: kept
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {})
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gitignore", "checkpoints"]


def test_atomic_writers_replace_in_place_and_leave_no_temporaries(tmp_path):
    from fairrl.fsutil import atomic_directory, write_text_atomic

    write_text_atomic(tmp_path / "a.txt", "one")
    write_text_atomic(tmp_path / "a.txt", "two")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old.txt").write_text("old")
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "new.txt").write_text("new")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "a.txt",
        "d",
        "d/sub",
        "d/sub/new.txt",
    ]

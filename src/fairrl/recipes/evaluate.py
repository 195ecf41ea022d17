"""``fairrl eval``: one or more models on the evaluation suites (or on a training config's held-out sets).

Suite mode (default) writes into ``--out``:

- ``results.json``: ``{"schema_version": 2, "kind": "suites", "fairrl_version", "created", "complete": true, "settings",
  "models": {name: {"path", "seconds": {suite: s}, "suites": {suite: result}}}}`` where each result
  has the shared shape of :mod:`fairrl.eval.suite` without its per-item records;
- ``items/<k>-<model>/<suite>.jsonl``: the per-item records (prompt ids, scores, outputs);
- ``results.md``: one comparison table per suite plus per-group tables; ``plots/<suite>.png``.

Config mode (``--config``) writes ``results.json`` with ``"kind": "heldout"`` and ``"models": {name:
{split: result}}`` (the shapes of :func:`fairrl.eval.heldout.evaluate_splits`).

All items are loaded and checked before the first model is, so bad input costs no compute. While it
runs, finished suites go to ``results.partial.json`` (``"complete": false``); ``results.json`` is
written (atomically) only once every model and suite is done, and the partial file is then removed.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fairrl.config import load_config
from fairrl.console import Console, progress_scope
from fairrl.fsutil import write_json_atomic, write_text_atomic
from fairrl.models.loading import load_model, load_tokenizer
from fairrl.models.policy import resolve_device

RESULTS_SCHEMA_VERSION = 2


def _model_path(name: str) -> str:
    """A training run folder evaluates its ``final/`` weights."""
    final = Path(name) / "final"
    return str(final) if final.is_dir() else name


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-60:] or "model"


def _write_items(path: Path, items: list[dict[str, Any]]) -> None:
    import json

    write_text_atomic(path, "".join(json.dumps(it, default=str) + "\n" for it in items))


def run_suites(
    models: list[str],
    suites: list[str],
    opts,
    out: str,
    console: Console,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> Path:
    """Evaluate every model on every suite; returns the path of ``results.json``.

    Under ``torchrun`` every rank scores its share of each suite's batches (:mod:`fairrl.distributed`) and
    rank 0 writes the results, which equal one process's."""
    from fairrl import __version__
    from fairrl.distributed import current
    from fairrl.eval.suite import SUITES, split_categories
    from fairrl.report.eval_report import write_eval_report

    cats = split_categories(suites, opts.categories, opts)
    data = {}
    for s in suites:
        data[s] = SUITES[s].load(opts, cats[s])
        console(f"{s}: {len(data[s])} items")
    out_dir = Path(out)
    main = current().main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(opts).items()}
    settings.update(suites=suites, categories_by_suite=cats, items={s: len(v) for s, v in data.items()})
    payload: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "kind": "suites",
        "fairrl_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": False,
        "settings": settings,
        "models": {},
    }
    dev = resolve_device(device)
    for k, name in enumerate(models):
        path = _model_path(name)
        console(f"loading {name} ...")
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        model = load_model(path, dtype=dtype, device=dev, trust_remote_code=trust_remote_code)
        entry: dict[str, Any] = {"path": path, "seconds": {}, "suites": {}}
        payload["models"][name] = entry
        for s in suites:
            t0 = time.perf_counter()
            with progress_scope(f"{name}: {s}" if len(models) > 1 else s):  # labels the suite's bars
                result = SUITES[s].run(model, tokenizer, data[s], opts)
            entry["seconds"][s] = round(time.perf_counter() - t0, 2)
            if not main:
                continue
            _write_items(out_dir / "items" / f"{k}-{_slug(name)}" / f"{s}.jsonl", result.pop("items", []))
            entry["suites"][s] = result
            console(f"  {s}: {len(data[s])} items in {entry['seconds'][s]:.0f}s  " + _headline_line(result))
            write_json_atomic(out_dir / "results.partial.json", payload)
        del model
    if not main:
        return out_dir / "results.json"
    payload["complete"] = True
    write_json_atomic(out_dir / "results.json", payload)
    (out_dir / "results.partial.json").unlink(missing_ok=True)
    report = write_eval_report(out_dir, payload)
    console(report.read_text().split("\n## Per group", 1)[0])
    console(f"wrote {out_dir / 'results.json'}, {report} and plots in {out_dir / 'plots'}")
    return out_dir / "results.json"


def _headline_line(result: dict[str, Any]) -> str:
    return "  ".join(f"{m}={v:.3f}" for m, v in result.get("headline", {}).items())


def run_config_eval(
    models: list[str], config: str | None, overrides: list[str], out: str, console: Console
) -> Path:
    """The held-out sets a training config builds (``bbq_templates``, ``bbq_categories``, ``reasoning``);
    sharded over the ranks under ``torchrun``, as :func:`run_suites`."""
    from fairrl.data.run_data import build_run_data
    from fairrl.distributed import current
    from fairrl.eval.heldout import evaluate_splits
    from fairrl.report.markdown import comparison_table

    cfg = load_config(config, overrides)
    data = build_run_data(cfg.data, cfg.eval, cfg.seed)
    device = resolve_device(cfg.model.device)
    out_dir = Path(out)
    main = current().main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name in models:
        path = _model_path(name)
        console(f"evaluating {name} ...")
        tokenizer = load_tokenizer(path, trust_remote_code=cfg.model.trust_remote_code)
        model = load_model(path, dtype=cfg.model.dtype, device=device, trust_remote_code=cfg.model.trust_remote_code)
        results[name] = evaluate_splits(model, tokenizer, data, cfg, console)
    if not main:
        return out_dir / "results.json"
    payload = {"schema_version": RESULTS_SCHEMA_VERSION, "kind": "heldout", "config": cfg.model_dump(mode="json"),
               "models": results}
    write_json_atomic(out_dir / "results.json", payload)
    table = comparison_table(results)
    write_text_atomic(out_dir / "results.md", table + "\n")
    console(table)
    console(f"wrote {out_dir / 'results.json'} and {out_dir / 'results.md'}")
    return out_dir / "results.json"

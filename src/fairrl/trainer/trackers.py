"""Experiment trackers behind ``report_to``: TensorBoard, Weights & Biases and MLflow.

``jsonl`` (metrics.jsonl, completions.jsonl) is written by :class:`fairrl.trainer.logging.MetricsLogger`
itself and is always on: resume, reports and plots read it. The trackers here get the same rows.
wandb and mlflow are optional extras (``pip install 'fairrl[wandb]'`` / ``'fairrl[mlflow]'``), imported
only when a run asks for them; :func:`require_trackers` turns a missing package into a ConfigError
before any model loads.

Offline by default, so a run never needs a server and never stops to prompt for a key:

- **wandb**: ``WANDB_MODE`` wins when set. Otherwise the run is online only when ``WANDB_API_KEY`` is
  set, else offline (a key stored by ``wandb login`` in ~/.netrc is not looked at; set
  ``WANDB_MODE=online`` to use it). Files go under ``<run>/wandb/`` (``WANDB_DIR`` overrides); upload
  an offline run later with ``wandb sync <run>/wandb/offline-run-*``. Project ``WANDB_PROJECT``
  (default ``fairrl``), entity ``WANDB_ENTITY``.
- **mlflow**: ``MLFLOW_TRACKING_URI`` when set (a server, Databricks, ...), else a local file store
  ``file:<run>/mlruns`` (see it with ``mlflow ui --backend-store-uri file:<run>/mlruns``). MLflow 3 keeps
  the file store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``; fairrl sets
  that variable (if unset) for the process when it uses its own store. Experiment
  ``MLFLOW_EXPERIMENT_NAME`` (default ``fairrl``).

Resume: each tracker's run id is kept in ``<run>/trackers.json``, so ``--resume`` continues the same
wandb run (``resume="allow"``) and the same MLflow run. TensorBoard drops the events after the
checkpoint step (``purge_step``); wandb and MLflow are append-only, so rows logged between the last
checkpoint and an interruption stay there (wandb ignores the repeated steps; MLflow keeps both values),
while metrics.jsonl is cut back to the checkpoint.

Secrets: endpoints and keys are read from the environment by the tracker libraries; fairrl never puts
them in a config, trackers.json or a message (URLs with credentials are masked in errors).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import string
import sys
import time
from pathlib import Path
from typing import Any

from fairrl.config.common import tracker_installed
from fairrl.console import Console
from fairrl.errors import ConfigError, FairRLError
from fairrl.fsutil import write_json_atomic

EXTRA_OF = {"wandb": "wandb", "mlflow": "mlflow"}
"""Trackers whose package is an optional extra of fairrl (``pip install 'fairrl[<extra>]'``)."""
STATE_FILE = "trackers.json"


def require_trackers(report_to: list[str]) -> None:
    """A ConfigError naming the pip command when a tracker in ``report_to`` is not installed."""
    for name in report_to:
        if name in EXTRA_OF and not tracker_installed(name):
            raise ConfigError(
                f"report_to includes {name} but the {name} package is not installed: "
                f"pip install 'fairrl[{EXTRA_OF[name]}]' (or drop {name} from report_to)"
            )
        if name == "tensorboard" and not tracker_installed(name):
            raise ConfigError(
                "report_to includes tensorboard but it is not installed: pip install tensorboard"
            )


def _masked(err: Exception) -> str:
    """An error as text with any ``scheme://user:secret@`` credentials masked."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", f"{type(err).__name__}: {err}")[:300]


def finite_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row (trackers plot these; text and NaN stay in metrics.jsonl)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


def completions_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """completions.jsonl rows -> (columns, data): step, group, prompt, completion, reward, then one column
    per reward function (a label that clashes with a fixed column gets a ``reward:`` prefix)."""
    fixed = ["step", "group", "prompt", "completion", "reward"]
    labels = list(dict.fromkeys(k for r in rows for k in r.get("rewards", {})))
    columns = fixed + [f"reward:{x}" if x in fixed else x for x in labels]
    data = [[r.get(c) for c in fixed] + [r.get("rewards", {}).get(x) for x in labels] for r in rows]
    return columns, data


def _markdown(columns: list[str], data: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        text = f"{v:.3f}" if isinstance(v, float) else "" if v is None else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in data])


class Tracker:
    """One destination of metrics rows and completion tables."""

    name = "tracker"

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_completions(self, step: int, columns: list[str], data: list[list[Any]]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, run_dir: Path, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None  # drop events after the checkpoint
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def log_completions(self, step: int, columns: list[str], data: list[list[Any]]) -> None:
        self.writer.add_text("completions", _markdown(columns, data), step)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, run_dir: Path, state: dict[str, Any], run_name: str, config: dict[str, Any],
                 console: Console):  # fmt: skip
        import wandb

        self._wandb = wandb
        mode = None  # WANDB_MODE, when set, is read by wandb itself
        if not os.environ.get("WANDB_MODE"):
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"  # never prompt for a key
        alphabet = string.ascii_lowercase + string.digits  # wandb's own run-id alphabet
        run_id = state.get("run_id") or "".join(secrets.choice(alphabet) for _ in range(8))
        state["run_id"] = run_id
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "fairrl"), name=run_name, id=run_id, resume="allow",
            dir=os.environ.get("WANDB_DIR") or str(run_dir), config=config, mode=mode, reinit="create_new",
            settings=wandb.Settings(console="off", silent=True),
        )  # fmt: skip
        if self.run.settings.mode == "offline":
            console(f"wandb: offline run {run_id} in {Path(self.run.dir).parent}; upload it with `wandb sync` "
                    "(set WANDB_API_KEY or WANDB_MODE=online to log online)")  # fmt: skip

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def log_completions(self, step: int, columns: list[str], data: list[list[Any]]) -> None:
        self.run.log({"completions": self._wandb.Table(columns=columns, data=data)}, step=step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, run_dir: Path, state: dict[str, Any], run_name: str, config: dict[str, Any],
                 console: Console):  # fmt: skip
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        run_id = state.get("run_id")
        if run_id is not None and self._exists(run_id):
            self.client.update_run(run_id, status="RUNNING")
        else:
            if run_id is not None:
                console(
                    f"mlflow: run {run_id} of trackers.json is not in this tracking store; starting a new run"
                )
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "fairrl")
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
            run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
            params = [Param(k, str(v)[:500]) for k, v in _flatten(config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(run_id, params=params[i : i + 100])
            self.client.log_dict(run_id, config, "config.json")
        state["run_id"] = run_id
        self.run_id = run_id
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            console(f"mlflow: run {run_id} in {uri} (view: mlflow ui --backend-store-uri {uri})")

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # mlflow raises MlflowException (RESOURCE_DOES_NOT_EXIST) for an unknown id
            return False

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(re.sub(r"[^\w\-. :/]", "_", k), v, now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):  # at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def log_completions(self, step: int, columns: list[str], data: list[list[Any]]) -> None:
        # {"columns", "data"} is the layout mlflow.log_table writes, so MLflow's tools read it as a table
        self.client.log_dict(
            self.run_id, {"columns": columns, "data": data}, f"completions/step_{step:06d}.json"
        )

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return out


def open_trackers(run_dir: Path, report_to: list[str], *, resume_step: int | None, run_name: str,
                  config: dict[str, Any], console: Console) -> list[Tracker]:  # fmt: skip
    """Start every tracker of ``report_to`` (jsonl is the logger's own); a resumed run (``resume_step``
    given) reuses the run ids saved in trackers.json, a new one overwrites them."""
    require_trackers(report_to)
    path = run_dir / STATE_FILE
    saved: dict[str, Any] = {}
    if resume_step is not None and path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            console(f"{path} is unreadable; the trackers start new runs")
    trackers: list[Tracker] = []
    state: dict[str, Any] = {}
    try:
        for name in report_to:
            if name == "tensorboard":
                trackers.append(TensorBoardTracker(run_dir, resume_step))
            elif name in ("wandb", "mlflow"):
                state[name] = dict(saved.get(name, {}))
                cls = WandbTracker if name == "wandb" else MlflowTracker
                try:
                    trackers.append(cls(run_dir, state[name], run_name, config, console))
                except FairRLError:
                    raise
                except Exception as err:  # a tracker's own failure (network, bad URI) is the user's to fix
                    raise FairRLError(f"report_to {name}: could not start the run ({_masked(err)})") from None
    except BaseException:
        close_trackers(trackers, failed=True)
        raise
    if state:
        write_json_atomic(path, {**saved, **state})
    return trackers


def close_trackers(trackers: list[Tracker], failed: bool | None = None) -> None:
    """Close every tracker; ``failed`` None = failed when an exception is propagating."""
    if failed is None:
        failed = sys.exc_info()[0] is not None
    for t in trackers:
        try:
            t.close(failed=failed)
        except Exception:  # noqa: BLE001 - closing one tracker must not hide the run's own outcome
            pass

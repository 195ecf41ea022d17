"""Per-step metrics and sample completions: JSONL files in the run folder (always) plus the experiment
trackers of ``report_to`` (TensorBoard, wandb, MLflow; see :mod:`fairrl.trainer.trackers`).

``metrics.jsonl`` gets one row per logged step and ``completions.jsonl`` one row per sampled completion
(``log_completions``); they are what resume, reports and plots read, so they are written whatever
``report_to`` says. On resume, lines for steps after the checkpoint are dropped first, so the files read
as one uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fairrl.config.common import DEFAULT_REPORT_TO
from fairrl.console import Console
from fairrl.trainer.trackers import close_trackers, completions_table, finite_scalars, open_trackers


def _keep_until(path: Path, step: int) -> None:
    """Drop the rows of a JSONL log whose ``step`` is after ``step`` (a resumed run redoes them)."""
    if not path.exists():
        return
    rows = [(line, _row(line)) for line in path.read_text().splitlines()]
    kept = [line for line, row in rows if row is not None and row.get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _row(line: str) -> dict[str, Any] | None:
    """One JSONL row, or None for a blank or damaged line (a write cut short by a kill leaves a torn last line)."""
    try:
        row = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


class MetricsLogger:
    """Writes metrics.jsonl / completions.jsonl and forwards the same rows to the trackers."""

    def __init__(
        self,
        run_dir: Path,
        report_to: list[str] | tuple[str, ...] = DEFAULT_REPORT_TO,
        resume_step: int | None = None,
        *,
        run_name: str | None = None,
        config: dict[str, Any] | None = None,
        console: Console = print,
    ):
        run_dir = Path(run_dir)
        self.path = run_dir / "metrics.jsonl"
        self.completions_path = run_dir / "completions.jsonl"
        if resume_step is not None:
            _keep_until(self.path, resume_step)
            _keep_until(self.completions_path, resume_step)
        self._file = self.path.open("a")
        self._completions = None
        self.trackers = []
        try:
            self.trackers = open_trackers(
                run_dir, [t for t in report_to if t != "jsonl"], resume_step=resume_step,
                run_name=run_name or run_dir.name, config=config or {}, console=console,
            )  # fmt: skip
        except BaseException:
            self._file.close()
            raise

    @classmethod
    def for_run(cls, cfg, run_dir: Path, resume_step: int | None, console: Console = print) -> MetricsLogger:
        """The logger of a training run: ``cfg.report_to`` trackers, named after the run, with its config."""
        return cls(run_dir, cfg.report_to, resume_step, run_name=getattr(cfg, "run_name", None) or Path(run_dir).name,
                   config=cfg.model_dump(mode="json"), console=console)  # fmt: skip

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        clean = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, **clean}) + "\n")
        self._file.flush()
        scalars = finite_scalars(clean)
        for t in self.trackers:
            t.log_metrics(step, scalars)

    def log_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Append sampled completions (rows of :func:`fairrl.trainer.completions.completion_rows`) to
        completions.jsonl and send them to the trackers as a table."""
        if self._completions is None:
            self._completions = self.completions_path.open("a")
        self._completions.write("".join(json.dumps({"step": step, **r}) + "\n" for r in rows))
        self._completions.flush()
        columns, data = completions_table([{"step": step, **r} for r in rows])
        for t in self.trackers:
            t.log_completions(step, columns, data)

    def close(self, failed: bool | None = None) -> None:
        """Close the files and end the tracker runs (as failed when an exception is propagating)."""
        self._file.close()
        if self._completions is not None:
            self._completions.close()
        close_trackers(self.trackers, failed)


class NullLogger:
    """The logger of the ranks other than 0 in data-parallel training: rank 0 writes the run's logs."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def log_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        pass

    def close(self, failed: bool | None = None) -> None:
        pass


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All logged rows of a metrics.jsonl file (a damaged line, e.g. the torn last line of a killed run, is skipped)."""
    return [row for row in map(_row, Path(path).read_text().splitlines()) if row is not None]

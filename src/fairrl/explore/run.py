"""``fairrl explore STUDY.yaml``: run (or join, or report) a study; outputs in ``OUT``.

``OUT`` (default ``runs/explore/<study_name>``) holds ``study.json`` (the study file as run), the SQLite
storage ``study.db`` (unless ``--storage``), ``runs/run-<hash>/seed-<s>/`` (every trial's ordinary run
folders), and once the study is done ``trials.csv``, ``pareto.png``, ``pareto.html`` and ``explore.md``
(:mod:`fairrl.report.explore`). ``--workers K`` starts K worker processes on this machine (each trains
with ``cores // K`` threads); ``--join`` adds this process as a worker to a study another machine started
(same ``--storage``); ``--report`` rebuilds the outputs from the storage without training. Rerunning the
same command resumes: finished trials are kept, a dead worker's trial is retried (:mod:`fairrl.explore.study`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fairrl.config.base import load_config
from fairrl.config.explore import StudyConfig
from fairrl.errors import ConfigError
from fairrl.explore.study import load_study, make_objective, optimize, storage_url, trial_records
from fairrl.explore.trial import trial_overrides
from fairrl.multiseed import TrainOne
from fairrl.report.explore import mask_url, write_explore_report


def check_study(study: StudyConfig) -> None:
    """Every method the space can pick gives a valid training config (a typo fails now, not in trial 7)."""
    ranges = study.ranges()
    methods = study.space.method.choices if study.space.method is not None else [None]
    for m in methods:
        values = {"method": m} if m is not None else {}
        for k, r in ranges.items():
            if k != "method" and (r.methods is None or m in r.methods):
                values[k] = r.choices[0] if r.choices is not None else r.low
        trial_overrides(study, values)


def _spawn_workers(study_file: str, out: Path, url: str, workers: int, console: Callable[[str], None]) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = []
    for k in range(workers):
        log = (out / f"worker-{k}.log").open("w")
        cmd = [sys.executable, "-m", "fairrl", "explore", study_file, "--out", str(out), "--storage", url, "--join",
               "--skip-report"]  # fmt: skip
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        console(f"worker {k} started ({threads} thread(s)), log {log.name}")
    bad = []
    for k, (p, log) in enumerate(procs):
        if p.wait() != 0:
            bad.append(k)
        log.close()
    if bad:
        console(f"worker(s) {bad} exited with an error; see {out}/worker-<k>.log (the study keeps what they finished)")


def run_explore(
    study_file: str, train_one: TrainOne, console: Callable[[str], None] = print, *, out: str | None = None,
    storage: str | None = None, join: bool = False, workers: int = 1, report: bool = True,
    report_only: bool = False,
) -> Path | None:  # fmt: skip
    """Run the study (module docstring); returns ``OUT/explore.md`` when a report was written."""
    study = load_config(study_file, [], StudyConfig)
    root = Path(out or Path("runs") / "explore" / study.study_name)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the study folder {root}: {err.strerror}; pick another --out") from None
    url = storage_url(storage, root)
    saved = root / "study.json"
    current = study.model_dump(mode="json", by_alias=True)
    if saved.exists() and json.loads(saved.read_text()) != current and not report_only:
        raise ConfigError(f"{root} holds a study run from another study file; its trials would be mixed with "
                          "new ones: pick another --out (or restore the study file)")  # fmt: skip
    if not report_only:
        check_study(study)
        saved.write_text(json.dumps(current, indent=2))
        study_obj = load_study(study, url, create=not join)
        console(f"study {study.study_name!r}: {study.sampler}, {study.n_trials} trials, storage {mask_url(url)}")
        if workers > 1:
            _spawn_workers(study_file, root, url, workers, console)
        else:
            optimize(study_obj, study, make_objective(study, root, train_one, console))
    if not report:
        return None
    study_obj = load_study(study, url, create=False)
    info = {"study": study.study_name, "sampler": study.sampler, "storage": url, "n_trials": study.n_trials,
            "budget": study.budget, "seeds": study.seeds, "base": study.base}  # fmt: skip
    objectives = [{"name": o.label, "metric": o.metric, "direction": o.direction} for o in study.objectives]
    constraints = [c.model_dump() for c in study.constraints]
    path = write_explore_report(root, trial_records(study_obj, study), objectives, constraints, info)
    console(path.read_text().split("\n## ", 2)[0] if path.exists() else "")
    console(f"wrote {path}, {root / 'pareto.html'}, {root / 'pareto.png'} and {root / 'trials.csv'}")
    return path

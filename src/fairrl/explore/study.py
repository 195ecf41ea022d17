"""The Optuna side of ``fairrl explore``: storage, sampler, and the objective that trains a trial.

- **Storage**: an Optuna RDB storage, SQLite by default (``OUT/study.db``: one machine, several worker
  processes) or any SQLAlchemy URL such as ``postgresql+psycopg://user@host/db`` (workers on several
  machines). Every running trial sends a heartbeat; a trial whose worker died (kill -9, a lost machine)
  is marked failed once its heartbeat is stale and retried once, with the same values, by the next worker
  that starts a trial (Optuna's ``RetryHeartbeatStaleTrialCallback``, ``RetryFailedTrialCallback`` before 4.9). The retried trial's runs are in the same
  folder (:func:`fairrl.explore.trial.run_key`), so it resumes them.
- **Samplers**: NSGA-II (Deb et al. 2002) and NSGA-III (Deb & Jain 2014) for several objectives, Optuna's
  multi-objective TPE, random, and grid (the FairReason paper's hand sweep); constraints go to the sampler
  (``Trial.set_constraint`` from Optuna 5, its ``constraints_func`` before).
- **Failures**: an error inside a trial is recorded on the trial (``error`` attribute) and the trial is
  FAIL; the study goes on. ``n_trials`` is the number of finished trials wanted, all workers together; a
  study also stops once ``n_trials`` trials have failed (a config that can never work does not loop).
"""

from __future__ import annotations

import inspect
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairrl.config.explore import StudyConfig
from fairrl.errors import ConfigError, FairRLError
from fairrl.explore.trial import constraint_violations, run_key, trial_overrides, trial_values
from fairrl.multiseed import TrainOne, run_seeds, seed_folder

GRACE_PERIODS = 3
"""Heartbeat periods a running trial may stay silent before it counts as dead."""
OPEN_ATTEMPTS = 3
"""Tries to open the storage (workers that start together may race to create a new storage's tables)."""


def _optuna():
    try:
        import optuna
    except ModuleNotFoundError:
        raise ConfigError("fairrl explore needs Optuna: pip install 'fairrl[explore]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def optuna_experimental_warning() -> type[Warning]:
    from optuna.exceptions import ExperimentalWarning

    return ExperimentalWarning


def native_constraints() -> bool:
    """Whether Optuna takes a trial's constraint values from ``Trial.set_constraint`` (5.0 and later; the
    samplers' ``constraints_func`` is deprecated there)."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def storage_url(storage: str | None, out: Path) -> str:
    """``storage`` as given, or SQLite in ``OUT/study.db``."""
    return storage or f"sqlite:///{(out / 'study.db').resolve()}"


def open_storage(url: str, heartbeat: int):
    _optuna()
    import optuna.storages as st

    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}  # several worker processes share one file
    with warnings.catch_warnings():  # heartbeats and their retry callback are "experimental" in Optuna's terms
        warnings.simplefilter("ignore", optuna_experimental_warning())
        if "heartbeat_stale_trial_callback" in inspect.signature(st.RDBStorage).parameters:  # Optuna >= 4.9
            retry = {"heartbeat_stale_trial_callback": st.RetryHeartbeatStaleTrialCallback(max_retry=1)}
        else:
            retry = {"failed_trial_callback": st.RetryFailedTrialCallback(max_retry=1)}
        for attempt in range(OPEN_ATTEMPTS):
            try:
                return st.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                     grace_period=GRACE_PERIODS * heartbeat, **retry)  # fmt: skip
            except (ImportError, ModuleNotFoundError) as err:
                raise ConfigError(f"storage {url.split('://')[0]}: a database driver is missing ({err}); for "
                                  "PostgreSQL pip install 'psycopg[binary]' and use postgresql+psycopg://...") from None  # fmt: skip
            except Exception as err:  # noqa: BLE001 - SQLAlchemy's connection errors have many types
                if attempt + 1 < OPEN_ATTEMPTS:  # e.g. two workers creating a new storage's tables at once
                    time.sleep(1.0 + attempt)
                    continue
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ConfigError(f"cannot open the study storage ({first}); check --storage and that the "
                                  "database server is running") from None  # fmt: skip


def make_sampler(study: StudyConfig):
    optuna = _optuna()
    s = study.sampler
    cons = None  # Optuna >= 5 takes constraints from Trial.set_constraint (make_objective), older ones from here
    if study.constraints and not native_constraints():
        cons = lambda t: t.user_attrs.get("constraints", [0.0] * len(study.constraints))  # noqa: E731
    if s == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=study.sampler_seed, constraints_func=cons)
    if s == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=study.sampler_seed, constraints_func=cons)
    if s == "tpe":
        return optuna.samplers.TPESampler(seed=study.sampler_seed, multivariate=True, constraints_func=cons)
    if s == "random":
        return optuna.samplers.RandomSampler(seed=study.sampler_seed)
    return optuna.samplers.GridSampler({k: r.grid() for k, r in study.ranges().items()}, seed=study.sampler_seed)


def load_study(study: StudyConfig, url: str, create: bool):
    """The Optuna study named ``study.study_name`` in ``url`` (created when ``create``)."""
    optuna = _optuna()
    storage = open_storage(url, study.heartbeat_seconds)
    directions = [o.direction for o in study.objectives]
    if create:
        return optuna.create_study(study_name=study.study_name, storage=storage, sampler=make_sampler(study),
                                   directions=directions, load_if_exists=True)  # fmt: skip
    try:
        return optuna.load_study(study_name=study.study_name, storage=storage, sampler=make_sampler(study))
    except KeyError:
        raise ConfigError(f"no study {study.study_name!r} in the storage; start it without --join first") from None


def suggest(trial, study: StudyConfig) -> dict[str, Any]:
    """The trial's values: ``method`` first (other values may apply to some methods only)."""
    out: dict[str, Any] = {}
    ranges = study.ranges()
    order = ["method"] + [k for k in ranges if k != "method"]
    for name in (k for k in order if k in ranges):
        r = ranges[name]
        if r.methods is not None and study.sampler != "grid" and out.get("method") not in r.methods:
            continue
        if r.choices is not None:
            out[name] = trial.suggest_categorical(name, r.choices)
        elif r.int_:
            out[name] = trial.suggest_int(name, int(r.low), int(r.high), step=int(r.step or 1), log=r.log)
        else:
            out[name] = trial.suggest_float(name, r.low, r.high, step=r.step, log=r.log)
    return out


def make_objective(study: StudyConfig, out: Path, train_one: TrainOne,
                   console: Callable[[str], None]) -> Callable[[Any], list[float]]:  # fmt: skip
    """The function Optuna calls per trial: train every seed (resumable), return the objective values."""

    def objective(trial) -> list[float]:
        try:
            values = suggest(trial, study)
            overrides = trial_overrides(study, values)
            root = out / "runs" / run_key(overrides)
            trial.set_user_attr("run_dir", str(root))
            console(f"\n##### trial {trial.number}: {values} -> {root}")
            shared = f"eval.start_cache={out / 'start_evals'}"  # trials start alike: one starting evaluation
            run_seeds(study.base, [shared, *overrides], study.seeds, root, train_one, console)
            got = trial_values(study, [seed_folder(root, s) for s in study.seeds])
        except BaseException as err:
            msg = str(err) if isinstance(err, FairRLError) else "".join(traceback.format_exception_only(err)).strip()
            trial.set_user_attr("error", msg or type(err).__name__)
            raise
        violations = constraint_violations(study, got["constraints"])
        trial.set_user_attr("constraints", violations)
        if native_constraints():
            for k, v in enumerate(violations):
                trial.set_constraint(f"c{k}", v)
        trial.set_user_attr("constraint_values", got["constraints"])
        trial.set_user_attr("groups", got["groups"])
        trial.set_user_attr("minutes", got["minutes"])
        trial.set_user_attr("seeds", len(study.seeds))
        return [got["values"][o.label] for o in study.objectives]

    return objective


def optimize(study_obj, study: StudyConfig, objective) -> None:
    """Run trials until the study holds ``n_trials`` finished ones, or as many failed ones (all workers)."""
    from optuna.trial import TrialState

    def enough(st) -> bool:
        trials = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        return max(sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.FAIL)) >= study.n_trials

    def stop(st, trial) -> None:
        if enough(st):
            st.stop()

    if not enough(study_obj):
        study_obj.optimize(objective, callbacks=[stop], catch=(Exception,), gc_after_trial=True)


def trial_records(study_obj, study: StudyConfig) -> list[dict[str, Any]]:
    """Every trial as the plain records :mod:`fairrl.report.explore` reads."""
    out = []
    for t in study_obj.get_trials(deepcopy=False):
        cons = t.user_attrs.get("constraints")
        out.append({
            "number": t.number, "state": t.state.name, "params": dict(t.params),
            "values": None if t.values is None else {o.label: v for o, v in zip(study.objectives, t.values, strict=True)},
            "feasible": None if not study.constraints or cons is None else all(c <= 0 for c in cons),
            "error": t.user_attrs.get("error") or (None if t.state.name != "FAIL" else "worker lost (heartbeat stale)"),
            "run_dir": t.user_attrs.get("run_dir"), "seeds": t.user_attrs.get("seeds", len(study.seeds)),
            "groups": t.user_attrs.get("groups", {}), "minutes": t.user_attrs.get("minutes"),
        })  # fmt: skip
    return out

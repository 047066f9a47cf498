"""One Optuna study shared by any number of worker processes, capped at exactly N trials.

Every worker (each process of ``--n-jobs``, each machine running the same command) loops:
claim a waiting trial, else add one while the study holds fewer than N, else stop.
Claiming is Optuna's own atomic step (a trial goes from WAITING to RUNNING in one
database transaction, and only one worker succeeds; SQLite ignores the row lock that step
takes, so on SQLite the workers also hold a file lock beside the database while they
claim), and trial numbers are handed out
under the study's lock, so a trial runs at most once and a trial numbered N or more is
never run: the workers finish exactly N trials between them. (Optuna's
``MaxTrialsCallback`` counts after each trial, so two workers finishing together can both
start one more.) Two workers adding the last trial at once leave one WAITING trial past
the cap, never run; a later command with a larger ``--trials`` uses it.

A trial interrupted by Ctrl-C or SIGTERM is recorded as failed with the user attribute
``interrupted`` and does not count: the restarted command runs another in its place. A
trial whose process was killed outright stays RUNNING and counts (raise ``--trials``).

The sampler is made afresh for each trial, seeded with ``seed`` and the trial's number:
workers on several machines running the same command do not sample the same settings,
and a study run again in the same order samples the same ones.
"""

from __future__ import annotations

import math
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["StudyPlan", "make_pruner", "make_sampler", "open_study", "run_worker",
           "study_summary"]

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "halving", "none")


@dataclass(frozen=True)
class StudyPlan:
    """What a worker needs to find and run the study."""

    name: str
    url: str
    trials: int
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    evaluations: int = 10
    attrs: tuple[tuple[str, Any], ...] = ()  # what the study was made for (checked on join)


def make_sampler(kind: str, seed: int, number: int = 0) -> Any:
    """TPE (multivariate, grouped for conditional settings, 10 random trials first) or
    random sampling, seeded with ``seed`` and the trial's ``number``."""
    import optuna

    rng_seed = seed * 1_000_003 + number
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=rng_seed)
    with warnings.catch_warnings():  # multivariate and group are "experimental" options
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(n_startup_trials=10, multivariate=True, group=True,
                                          seed=rng_seed)


def make_pruner(kind: str, evaluations: int) -> Any:
    """RL Zoo's pruners: the median one (5 trials and a third of the evaluations before
    pruning), successive halving, or none."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=evaluations // 3)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4,
                                                      min_early_stopping_rate=0)
    return optuna.pruners.NopPruner()


def open_study(plan: StudyPlan, storage: Any) -> Any:
    """The study (created if new, ``load_if_exists``); a ValueError if it was made for
    another task, algorithm or budget than ``plan.attrs`` say."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=plan.name, direction="maximize",
                                load_if_exists=True,
                                sampler=make_sampler(plan.sampler, plan.seed),
                                pruner=make_pruner(plan.pruner, plan.evaluations))
    if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ValueError(f"study {plan.name!r} does not maximise one value; it was not made by "
                         "velora-ens tune (choose another --study-name)")
    made_for = study.user_attrs
    for key, value in plan.attrs:
        if key not in made_for:
            study.set_user_attr(key, value)
        elif made_for[key] != value:
            raise ValueError(f"study {plan.name!r} was made with {key}={made_for[key]!r}, this "
                             f"command asks for {value!r}; run it as it started or choose "
                             "another --study-name")
    return study


def _interrupted(trial: Any) -> bool:
    return bool(trial.user_attrs.get("interrupted"))


@contextmanager
def claim_lock(url: str) -> Iterator[None]:
    """Serialise the claims of workers on one SQLite file: SQLite takes no row lock
    (``SELECT ... FOR UPDATE`` is ignored), so two workers could both move one WAITING
    trial to RUNNING. PostgreSQL and the journal file claim atomically on their own."""
    if not url.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one SQLite worker per study there
        yield
        return
    with open(url[len("sqlite:///"):] + ".claim-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _claim(study: Any, storage: Any, study_id: int, cap: int) -> int | None:
    """The id of a trial this worker now runs, or ``None`` when the study has its ``cap``
    trials (finished or running elsewhere)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState, create_trial

    while True:
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        skipped = 0  # interrupted trials below: they do not count
        for trial in trials:
            if trial.state == TrialState.WAITING and trial.number - skipped < cap:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                            trial.number)
                try:
                    if storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                        return trial_id
                except UpdateFinishedTrialError:
                    pass
            skipped += _interrupted(trial)
        if len(trials) - skipped >= cap:
            return None
        study.add_trial(create_trial(state=TrialState.WAITING))


def study_summary(study: Any) -> str:
    """``done 4/10 (3 complete, 1 pruned, 0 failed); best 40.2 (trial 1)``-like counts."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s and not _interrupted(t) for t in trials)
             for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    done = sum(count.values())
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value, default=None)
    text = (f"{done} done ({count[TrialState.COMPLETE]} complete, "
            f"{count[TrialState.PRUNED]} pruned, {count[TrialState.FAIL]} failed)")
    return text + (f"; best {best.value:.2f} (trial {best.number})" if best else "")


def run_worker(plan: StudyPlan, storage: Any, objective: Callable[[Any], float],
               say: Callable[[str], None] = print) -> int:
    """Run trials of the study until it has ``plan.trials``; returns how many this worker
    ran. ``objective(trial)`` returns the trial's score or raises ``optuna.TrialPruned``;
    a ``FloatingPointError`` (``NonFiniteTrainingError``: the training diverged) fails the
    trial with its message in the user attribute ``fail_reason`` and the study goes on."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.get_storage(storage)
    study = open_study(plan, storage)
    study_id = storage.get_study_id_from_name(plan.name)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    ran = 0
    while True:
        with claim_lock(plan.url):
            trial_id = _claim(study, storage, study_id, plan.trials)
        if trial_id is None:
            break
        number = storage.get_trial_number_from_id(trial_id)
        trial_study = optuna.Study(plan.name, storage,
                                   sampler=make_sampler(plan.sampler, plan.seed, number),
                                   pruner=make_pruner(plan.pruner, plan.evaluations))
        trial = optuna.Trial(trial_study, trial_id)
        trial.set_user_attr("worker", worker)
        ran += 1
        value, state = None, TrialState.COMPLETE
        try:
            value = float(objective(trial))
            if not math.isfinite(value):
                trial.set_user_attr("fail_reason", f"the score is {value}")
                value, state = None, TrialState.FAIL
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except FloatingPointError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            state = TrialState.FAIL
        except BaseException as exc:  # Ctrl-C, SIGTERM, a bug: record it, then stop
            if isinstance(exc, KeyboardInterrupt):
                trial.set_user_attr("interrupted", True)
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value, state=state)
        attrs = storage.get_trial(trial_id).user_attrs
        reason = attrs.get("fail_reason", attrs.get("pruned_reason", ""))
        result = f"{value:.2f}" if value is not None else state.name.lower()
        say(f"trial {number}: {result}{f' ({reason})' if reason else ''}; study: "
            f"{study_summary(study)}")
    return ran

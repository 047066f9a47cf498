"""``velora-ens tune``: a small study and its results, pruning, failed trials, restarts,
several processes on one SQLite and one PostgreSQL study, and one-line errors.

Tiny trials (CartPole, a few hundred steps); the pruning and failure tests script the
evaluations instead of training.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from glob import glob
from pathlib import Path
from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna", reason="velora-ens tune needs the tune extra")

from agents.common.hyperparams import tuned_hyperparams  # noqa: E402
from agents.common.optim import NonFiniteTrainingError  # noqa: E402
from velora_ens.cli import main  # noqa: E402
from velora_ens.tuning import objective  # noqa: E402
from velora_ens.tuning.spaces import default_space, sample_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--env", "CartPole-v1", "--timesteps", "256", "--seeds", "2", "--evaluations", "2",
        "--eval-episodes", "1", "--no-plots"]
State = optuna.trial.TrialState


def run(argv, capsys):
    """``velora-ens`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def load(folder: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/{name}/study.db")


class Closeable:
    def close(self):
        pass


@pytest.fixture
def scripted(monkeypatch):
    """No training: each trial's evaluations return ``scores(trial_number, index)``."""
    current = {}

    def build_run(setup, hyper, seed):
        return objective.SeedRun(seed, SimpleNamespace(vector_env=Closeable()), Closeable())

    def sample(algo, trial, space, context):
        current["trial"] = trial.number
        return sample_settings(algo, trial, space, context)

    script = SimpleNamespace(scores=lambda number, index: 0.0)
    monkeypatch.setattr(objective, "build_run", build_run)
    monkeypatch.setattr(objective, "advance", lambda run, step, total: None)
    monkeypatch.setattr(objective, "sample_settings", sample)
    monkeypatch.setattr(objective, "evaluate_seed",
                        lambda run, index, episodes: script.scores(current["trial"], index))
    return script


# ------------------------------------------------------------------ a study and its results
def test_a_small_study_writes_the_config_csv_and_plots_that_train_accepts(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["tune", "--algo", "ppo", *TINY[:-1], "--trials", "3"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    folder = tmp_path / "runs" / "tune" / "ppo-CartPole-v1"
    for name in ("study.db", "best_config.json", "trials.csv", "history.png",
                 "importances.png"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    study = load(tmp_path / "runs" / "tune", "ppo-CartPole-v1")
    assert [t.state for t in study.trials] == [State.COMPLETE] * 3
    assert "evaluation 2/2 at 256 steps" in out and "3 done (3 complete" in out
    assert len((folder / "trials.csv").read_text().strip().splitlines()) == 4
    config = json.loads((folder / "best_config.json").read_text())
    assert config["env"] == "CartPole-v1" and config["n_envs"] == 1
    assert {k: config[k] for k in study.best_trial.user_attrs["settings"]} == \
        study.best_trial.user_attrs["settings"]
    # the sampled params give the recorded settings again (what --show and the CSV name)
    again = sample_settings("ppo", optuna.trial.FixedTrial(study.best_trial.params),
                            default_space("ppo"), {"box": False, "n_envs": 1})
    assert json.loads(json.dumps(again)) == study.best_trial.user_attrs["settings"]

    code, out, err = run(["train", "--algo", "ppo", "--config", str(folder / "best_config.json"),
                          "--timesteps", "64", "--eval-episodes", "1", "--no-video",
                          "--no-progress"], capsys)
    assert code == 0, err
    assert "LiquidPPO on CartPole-v1" in out

    code, out, err = run(["tune", "--show", "--study-name", "ppo-CartPole-v1"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert "3 complete" in lines[0] and lines[1].split()[:2] == ["trial", "score"]
    assert len(lines) == 5 and lines[2].split()[0] == str(study.best_trial.number)
    # one readable line per trial: floats to 4 significant digits, every setting named
    best = study.best_trial.user_attrs["settings"]
    shown = json.loads(lines[2].split(None, 3)[3])
    assert any(isinstance(v, float) and float(f"{v:.4g}") != v for v in best.values())
    assert shown.keys() == best.keys()
    for key, value in best.items():
        if isinstance(value, float):
            assert shown[key] == pytest.approx(value, rel=1e-3)
            assert float(f"{shown[key]:.4g}") == shown[key], (key, shown[key])
        else:
            assert shown[key] == value, key


def test_sampled_ppo_settings_always_go_together():
    space = default_space("ppo")
    for number in range(200):
        trial = optuna.trial.FixedTrial(
            {"n_steps": [64, 2048][number % 2], "batch_size": [32, 512][number // 2 % 2],
             "seq_len": [8, 64][number // 4 % 2], "learning_rate": 1e-3,
             "lr_schedule": "linear", "n_epochs": 5, "one_minus_gamma": 0.01,
             "one_minus_gae_lambda": 0.05, "clip_range": 0.2, "ent_coef": 1e-3,
             "max_grad_norm": 0.5, "target_kl": None, "actor_neurons": 16,
             "critic_neurons": 16, "actor_head": 0, "actor_dense_recurrence": False,
             "use_sde": False, "noise_hold_steps": 4})
        for n_envs in (1, 4):
            s = sample_settings("ppo", trial, space, {"box": True, "n_envs": n_envs})
            assert s["batch_size"] <= s["n_steps"] * n_envs
            assert s["n_steps"] % s["seq_len"] == 0 and s["batch_size"] % s["seq_len"] == 0
            assert s["learning_rate"] == "lin_0.001" and s["actor_head"] == []


def test_sampled_gsde_overrides_a_base_config_that_holds_the_noise():
    # PendulumNoVel's tuned settings hold the noise for 4 steps; a trial that samples gSDE
    # used to keep that hold and be pruned as invalid (use_sde with noise_hold_steps=4)
    from agents import LiquidPPO

    base = tuned_hyperparams("LiquidPPO", "PendulumNoVel-v1")
    assert base["noise_hold_steps"] == 4
    space = default_space("ppo")
    params = {"n_steps": 64, "batch_size": 32, "seq_len": 8, "learning_rate": 1e-3,
              "lr_schedule": "linear", "n_epochs": 5, "one_minus_gamma": 0.01,
              "one_minus_gae_lambda": 0.05, "clip_range": 0.2, "ent_coef": 1e-3,
              "max_grad_norm": 0.5, "target_kl": None, "actor_neurons": 16,
              "critic_neurons": 16, "actor_head": 0, "actor_dense_recurrence": False,
              "noise_hold_steps": 8}
    for sde, hold in ((True, 1), (False, 8)):
        trial = optuna.trial.FixedTrial({**params, "use_sde": sde})
        s = sample_settings("ppo", trial, space, {"box": True, "n_envs": 4})
        assert (s["use_sde"], s["noise_hold_steps"]) == (sde, hold)
        LiquidPPO("PendulumNoVel-v1", **{**base, **s, "n_envs": 1})  # no ValueError


# ------------------------------------------------------------------ pruning and failures
def test_the_pruner_stops_a_trial_the_evaluations_make_hopeless(tmp_path, capsys, scripted):
    # five good trials, then one far below them: the median pruner (5 startup trials,
    # a third of the 3 evaluations as warm-up) stops it after its second evaluation
    scripted.scores = lambda number, index: -1000.0 if number == 5 else 100.0 + number
    code, out, err = run(["tune", "--algo", "ppo", *TINY, "--evaluations", "3", "--trials", "6",
                          "--log-dir", str(tmp_path)], capsys)
    assert code == 0, err
    trials = load(tmp_path, "ppo-CartPole-v1").trials
    assert [t.state for t in trials] == [State.COMPLETE] * 5 + [State.PRUNED]
    assert sorted(trials[5].intermediate_values) == [0, 1]
    assert "trial 5: pruned" in out


def test_a_diverging_trial_is_recorded_as_failed_and_the_study_goes_on(tmp_path, capsys,
                                                                       scripted):
    def scores(number, index):
        if number == 1:
            raise NonFiniteTrainingError("training produced a non-finite critic_loss=nan")
        return 1.0

    scripted.scores = scores
    code, out, err = run(["tune", "--algo", "neuroflow", *TINY, "--trials", "3",
                          "--log-dir", str(tmp_path)], capsys)
    assert code == 0, err
    trials = load(tmp_path, "neuroflow-CartPole-v1").trials
    assert [t.state for t in trials] == [State.COMPLETE, State.FAIL, State.COMPLETE]
    assert "non-finite critic_loss=nan" in trials[1].user_attrs["fail_reason"]
    assert "trial 1: fail (training produced a non-finite" in out


def test_settings_the_agent_refuses_are_pruned_at_once_with_the_reason(tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"gae_lambda": {"value": 2.0}}))
    code, out, err = run(["tune", "--algo", "ppo", *TINY, "--trials", "2", "--space",
                          str(space), "--log-dir", str(tmp_path)], capsys)
    assert code == 0, err
    trials = load(tmp_path, "ppo-CartPole-v1").trials
    assert [t.state for t in trials] == [State.PRUNED] * 2
    assert "gae_lambda" in trials[0].user_attrs["pruned_reason"]
    assert "best_config.json skipped (no trial has completed)" in out


# ------------------------------------------------------------------ restarts
def test_restarting_the_command_continues_the_study(tmp_path, capsys, scripted):
    argv = ["tune", "--algo", "ppo", *TINY, "--log-dir", str(tmp_path)]
    assert run([*argv, "--trials", "2"], capsys)[0] == 0
    first = load(tmp_path, "ppo-CartPole-v1").trials
    assert run([*argv, "--trials", "3"], capsys)[0] == 0
    trials = load(tmp_path, "ppo-CartPole-v1").trials
    assert len(trials) == 3 and [t.params for t in trials[:2]] == [t.params for t in first]

    # Ctrl-C in trial 3: recorded as interrupted, not counted; the same command finishes
    def scores(number, index):
        if number == 3:
            raise KeyboardInterrupt
        return 1.0

    scripted.scores = scores
    code, out, _ = run([*argv, "--trials", "5"], capsys)
    assert code == 130 and "run the same command to continue" in out
    trials = load(tmp_path, "ppo-CartPole-v1").trials
    assert trials[3].state == State.FAIL and trials[3].user_attrs["interrupted"]
    scripted.scores = lambda number, index: 1.0
    assert run([*argv, "--trials", "5"], capsys)[0] == 0
    states = [t.state for t in load(tmp_path, "ppo-CartPole-v1").trials]
    assert states == [State.COMPLETE] * 3 + [State.FAIL] + [State.COMPLETE] * 2


# ------------------------------------------------------------------ several processes
def _command(storage: str, log_dir: Path, trials: int, n_jobs: int) -> list[str]:
    return [sys.executable, "-m", "velora_ens", "tune", "--algo", "ppo", "--env",
            "CartPole-v1", "--timesteps", "64", "--seeds", "1", "--evaluations", "1",
            "--eval-episodes", "1", "--trials", str(trials), "--n-jobs", str(n_jobs),
            "--storage", storage, "--study-name", "shared", "--log-dir", str(log_dir),
            "--no-plots"]


def _run_workers(commands: list[list[str]], cwd: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in commands]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, output in zip(procs, outputs, strict=True):
        assert p.returncode == 0, output
    return outputs


def _check_split(storage: str, outputs: list[str], trials: int) -> None:
    """Exactly ``trials`` trials finished, numbered 0..trials-1, each run by one worker."""
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert sorted(t.number for t in finished) == list(range(trials))
    assert all(t.state == State.WAITING and t.number >= trials
               for t in study.trials if not t.state.is_finished())
    ran = [line.split("trial ")[1].split(":")[0] for output in outputs
           for line in output.splitlines() if "; study: " in line]
    assert sorted(map(int, ran)) == list(range(trials)), outputs  # none run twice


def test_processes_share_one_sqlite_study_without_overlap(tmp_path):
    storage = f"sqlite:///{tmp_path}/shared.db"
    # three workers: two processes of one command (--n-jobs 2) and another command
    outputs = _run_workers([_command(storage, tmp_path, 8, 2),
                            _command(storage, tmp_path, 8, 1)], tmp_path)
    _check_split(storage, outputs, 8)


def test_sigterm_to_the_command_alone_stops_its_workers_too(tmp_path):
    """``kill PID`` of the command, not of its process group (as a scheduler or a service
    manager may send): every worker's running trial is recorded as interrupted and the
    command exits 130 at once, not when the workers have finished the study."""
    command = _command(f"sqlite:///{tmp_path}/stop.db", tmp_path, 4, 2)
    command[command.index("--timesteps") + 1] = "1000000"  # trials far longer than the test
    proc = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        for _ in range(240):  # until both processes have claimed a trial
            try:
                running = [t for t in optuna.load_study(study_name="shared",
                                                        storage=f"sqlite:///{tmp_path}/stop.db")
                           .trials if t.state == State.RUNNING]
            except (KeyError, ValueError, RuntimeError, optuna.exceptions.StorageInternalError):
                running = []
            if len(running) == 2:
                break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.5)
        assert len(running) == 2
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, output
    assert "run the same command to continue" in output and "stopped with an error" not in output
    trials = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path}/stop.db").trials
    assert len(trials) == 2, output
    assert all(t.state == State.FAIL and t.user_attrs.get("interrupted") for t in trials), output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 in a temporary folder (as the postgres
    user when the tests run as root: the server refuses root); its URL."""
    bins = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = bins[-1] if bins else shutil.which("initdb")
    if initdb is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    bin_dir = Path(initdb).parent
    folder = Path(tempfile.mkdtemp(prefix="tune-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def call(*argv: str) -> None:
        subprocess.run([*as_user, *argv], check=True, capture_output=True, timeout=120)

    call(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "--username=tune")
    call(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
         f"-k {folder} -p {port} -h 127.0.0.1", "start")
    try:
        call(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tune",
             "study")
        yield f"postgresql+psycopg://tune@127.0.0.1:{port}/study"
    finally:
        call(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_processes_share_one_postgresql_study_without_overlap(tmp_path, postgres):
    outputs = _run_workers([_command(postgres, tmp_path, 6, 1),
                            _command(postgres, tmp_path, 6, 1)], tmp_path)
    _check_split(postgres, outputs, 6)


# ------------------------------------------------------------------ one-line errors
@pytest.mark.parametrize(("argv", "fragment"), [
    (["--algo", "sac", "--env", "CartPole-v1"], "invalid choice: 'sac'"),
    (["--env", "CartPole-v1"], "needs --algo and --env"),
    (["--algo", "ppo", "--env", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--sampler", "grid"], "invalid choice: 'grid'"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--pruner", "asha"], "invalid choice: 'asha'"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--trials", "0"], "--trials must be >= 1"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--storage", "nonsense"], "not a database URL"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--storage", "bogus://x"],
     "unknown database kind 'bogus'"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--storage",
      "postgresql+psycopg://tune:secret@127.0.0.1:{port}/study"], "cannot reach the database"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--storage", "journal:/no/such/dir/j.log"],
     "does not exist"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--space", "missing.json"], "no such file"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--space", "bad.json"], "is not valid JSON"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--space", "unknown.json"],
     "unknown ppo setting(s) ['warp']"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--space", "spec.json"],
     "learning_rate needs numbers low < high"),
    (["--algo", "ppo", "--env", "CartPole-v1", "--space", "bad.yaml"], "is not valid YAML"),
    (["--show", "--study-name", "nothing"], "--show: no study at"),
])
def test_bad_input_gets_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    (tmp_path / "unknown.json").write_text(json.dumps({"warp": {"choices": [1, 2]}}))
    (tmp_path / "spec.json").write_text(json.dumps({"learning_rate": {"low": 1, "high": 0}}))
    argv = [a.replace("{port}", str(_free_port())) for a in argv]
    code, out, err = run(["tune", *argv, "--log-dir", str(tmp_path / "runs")], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err
    assert "secret" not in err


def test_a_driver_that_is_missing_is_named(tmp_path, capsys):
    pytest.importorskip("sqlalchemy")
    try:
        import psycopg2  # noqa: F401
        pytest.skip("psycopg2 is installed")
    except ImportError:
        pass
    code, _, err = run(["tune", "--algo", "ppo", "--env", "CartPole-v1", "--storage",
                        "postgresql+psycopg2://u@127.0.0.1:1/db", "--log-dir", str(tmp_path)],
                       capsys)
    assert code == 2 and "pip install psycopg2-binary" in err and len(err.splitlines()) == 1


def test_joining_a_study_made_for_another_budget_is_refused(tmp_path, capsys, scripted):
    argv = ["tune", "--algo", "ppo", *TINY, "--trials", "1", "--log-dir", str(tmp_path)]
    assert run(argv, capsys)[0] == 0
    code, _, err = run([*argv, "--timesteps", "512"], capsys)
    assert code == 2 and "was made with timesteps=256" in err and len(err.splitlines()) == 1


def test_show_names_the_studies_a_storage_holds(tmp_path, capsys, scripted):
    argv = ["tune", "--algo", "ppo", *TINY, "--trials", "1", "--log-dir", str(tmp_path)]
    assert run(argv, capsys)[0] == 0
    storage = f"sqlite:///{tmp_path}/ppo-CartPole-v1/study.db"
    code, _, err = run(["tune", "--show", "--storage", storage, "--study-name", "other"],
                       capsys)
    assert code == 2 and "holds ['ppo-CartPole-v1']" in err


def test_without_optuna_the_command_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    code, _, err = run(["tune", "--algo", "ppo", "--env", "CartPole-v1"], capsys)
    assert code == 2 and 'pip install -e ".[tune]"' in err and len(err.splitlines()) == 1

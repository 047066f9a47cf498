"""benchmarks/report_tuning.py: a study's page from a small hand-made study, and which
confirmations it counts as current."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

optuna = pytest.importorskip("optuna", reason="the study pages need the tune extra")

from agents.common.hyperparams import tuned_hyperparams  # noqa: E402


@pytest.fixture
def report(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    import report_tuning

    return report_tuning


def _study(tmp_path, report):
    """A study of four trials on disk (scores -300, -200 (pruned), -250, failed) and its
    Study entry."""
    folder = tmp_path / "study"
    folder.mkdir()
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{folder}/study.db",
                                direction="maximize")
    made = {"env": "PendulumNoVel-v1", "timesteps": 1000, "seeds": [0, 1, 2],
            "eval_episodes": 10, "space": {"gamma": "[0.9, 0.9999]"}}
    for key, value in made.items():
        study.set_user_attr(key, value)
    dist = {"gamma": optuna.distributions.FloatDistribution(0.9, 0.9999)}
    for number, (state, value, gamma) in enumerate([
            ("COMPLETE", -300.0, 0.95), ("PRUNED", None, 0.99), ("COMPLETE", -250.0, 0.91234),
            ("FAIL", None, 0.93)]):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], value=value, params={"gamma": gamma},
            distributions=dist, user_attrs={"settings": {"gamma": gamma},
                                            **({"interrupted": True} if state == "FAIL" else {})},
            intermediate_values={0: -400.0, 1: value or -500.0}))
        trial = study.trials[-1]
        assert trial.number == number
    (folder / "best_config.json").write_text(json.dumps(
        {"env": "PendulumNoVel-v1", "n_envs": 4, "gamma": 0.91234}))
    entry = report.Study(tune="velora-ens tune ...", folder=str(folder), task="pendulum-novel",
                         seeds=(10, 11), target=-175.0, page=str(tmp_path / "page.md"))
    return entry, folder


def _confirmation(folder, arm, settings, finals, seeds=(10, 11)):
    out = folder / f"confirm-{arm}"
    out.mkdir(exist_ok=True)
    mean = sum(finals) / len(finals)
    (out / "ppo-pendulum-novel.json").write_text(json.dumps({
        "env_id": "PendulumNoVel-v1", "seeds": list(seeds), "command": f"bench {arm}",
        "machine": "M", "date": "D", "settings": {"liquid_ppo": settings},
        "summary": {"liquid_ppo": {"finals": finals, "mean": mean, "std": 0.0}}}))


def test_page_ranks_the_completed_trials_and_counts_the_others(report, tmp_path):
    entry, folder = _study(tmp_path, report)
    lines = report.page_lines(entry, "s", "python benchmarks/report_tuning.py s")
    text = "\n".join(lines)
    assert "2 complete, 1 pruned, 1 failed (1 of them interrupted" in text
    rows = [line for line in lines if line.startswith("| ") and line.split("|")[1].strip()
            .isdigit()]
    # best first: trial 2 (-250) before trial 0 (-300); the pruned and failed are not rows
    assert [r.split("|")[1].strip() for r in rows] == ["2", "0"]
    assert "| -250.0 |" in rows[0] and "gamma=0.912" in rows[0]
    assert "not run" in text and "Target" not in text  # no confirmation on file yet


def test_confirmations_count_only_for_the_settings_and_seeds_they_confirm(report, tmp_path):
    entry, folder = _study(tmp_path, report)
    tuned = tuned_hyperparams("LiquidPPO", "PendulumNoVel-v1")
    best = {**tuned, "n_envs": 4, "gamma": 0.91234}
    _confirmation(folder, "tuned", tuned, [-220.0, -230.0])
    _confirmation(folder, "best", best, [-170.0, -176.0])
    assert report.is_current(entry, "tuned", folder) and report.is_current(entry, "best", folder)
    text = "\n".join(report.page_lines(entry, "s", "cmd"))
    assert "| -225.0 ± 0.0 | -220.0, -230.0 |" in text and "| -173.0 ± 0.0 |" in text
    assert "**met** (-173.0)" in text

    # the study's best moved on: the best confirmation is stale, and so not shown
    (folder / "best_config.json").write_text(json.dumps({"env": "PendulumNoVel-v1",
                                                         "n_envs": 4, "gamma": 0.95}))
    assert not report.is_current(entry, "best", folder)
    text = "\n".join(report.page_lines(entry, "s", "cmd"))
    assert "-173.0" not in text and "Target" not in text
    # other seeds than the entry's: stale too
    assert not report.is_current(replace(entry, seeds=(10, 11, 12)), "tuned", folder)


def test_the_confirmation_command_passes_the_best_config_without_its_env(report, tmp_path):
    entry, folder = _study(tmp_path, report)
    command = report.confirm_command(entry, "best", folder)
    settings = json.loads(command[command.index("--liquid-settings") + 1])
    assert settings == {"n_envs": 4, "gamma": 0.91234}
    assert command[command.index("--seeds") + 1:command.index("--seeds") + 3] == ["10", "11"]
    assert "--liquid-settings" not in report.confirm_command(entry, "tuned", folder)

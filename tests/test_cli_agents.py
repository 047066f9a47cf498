"""``velora-ens train | evaluate | record`` end to end, and their one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents import NeuroFlow
from agents.common.hyperparams import TUNED_PPO_HYPERPARAMS
from velora_ens.cli import main

ROOT = Path(__file__).resolve().parents[1]


def velora_ens(argv, cwd):
    """Run ``python -m velora_ens`` on this checkout from another folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "velora_ens", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_train_evaluate_record_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"learning_starts": 32, "batch_size": 32, "seq_len": 4,
                                  "burn_in": 2, "actor_neurons": 8, "critic_hidden": [32, 32]}))
    argv = ["train", "--env", "CartPole-v1", "--timesteps", "120", "--eval-freq", "60",
            "--eval-episodes", "2", "--config", str(config), "--save-freq", "100",
            "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "CartPole-v1_seed0_1"
    for name in ("final_model.safetensors", "best_model.safetensors", "evaluations.npz",
                 "config.json"):
        assert (run / name).is_file(), name
    # one checkpoint after 100 vector-env steps (autoreset steps add no transition)
    checkpoints = list((run / "checkpoints").glob("neuroflow_*_steps.safetensors"))
    assert len(checkpoints) == 1 and len(NeuroFlow.load(checkpoints[0]).buffer) > 90
    assert list((run / "tensorboard").glob("NeuroFlow_1/events.out.tfevents.*"))
    videos = list((run / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
    # the last line is the mean evaluation return; it is reproducible from the saved model
    last = out.strip().splitlines()[-1]
    assert last.startswith("mean evaluation return over 2 episodes: ")
    agent = NeuroFlow.load(run / "final_model.safetensors")
    assert agent.num_timesteps == 120 and agent.config["actor_neurons"] == 8
    assert main(["train", "--env", "CartPole-v1", "--timesteps", "40", "--config", str(config),
                 "--no-progress", "--no-video", "--eval-episodes", "1"]) == 0
    assert (tmp_path / "runs" / "CartPole-v1_seed0_2").is_dir()  # a new folder per run
    capsys.readouterr()

    assert main(["evaluate", str(run / "final_model.safetensors"), "--episodes", "3",
                 "--seed", "7"]) == 0
    line = capsys.readouterr().out.strip()
    mean = float(line.split("mean return ")[1].split(" ")[0])
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    import envs

    env = Monitor(envs.make_env("CartPole-v1"))
    env.reset(seed=7)
    rewards, _ = evaluate_policy(agent, env, n_eval_episodes=3, return_episode_rewards=True)
    assert mean == pytest.approx(np.mean(rewards), abs=0.051)

    assert main(["record", str(run / "final_model.safetensors"), "--out",
                 str(tmp_path / "v")]) == 0
    written = capsys.readouterr().out.strip().splitlines()
    assert len(written) == 1 and written[0].endswith(".mp4")


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--env", "NoSuchEnv-v0"], "unknown environment id 'NoSuchEnv-v0'"),
    (["train", "--timesteps", "0"], "--timesteps must be >= 1, got 0"),
    (["train", "--n-envs", "two"], "--n-envs must be an integer, got 'two'"),
    (["train", "--config", "missing.json"], "--config missing.json: no such file"),
    (["evaluate", "missing.safetensors"], "no saved agent at missing.safetensors"),
    (["record", "README.md"], "is not a saved velora_ens agent"),
    (["evaluate", "."], "is a directory, not a saved agent"),
    (["train", "--env", "LunarLanderContinuous-v3"], "needs an optional dependency"),
    (["train", "--log-dir", "README.md"], "--log-dir README.md is a file"),
    (["train", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["evaluate", "x", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["train", "--env", "no_such_module:Task-v0"], "cannot import 'no_such_module'"),
    (["record", "agent", "--out", "README.md/videos"], "--out README.md/videos: cannot create"),
])
def test_agent_command_mistakes_exit_2_with_one_line(tmp_path, argv, fragment):
    (tmp_path / "README.md").write_text("not an agent")
    proc = velora_ens(argv, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_config_may_set_the_run_options_and_the_command_line_wins(tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"env": "CartPole-v1", "seed": 3, "n_envs": 2,
                                  "learning_starts": 16, "batch_size": 16, "seq_len": 4,
                                  "burn_in": 0, "actor_neurons": 4, "critic_hidden": [8]}))
    common = ["--timesteps", "20", "--config", str(config), "--no-progress", "--no-video",
              "--eval-episodes", "1"]
    assert main(["train", *common]) == 0
    saved = json.loads((tmp_path / "runs" / "CartPole-v1_seed3_1" / "config.json").read_text())
    assert (saved["env"], saved["seed"], saved["n_envs"]) == ("CartPole-v1", 3, 2)
    assert "seed" not in saved["neuroflow"]
    assert main(["train", *common, "--seed", "5", "--n-envs", "1"]) == 0
    saved = json.loads((tmp_path / "runs" / "CartPole-v1_seed5_1" / "config.json").read_text())
    assert (saved["seed"], saved["n_envs"]) == (5, 1)
    capsys.readouterr()
    config.write_text(json.dumps({"seed": -2}))
    assert main(["train", "--config", str(config)]) == 2
    assert "seed must be an integer >= 0, got -2" in capsys.readouterr().err


def test_saved_agents_load_without_their_suffix(tmp_path, capsys):
    agent = NeuroFlow("CartPole-v1", seed=0, learning_starts=16, batch_size=16, seq_len=4,
                      burn_in=0, actor_neurons=4, critic_hidden=(8,))
    agent.learn(20)
    agent.save(tmp_path / "agent")
    assert main(["evaluate", str(tmp_path / "agent"), "--episodes", "1"]) == 0
    assert "mean return" in capsys.readouterr().out
    assert main(["record", str(tmp_path / "agent"), "--out", str(tmp_path / "v")]) == 0
    assert capsys.readouterr().out.strip().endswith(".mp4")


def test_unknown_config_option_is_named(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lr": 1e-3}))
    proc = velora_ens(["train", "--config", str(config)], tmp_path)
    assert proc.returncode == 2 and "unknown NeuroFlow option(s) ['lr']" in proc.stderr


def test_train_takes_an_env_id_with_its_module(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_cli_tasks.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('ShortCartPole-v0', entry_point='gymnasium.envs.classic_control:"
        "CartPoleEnv', max_episode_steps=20)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"learning_starts": 16, "batch_size": 16, "seq_len": 4,
                                  "burn_in": 0, "actor_neurons": 4, "critic_hidden": [8]}))
    assert main(["train", "--env", "my_cli_tasks:ShortCartPole-v0", "--timesteps", "30",
                 "--config", str(config), "--no-progress", "--no-video",
                 "--eval-episodes", "1"]) == 0
    run = tmp_path / "runs" / "my_cli_tasks_ShortCartPole-v0_seed0_1"
    assert NeuroFlow.load(run / "final_model").env_id == "my_cli_tasks:ShortCartPole-v0"
    assert main(["evaluate", str(run / "final_model"), "--episodes", "1"]) == 0
    assert "my_cli_tasks:ShortCartPole-v0" in capsys.readouterr().out


def test_train_ppo_uses_its_tuned_settings_and_evaluate_loads_it(tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--no-progress", "--no-video", "--eval-episodes", "1", "--eval-freq", "256"]
    assert main(["train", "--algo", "ppo", "--env", "CartPoleNoVel-v1", "--timesteps", "256",
                 *common]) == 0
    run = tmp_path / "runs" / "CartPoleNoVel-v1_seed0_1"
    saved = json.loads((run / "config.json").read_text())
    # the tuned settings set the number of copies too
    assert (saved["algo"], saved["n_envs"], saved["ppo"]["n_steps"]) == ("ppo", 8, 32)
    tuned = TUNED_PPO_HYPERPARAMS["CartPoleNoVel-v1"]
    for key in ("n_epochs", "target_kl", "ent_coef", "actor_neurons", "critic_neurons"):
        assert saved["ppo"][key] == tuned[key], key
    assert "LiquidPPO on CartPoleNoVel-v1" in capsys.readouterr().out
    assert main(["evaluate", str(run / "final_model"), "--episodes", "1"]) == 0
    assert "mean return" in capsys.readouterr().out
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"burn_in": 4}))  # a NeuroFlow option
    assert main(["train", "--algo", "ppo", "--config", str(config), *common]) == 2
    assert "unknown LiquidPPO option(s) ['burn_in']" in capsys.readouterr().err

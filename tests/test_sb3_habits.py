"""Habits Stable-Baselines3 and RL Zoo users bring: their logger, RL Zoo's custom_objects,
sb3-contrib's recurrent policy names, and Gymnasium's own hint for an outdated id."""

from __future__ import annotations

import csv
import warnings

import pytest
from stable_baselines3.common.logger import configure

from agents import LiquidPPO, NeuroFlow
from velora_ens.cli import main

PPO_SMALL = dict(n_steps=16, batch_size=16, n_epochs=1, actor_neurons=8, critic_neurons=8,
                 seed=0)
NF_SMALL = dict(learning_starts=8, batch_size=8, seq_len=4, burn_in=0, actor_neurons=8,
                critic_hidden=(16,), seed=0)


# ------------------------------------------------------------------ the logger
@pytest.mark.parametrize("reset", [False, True])
def test_a_users_logger_survives_every_learn_call(tmp_path, reset):
    agent = NeuroFlow("CartPole-v1", **NF_SMALL)
    logger = configure(str(tmp_path), ["csv"])
    agent.set_logger(logger)
    assert agent.get_logger() is logger and agent.logger is logger
    for _ in range(2):
        agent.learn(200, log_interval=1, reset_num_timesteps=reset)
        assert agent.logger is logger  # not replaced by learn, whatever reset_num_timesteps
    logger.close()
    with open(tmp_path / "progress.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 2 and {"train/critic_loss", "rollout/ep_rew_mean"} <= set(rows[0])


def test_a_logger_assigned_by_hand_is_kept_too(tmp_path):
    agent = LiquidPPO("CartPole-v1", **PPO_SMALL)
    logger = configure(str(tmp_path), ["csv"])
    agent.logger = logger  # SB3's attribute
    agent.learn(32, reset_num_timesteps=True)
    assert agent.logger is logger


def test_without_a_users_logger_learn_makes_one_per_run(tmp_path):
    agent = NeuroFlow("CartPole-v1", tensorboard_log=str(tmp_path), **NF_SMALL)
    agent.learn(20)
    first = agent.logger
    agent.learn(20)
    assert agent.logger is first  # the same run continues
    agent.learn(20, reset_num_timesteps=True)
    assert agent.logger is not first and len(list(tmp_path.iterdir())) == 2


def test_set_logger_refuses_what_is_not_a_logger():
    with pytest.raises(ValueError, match="set_logger expects a Stable-Baselines3 Logger"):
        NeuroFlow("CartPole-v1", **NF_SMALL).set_logger("runs/")


# ------------------------------------------------------------------ custom_objects
ZOO = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}


def test_rl_zoos_custom_objects_override_liquid_ppos_settings(tmp_path):
    LiquidPPO("CartPole-v1", **PPO_SMALL).save(tmp_path / "ppo")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key is a LiquidPPO setting: no warning
        agent = LiquidPPO.load(tmp_path / "ppo", custom_objects=ZOO)
    assert agent.lr_schedule(1.0) == 0.0 and agent.clip_range(1.0) == 0.0
    assert agent.optimizer.param_groups[0]["lr"] == 0.0


def test_sb3_only_custom_objects_are_ignored_with_a_warning_and_others_refused(tmp_path):
    NeuroFlow("Pendulum-v1", **NF_SMALL).save(tmp_path / "nf")
    with pytest.warns(UserWarning, match=r"\['clip_range', 'policy_kwargs'\].*ignored"):
        agent = NeuroFlow.load(tmp_path / "nf", custom_objects={**ZOO, "policy_kwargs": {}})
    assert agent.lr_schedule(1.0) == 0.0
    with pytest.raises(ValueError, match=r"custom_objects \['typo_rate'\] are neither NeuroFlow "
                                         r"arguments nor Stable-Baselines3 settings"):
        NeuroFlow.load(tmp_path / "nf", custom_objects={"typo_rate": 1e-3})


# ------------------------------------------------------------------ policy names
@pytest.mark.parametrize("name", ["MlpLstmPolicy", "MultiInputLstmPolicy", "MlpPolicy"])
def test_liquid_ppo_takes_sb3_contribs_recurrent_policy_names(name):
    assert LiquidPPO(name, "CartPole-v1", **PPO_SMALL).env_id == "CartPole-v1"


def test_neuroflow_has_no_lstm_policy_name():
    with pytest.raises(ValueError, match="'MlpLstmPolicy' is not available"):
        NeuroFlow("MlpLstmPolicy", "CartPole-v1", **NF_SMALL)


# ------------------------------------------------------------------ Gymnasium's hint
def test_an_outdated_id_keeps_gymnasiums_hint(capsys):
    assert main(["train", "--env", "Taxi-v3", "--timesteps", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Please use `Taxi-v4` instead" in err

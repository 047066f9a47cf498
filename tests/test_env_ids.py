"""Every id by every entry point: an env whose constructor takes no ``render_mode``
(``id_envs:NoRenderEnv-v0``, registered by importing ``tests/id_envs.py``) through
``envs.make_env``, ``envs.make_vec_env``, both agents and ``velora-ens``; env keyword
arguments and wrappers by import path; the one-line errors."""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
import pytest
from id_envs import Marked, NoRenderEnv

import envs
from agents import LiquidPPO, NeuroFlow
from envs.wrapping import resolve_wrappers
from velora_ens.cli import main
from velora_ens.cli_options import env_kwarg

ID = "id_envs:NoRenderEnv-v0"
RUN = "id_envs_NoRenderEnv-v0_seed0_1"  # the run folder of velora-ens train --env ID


@pytest.fixture(autouse=True)
def _forget_builds():
    NoRenderEnv.built.clear()
    Marked.made.clear()


# ------------------------------------------------------------------ envs
def test_make_env_builds_an_env_without_render_mode_by_module_id():
    env = envs.make_env(ID)
    assert isinstance(env.unwrapped, NoRenderEnv) and env.render_mode is None
    env.reset(seed=0)
    assert env.step(0)[0].shape == (2,)


def test_make_env_passes_env_kwargs_and_applies_wrappers():
    env = envs.make_env(ID, env_kwargs={"length": 3}, wrapper="id_envs.Marked",
                        wrapper_kwargs={"mark": "x"})
    assert isinstance(env, Marked) and env.mark == "x" and env.unwrapped.length == 3
    env = envs.make_env(ID, length=4)  # gym.make's spelling still works
    assert env.unwrapped.length == 4


@pytest.mark.parametrize("spec", [
    Marked, lambda env: Marked(env, "x"), "id_envs.Marked", "id_envs:Marked",
    ["id_envs.Marked"], {"id_envs.Marked": {"mark": "x"}}, [{"id_envs.Marked": None}],
])
def test_wrappers_are_classes_callables_paths_and_rl_zoo_forms(spec):
    assert isinstance(envs.make_env(ID, wrapper=spec), Marked)


def test_wrappers_apply_in_order_the_first_innermost():
    env = envs.make_env("CartPole-v1", wrapper=[{"id_envs.Marked": {"mark": "in"}},
                                                {"id_envs.Marked": {"mark": "out"}}])
    assert env.mark == "out" and env.env.mark == "in"


def test_make_vec_env_passes_env_kwargs_and_wrappers_to_every_copy():
    venv = envs.make_vec_env(ID, 2, seed=0, env_kwargs={"length": 3},
                             wrapper_class="id_envs.Marked", wrapper_kwargs={"mark": "v"})
    assert venv.get_attr("mark") == ("v", "v") and venv.get_attr("length") == (3, 3)
    venv.reset(seed=0)
    ends = [venv.step(venv.action_space.sample())[2] for _ in range(3)]
    assert ends[-1].all() and not ends[0].any()
    venv.close()
    callable_env = envs.make_vec_env(NoRenderEnv, 1, env_kwargs={"length": 2},
                                     wrapper_class=Marked)
    assert callable_env.get_attr("length") == (2,) and callable_env.get_attr("mark") == ("marked",)


def test_asking_to_render_an_env_that_cannot_is_one_clear_error():
    with pytest.raises(ValueError, match=r"'id_envs:NoRenderEnv-v0' cannot render in mode "
                                         r"'rgb_array' \(its constructor takes no render_mode\)"):
        envs.make_env(ID, render_mode="rgb_array")
    with pytest.raises(ValueError, match=r"'Pendulum-v1' cannot render in mode 'sketch' \(its "
                                         r"render modes are \['human', 'rgb_array'\]\)"):
        envs.make_env("Pendulum-v1", render_mode="sketch")
    env = envs.make_env("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().ndim == 3


@pytest.mark.parametrize("kwargs, fragment", [
    ({"lenght": 3}, "could not be built with keyword arguments {'lenght': 3}: TypeError: "
                    "NoRenderEnv.__init__() got an unexpected keyword argument 'lenght'"),
    ({"length": 0}, "ValueError: length must be an integer >= 1, got 0"),
])
def test_constructor_errors_are_one_value_error_line_naming_the_id(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        envs.make_env(ID, env_kwargs=kwargs)
    message = str(info.value)
    assert message.startswith(f"environment {ID!r}") and fragment in message
    assert "\n" not in message and "was raised from" not in message
    with pytest.raises(ValueError, match="lenght"):
        envs.make_vec_env(ID, 2, env_kwargs={"lenght": 3})
    with pytest.raises(ValueError, match="could not be built .* 'lenght'"):  # not "cannot render"
        envs.make_env("CartPole-v1", env_kwargs={"lenght": 3}, render_mode="rgb_array")


@pytest.mark.parametrize("spec, fragment", [
    ("id_envs.Nope", "wrapper 'id_envs.Nope': module 'id_envs' has no 'Nope'"),
    ("no_such_module.Wrapper", "wrapper 'no_such_module.Wrapper': cannot import"),
    ("Wrapper", "'Wrapper' is not an import path"),
    ("id_envs.ENV_ID", "is not a class or function"),
    ({"id_envs.Marked": 3}, "its keyword arguments must be a dict"),
    ({"a.B": {}, "c.D": {}}, "maps one import path"),
    (3, "must be a class, a callable or an import path"),
])
def test_bad_wrappers_are_a_value_error_naming_them(spec, fragment):
    with pytest.raises(ValueError) as info:
        resolve_wrappers(spec)
    assert fragment in str(info.value)


def test_a_wrapper_that_refuses_the_env_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"^wrapper Marked cannot wrap .*unexpected keyword"):
        envs.make_env(ID, wrapper={"id_envs.Marked": {"colour": "red"}})


def test_popgym_ids_build_by_id_and_with_popgym_wrappers():
    pytest.importorskip("popgym")
    popgym_id = "popgym:popgym-RepeatPreviousEasy-v0"
    env = envs.make_env(popgym_id)
    assert env.observation_space == gym.spaces.Discrete(4)
    with pytest.raises(ValueError, match="cannot render in mode 'rgb_array'"):
        envs.make_env(popgym_id, render_mode="rgb_array")
    # POPGym's wrappers accept only its bare env: they go beneath gym.make's env checker
    from popgym.wrappers import Antialias, PreviousAction

    env = envs.make_env(popgym_id, wrapper=["popgym.wrappers.PreviousAction",
                                            "popgym.wrappers.Antialias"])
    assert isinstance(env.env, Antialias) and isinstance(env.env.env, PreviousAction)
    env.reset(seed=0)


# ------------------------------------------------------------------ agents
def test_liquid_ppo_learns_on_a_module_id():
    agent = LiquidPPO(ID, n_steps=8, batch_size=8, n_epochs=1, actor_neurons=8,
                      critic_neurons=8, seed=0, n_envs=2)
    assert agent.learn(32).num_timesteps == 32 and agent.env_id == ID


def test_neuroflow_learns_on_a_module_id():
    agent = NeuroFlow(ID, learning_starts=8, batch_size=8, seq_len=4, burn_in=1,
                      actor_neurons=8, critic_hidden=[16], seed=0)
    assert agent.learn(24).num_timesteps == 24 and agent.env_id == ID


def test_agents_take_a_vector_env_with_env_kwargs_and_wrappers():
    venv = envs.make_vec_env(ID, 2, seed=0, env_kwargs={"length": 3},
                             wrapper_class="id_envs.Marked")
    agent = LiquidPPO(venv, n_steps=4, batch_size=8, n_epochs=1, actor_neurons=8,
                      critic_neurons=8, seed=0)
    agent.learn(8)
    assert agent.n_envs == 2 and set(NoRenderEnv.built) == {3} and "marked" in Marked.made


# ------------------------------------------------------------------ command line
def test_env_kwargs_option_takes_rl_zoo_pairs_and_json():
    assert env_kwarg("max_episode_steps:100") == {"max_episode_steps": 100}
    assert env_kwarg('name:"bar"') == {"name": "bar"}  # the shell's name:'"bar"'
    assert env_kwarg("xs:[1, 2.5]") == {"xs": [1, 2.5]}
    assert env_kwarg('{"a": 1, "b": "c"}') == {"a": 1, "b": "c"}
    for bad in ("name:bar", "nocolon", "[1]", "{bad json"):
        with pytest.raises(argparse.ArgumentTypeError):
            env_kwarg(bad)


SMALL = {"learning_starts": 16, "batch_size": 16, "seq_len": 4, "burn_in": 1,
         "actor_neurons": 8, "critic_hidden": [16]}


def test_train_evaluate_record_a_module_id_with_env_kwargs_and_a_wrapper(tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**SMALL, "env_kwargs": {"length": 9},
                                  "env_wrapper": {"id_envs.Marked": {"mark": "cfg"}}}))
    assert main(["train", "--env", ID, "--timesteps", "40", "--eval-freq", "20",
                 "--eval-episodes", "1", "--config", str(config), "--save-freq", "20",
                 "--env-kwargs", "length:5", "--no-progress"]) == 0
    run = tmp_path / "runs" / RUN
    saved = json.loads((run / "config.json").read_text())
    assert saved["env_kwargs"] == {"length": 5}  # the command line updates the file's
    assert saved["env_wrapper"] == {"id_envs.Marked": {"mark": "cfg"}}
    assert "length" not in saved["neuroflow"] and "env_wrapper" not in saved["neuroflow"]
    assert set(NoRenderEnv.built) == {5} and set(Marked.made) == {"cfg"}
    assert "(none: id_envs:NoRenderEnv-v0 has no rgb_array rendering)" in capsys.readouterr().out

    # evaluate and --resume rebuild the run's env from its config.json
    NoRenderEnv.built.clear()
    Marked.made.clear()
    assert main(["evaluate", str(run / "final_model"), "--episodes", "1"]) == 0
    assert "(mean length 5," in capsys.readouterr().out
    assert set(NoRenderEnv.built) == {5} and set(Marked.made) == {"cfg"}
    checkpoint = next((run / "checkpoints").glob("*.safetensors"))
    assert main(["train", "--resume", str(checkpoint), "--no-progress"]) == 0
    assert set(NoRenderEnv.built) == {5} and set(Marked.made) == {"cfg"}
    assert main(["evaluate", str(run / "final_model"), "--episodes", "1", "--env-kwargs",
                 "length:2"]) == 0
    assert "(mean length 2," in capsys.readouterr().out

    # record: one line, exit 2, for an env that cannot render
    assert main(["record", str(run / "final_model"), "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no 'rgb_array' render mode" in err[0]


def test_ppo_trains_on_a_module_id_from_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"n_steps": 8, "batch_size": 8, "n_epochs": 1,
                                  "actor_neurons": 8, "critic_neurons": 8}))
    assert main(["train", "--algo", "ppo", "--env", ID, "--timesteps", "16", "--config",
                 str(config), "--eval-episodes", "1", "--no-progress",
                 "--env-wrapper", "id_envs.Marked"]) == 0
    assert "mean evaluation return over 1 episodes" in capsys.readouterr().out
    assert json.loads((tmp_path / "runs" / RUN / "config.json").read_text())[
        "env_wrapper"] == ["id_envs.Marked"]
    assert "marked" in Marked.made


@pytest.mark.parametrize("extra, config, fragment", [
    (["--env-kwargs", "lenght:5"], {}, "unexpected keyword argument 'lenght'"),
    (["--env-kwargs", "length:0"], {}, "length must be an integer >= 1, got 0"),
    (["--env-wrapper", "id_envs.Nope"], {}, "wrapper 'id_envs.Nope': module 'id_envs' has no"),
    ([], {"env_wrapper": "no_such_module.W"}, "wrapper 'no_such_module.W': cannot import"),
    ([], {"env_wrapper": 3}, "env_wrapper must be an import path"),
    ([], {"env_kwargs": [1]}, "env_kwargs must be an object"),
])
def test_env_mistakes_on_the_command_line_are_one_line_and_exit_2(tmp_path, capsys,
                                                                  monkeypatch, extra, config,
                                                                  fragment):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**SMALL, **config}))
    assert main(["train", "--env", ID, "--config", str(path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "runs").exists()


def test_a_bad_env_kwargs_literal_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--env", ID, "--env-kwargs", "name:bar"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --env-kwargs: 'name:bar': the value must be a Python " \
                             "literal" in err[0]


POPGYM_TASKS = ("RepeatPrevious", "RepeatFirst", "CountRecall", "Autoencode", "HigherLower",
                "PositionOnlyCartPole", "PositionOnlyPendulum", "NoisyPositionOnlyCartPole",
                "MineSweeper", "Battleship")


@pytest.mark.parametrize("task", POPGYM_TASKS)
def test_both_agents_take_every_popgym_task_of_the_benchmark_by_id(task):
    """Every space of the suite as it is (Tuple and MultiDiscrete observations,
    MultiDiscrete actions): a few steps of training and a deterministic action in the
    env's own space."""
    pytest.importorskip("popgym")
    from agents import LiquidPPO, NeuroFlow

    env_id = f"popgym:popgym-{task}Easy-v0"
    space = envs.make_env(env_id).action_space
    for agent in (LiquidPPO(env_id, seed=0, n_steps=16, batch_size=16, actor_neurons=8),
                  NeuroFlow(env_id, seed=0, learning_starts=16, batch_size=16, seq_len=4,
                            actor_neurons=8, critic_hidden=(16,))):
        agent.learn(48)
        obs = agent.get_env().reset()
        action, _ = agent.predict(obs, deterministic=True)
        assert all(space.contains(np.asarray(a, space.dtype)) for a in action)


def test_an_id_without_its_package_prefix_suggests_it():
    # an id named after an importable package (tests/id_envs.py), not registered under it
    with pytest.raises(ValueError, match=r"did you mean 'id_envs:id_envs-Missing-v0' "
                                         r"\(which imports id_envs\)"):
        envs.make_env("id_envs-Missing-v0")
    with pytest.raises(ValueError) as info:  # no package of that name: no suggestion
        envs.make_env("Nonexistent-v0")
    assert "did you mean" not in str(info.value)
